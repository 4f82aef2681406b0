//! What a viewer signs for the relayers that served it, and what a payer
//! signs for a payee: EIP-712 typed data, so the chain checks exactly what
//! the nodes checked.
//!
//! A [`Receipt`] is *cumulative*: a viewer signs, for one relayer, one
//! content and one epoch, the total bytes and segments it received so far.
//! A relayer keeps only the latest receipt per (viewer, content, epoch) and
//! the `RewardPool` contract counts each one's increase over what it has
//! already counted, so a receipt can be sent again or superseded without
//! anything being paid twice. A [`Cheque`] is cumulative the same way
//! (Swarm's chequebook): the `Vault` pays the difference between its amount
//! and what the payee has cashed so far.
//!
//! The domains name the contract that verifies them (`verifyingContract`)
//! and the chain, so a receipt made for one deployment or one chain is
//! worthless on any other. Signatures are 65 bytes `r ‖ s ‖ v` (v = 27/28),
//! with `s` in the lower half of the curve order, as OpenZeppelin's `ECDSA`
//! requires.

use alloy_primitives::{Address, B256, Signature, U256, keccak256};
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use k256::ecdsa::SigningKey;
use serde::{Deserialize, Serialize};

use crate::block::Cid;
use crate::channel::ChannelId;

sol! {
    /// Bytes and segments of one content a viewer received from one
    /// relayer in one epoch, in total so far.
    #[derive(Debug, PartialEq, Eq)]
    struct Receipt {
        address viewer;
        address relayer;
        bytes32 contentId;
        uint64 epoch;
        uint64 cumulativeBytes;
        uint64 cumulativeSegments;
    }

    /// What a payer owes a payee in a token, in total so far.
    #[derive(Debug, PartialEq, Eq)]
    struct Cheque {
        address payer;
        address payee;
        address token;
        uint256 cumulativeAmount;
    }
}

/// The EIP-712 domain name of receipts (the `RewardPool` contract).
pub const RECEIPT_DOMAIN: &str = "Shoal RewardPool";
/// The EIP-712 domain name of cheques (the `Vault` contract).
pub const CHEQUE_DOMAIN: &str = "Shoal Vault";
/// The version of both domains.
pub const DOMAIN_VERSION: &str = "1";

/// Receipts in one answer of the receipt protocol: one per content a
/// viewer received from the asking relayer in the epoch.
pub const MAX_RECEIPTS_PER_MESSAGE: usize = 64;

/// The largest receipt-protocol message.
pub const MAX_RECEIPT_MESSAGE_BYTES: usize = 32 << 10;

/// The deployment receipts and cheques are made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub chain_id: u64,
    pub reward_pool: Address,
    pub vault: Address,
    /// The token the vault holds (named in every cheque).
    pub token: Address,
}

impl Deployment {
    pub fn receipt_domain(&self) -> Eip712Domain {
        domain(RECEIPT_DOMAIN, self.chain_id, self.reward_pool)
    }

    pub fn cheque_domain(&self) -> Eip712Domain {
        domain(CHEQUE_DOMAIN, self.chain_id, self.vault)
    }
}

fn domain(name: &'static str, chain_id: u64, contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(name.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(contract),
        None,
    )
}

/// Why a receipt or cheque is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("the signature is malformed")]
    MalformedSignature,
    #[error("the signature has a high s value (not accepted on chain)")]
    HighS,
    #[error("signed by {signer}, not by {expected}")]
    WrongSigner { signer: Address, expected: Address },
    #[error("a wallet key must be 32 bytes of a valid secp256k1 scalar")]
    BadKey,
    #[error("receipt message: {0}")]
    Malformed(String),
    #[error("receipt message is {0} bytes, over the limit")]
    TooLarge(usize),
}

/// What receipts and reward pools name a live channel by, before its
/// creator is bound in ([`content_id`]).
pub fn channel_subject(channel: &ChannelId) -> B256 {
    tagged_id(b"shoal/channel/1\0", channel.as_bytes())
}

/// What receipts and reward pools name an on-demand stream (its root CID)
/// by, before its creator is bound in ([`content_id`]).
pub fn stream_subject(root: &Cid) -> B256 {
    tagged_id(b"shoal/stream/1\0", &root.to_bytes())
}

/// The content id receipts name and pools are funded under:
/// `keccak256(abi.encode(subject, creator))`, as `RewardPool.contentOf`
/// computes it. The creator is part of it, so funding pays only the
/// creator the content itself names (a channel's signed record, a
/// stream's root manifest).
pub fn content_id(subject: B256, creator: Address) -> B256 {
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(subject.as_slice());
    input[44..].copy_from_slice(creator.as_slice());
    keccak256(input)
}

/// Whether an epoch's `seed` picks `viewer` when one viewer in
/// 2^`draw_bits` is picked (`RewardPool.picked`): only picked viewers'
/// receipts are claimed.
pub fn picked(seed: B256, viewer: Address, draw_bits: u8) -> bool {
    if draw_bits == 0 {
        return true;
    }
    if seed.is_zero() || draw_bits > 16 {
        return false;
    }
    let mut input = [0u8; 64];
    input[..32].copy_from_slice(seed.as_slice());
    input[44..].copy_from_slice(viewer.as_slice());
    let h = keccak256(input);
    let top = u16::from_be_bytes([h[0], h[1]]);
    top >> (16 - draw_bits) == 0
}

fn tagged_id(tag: &[u8], bytes: &[u8]) -> B256 {
    let mut input = Vec::with_capacity(tag.len() + bytes.len());
    input.extend_from_slice(tag);
    input.extend_from_slice(bytes);
    keccak256(input)
}

/// The length of a reward epoch. Viewers count what they receive per
/// epoch by their own clock, so every node and the `RewardPool` must agree
/// on it; an hour leaves clocks minutes apart mattering little.
pub const EPOCH_SECS: u64 = 3600;

/// The fastest a viewer is taken to receive a stream: 20 Mb/s, above the
/// top rendition of a 4K HLS ladder (about 16 Mb/s). It bounds what one
/// viewer's receipts count in an epoch ([`MAX_VIEWER_BYTES_PER_EPOCH`]).
pub const MAX_VIEWER_BYTES_PER_SEC: u64 = 2_500_000;

/// What one viewer's receipts may count in an epoch, over every relayer
/// and content (`RewardPool.maxViewerBytesPerEpoch`): watching without a
/// break at [`MAX_VIEWER_BYTES_PER_SEC`], 9 GB an hour.
pub const MAX_VIEWER_BYTES_PER_EPOCH: u64 = MAX_VIEWER_BYTES_PER_SEC * EPOCH_SECS;

/// The epoch of a Unix time, as the contract computes it
/// (`block.timestamp / epochLength`).
pub fn epoch_of(unix_secs: u64, epoch_length_secs: u64) -> u64 {
    unix_secs / epoch_length_secs.max(1)
}

/// A node's secp256k1 key for receipts, cheques and transactions; it is
/// not the libp2p identity, so the two can be rotated apart.
#[derive(Clone)]
pub struct Wallet(SigningKey);

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wallet({})", self.address())
    }
}

impl Wallet {
    /// The wallet whose secret is `secret`.
    pub fn from_bytes(secret: &[u8; 32]) -> Result<Wallet, ReceiptError> {
        SigningKey::from_bytes(secret.into())
            .map(Wallet)
            .map_err(|_| ReceiptError::BadKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes().into()
    }

    pub fn address(&self) -> Address {
        Address::from_private_key(&self.0)
    }

    /// Signs a 32-byte digest.
    pub fn sign_hash(&self, hash: &B256) -> [u8; 65] {
        // RFC 6979 signing cannot fail on a 32-byte prehash; k256 returns
        // low-s signatures.
        let (sig, recid) = self
            .0
            .sign_prehash_recoverable(hash.as_slice())
            .expect("a 32-byte digest signs");
        Signature::from((sig, recid)).as_bytes()
    }

    pub fn sign_receipt(&self, receipt: Receipt, domain: &Eip712Domain) -> SignedReceipt {
        let signature = self.sign_hash(&receipt.eip712_signing_hash(domain));
        SignedReceipt { receipt, signature }
    }

    pub fn sign_cheque(&self, cheque: Cheque, domain: &Eip712Domain) -> SignedCheque {
        let signature = self.sign_hash(&cheque.eip712_signing_hash(domain));
        SignedCheque { cheque, signature }
    }
}

/// Who signed `hash`, if the signature is well formed and low-s.
pub fn recover(hash: &B256, signature: &[u8; 65]) -> Result<Address, ReceiptError> {
    // OpenZeppelin's ECDSA takes v = 27 or 28 only; alloy would also take
    // 0/1 and EIP-155 values, which the contract then refuses.
    if !matches!(signature[64], 27 | 28) {
        return Err(ReceiptError::MalformedSignature);
    }
    let sig = Signature::from_raw(signature).map_err(|_| ReceiptError::MalformedSignature)?;
    if sig.normalize_s().is_some() {
        return Err(ReceiptError::HighS);
    }
    sig.recover_address_from_prehash(hash)
        .map_err(|_| ReceiptError::MalformedSignature)
}

fn expect_signer(hash: &B256, signature: &[u8; 65], expected: Address) -> Result<(), ReceiptError> {
    let signer = recover(hash, signature)?;
    if signer != expected {
        return Err(ReceiptError::WrongSigner { signer, expected });
    }
    Ok(())
}

/// A receipt and the viewer's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    pub signature: [u8; 65],
}

impl SignedReceipt {
    /// Checks that the viewer named in the receipt signed it for `domain`.
    pub fn verify(&self, domain: &Eip712Domain) -> Result<(), ReceiptError> {
        expect_signer(
            &self.receipt.eip712_signing_hash(domain),
            &self.signature,
            self.receipt.viewer,
        )
    }

    /// Whether this receipt says more than `held` (the latest kept for the
    /// same viewer, relayer, content and epoch): only a newer one is
    /// worth keeping, and only its increase counts on chain.
    pub fn supersedes(&self, held: Option<&Receipt>) -> bool {
        held.is_none_or(|h| self.receipt.cumulativeBytes > h.cumulativeBytes)
    }
}

/// A cheque and the payer's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheque {
    pub cheque: Cheque,
    pub signature: [u8; 65],
}

impl SignedCheque {
    pub fn verify(&self, domain: &Eip712Domain) -> Result<(), ReceiptError> {
        expect_signer(
            &self.cheque.eip712_signing_hash(domain),
            &self.signature,
            self.cheque.payer,
        )
    }
}

/// A relayer asks a viewer it served to sign receipts for `epoch`, for
/// the deployment it claims on (`chain_id`, `reward_pool`) and naming its
/// wallet (`relayer`); it says how many bytes it served the viewer in
/// all, so the viewer can see how far apart their counts are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    pub epoch: u64,
    pub served_bytes: u64,
    #[serde(with = "fixed_bytes")]
    pub relayer: [u8; 20],
    pub chain_id: u64,
    #[serde(with = "fixed_bytes")]
    pub reward_pool: [u8; 20],
}

/// A viewer's answer: its latest receipts for the asking relayer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReceiptResponse {
    pub receipts: Vec<SignedReceipt>,
}

/// A receipt as it travels: fixed-size byte strings, no ABI encoding.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReceipt {
    #[serde(with = "fixed_bytes")]
    viewer: [u8; 20],
    #[serde(with = "fixed_bytes")]
    relayer: [u8; 20],
    #[serde(with = "fixed_bytes")]
    content: [u8; 32],
    epoch: u64,
    bytes: u64,
    segments: u64,
    #[serde(with = "fixed_bytes")]
    signature: [u8; 65],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireResponse {
    receipts: Vec<WireReceipt>,
}

impl ReceiptRequest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(self).expect("integers encode")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        strict_decode(bytes)
    }
}

impl From<&SignedReceipt> for WireReceipt {
    fn from(s: &SignedReceipt) -> Self {
        WireReceipt {
            viewer: s.receipt.viewer.into(),
            relayer: s.receipt.relayer.into(),
            content: s.receipt.contentId.into(),
            epoch: s.receipt.epoch,
            bytes: s.receipt.cumulativeBytes,
            segments: s.receipt.cumulativeSegments,
            signature: s.signature,
        }
    }
}

impl From<WireReceipt> for SignedReceipt {
    fn from(w: WireReceipt) -> Self {
        SignedReceipt {
            receipt: Receipt {
                viewer: w.viewer.into(),
                relayer: w.relayer.into(),
                contentId: w.content.into(),
                epoch: w.epoch,
                cumulativeBytes: w.bytes,
                cumulativeSegments: w.segments,
            },
            signature: w.signature,
        }
    }
}

impl SignedReceipt {
    /// The receipt as it is stored and sent (dag-cbor).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_ipld_dagcbor::to_vec(&WireReceipt::from(self))
            .expect("byte strings and integers encode")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        strict_decode::<WireReceipt>(bytes).map(SignedReceipt::from)
    }

    /// Where a relayer keeps it: one receipt per viewer, content and
    /// epoch.
    pub fn key(&self) -> Vec<u8> {
        let r = &self.receipt;
        let mut key = Vec::with_capacity(60);
        key.extend_from_slice(r.viewer.as_slice());
        key.extend_from_slice(r.contentId.as_slice());
        key.extend_from_slice(&r.epoch.to_be_bytes());
        key
    }
}

/// A cheque as it travels and is kept: fixed-size byte strings, the
/// amount as 32 big-endian bytes (the contract's `uint256`).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCheque {
    #[serde(with = "fixed_bytes")]
    payer: [u8; 20],
    #[serde(with = "fixed_bytes")]
    payee: [u8; 20],
    #[serde(with = "fixed_bytes")]
    token: [u8; 20],
    #[serde(with = "fixed_bytes")]
    amount: [u8; 32],
    #[serde(with = "fixed_bytes")]
    signature: [u8; 65],
}

impl SignedCheque {
    /// The cheque as it is sent and stored (dag-cbor).
    pub fn to_bytes(&self) -> Vec<u8> {
        let c = &self.cheque;
        let wire = WireCheque {
            payer: c.payer.into(),
            payee: c.payee.into(),
            token: c.token.into(),
            amount: c.cumulativeAmount.to_be_bytes(),
            signature: self.signature,
        };
        serde_ipld_dagcbor::to_vec(&wire).expect("byte strings encode")
    }

    /// Decodes a cheque (its signature is not checked here: see
    /// [`SignedCheque::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let w: WireCheque = strict_decode(bytes)?;
        Ok(SignedCheque {
            cheque: Cheque {
                payer: w.payer.into(),
                payee: w.payee.into(),
                token: w.token.into(),
                cumulativeAmount: U256::from_be_bytes(w.amount),
            },
            signature: w.signature,
        })
    }
}

impl ReceiptResponse {
    pub fn to_bytes(&self) -> Vec<u8> {
        let wire = WireResponse {
            receipts: self.receipts.iter().map(WireReceipt::from).collect(),
        };
        serde_ipld_dagcbor::to_vec(&wire).expect("byte strings and integers encode")
    }

    /// Decodes an answer (signatures are not checked here: see
    /// [`SignedReceipt::verify`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let wire: WireResponse = strict_decode(bytes)?;
        if wire.receipts.len() > MAX_RECEIPTS_PER_MESSAGE {
            return Err(ReceiptError::Malformed(format!(
                "{} receipts, at most {MAX_RECEIPTS_PER_MESSAGE}",
                wire.receipts.len()
            )));
        }
        Ok(ReceiptResponse {
            receipts: wire.receipts.into_iter().map(SignedReceipt::from).collect(),
        })
    }
}

/// Decodes within the size limit, and only canonical encodings.
fn strict_decode<T: Serialize + for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<T, ReceiptError> {
    if bytes.len() > MAX_RECEIPT_MESSAGE_BYTES {
        return Err(ReceiptError::TooLarge(bytes.len()));
    }
    let value: T = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if serde_ipld_dagcbor::to_vec(&value).ok().as_deref() != Some(bytes) {
        return Err(ReceiptError::Malformed("not canonical dag-cbor".into()));
    }
    Ok(value)
}

/// Fixed-size byte strings as CBOR bytes of exactly that length.
mod fixed_bytes {
    use serde::de::Error;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let v = crate::bounded::bytes::<D, N>(d)?;
        <[u8; N]>::try_from(v.as_slice())
            .map_err(|_| D::Error::custom(format!("expected {N} bytes, got {}", v.len())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wallet(n: u8) -> Wallet {
        Wallet::from_bytes(&[n; 32]).unwrap()
    }

    fn deployment() -> Deployment {
        Deployment {
            chain_id: 31337,
            reward_pool: Address::repeat_byte(0xAA),
            vault: Address::repeat_byte(0xBB),
            token: Address::repeat_byte(0xCC),
        }
    }

    fn receipt(viewer: &Wallet, bytes: u64) -> Receipt {
        Receipt {
            viewer: viewer.address(),
            relayer: wallet(2).address(),
            contentId: B256::repeat_byte(7),
            epoch: 3,
            cumulativeBytes: bytes,
            cumulativeSegments: bytes / 1000,
        }
    }

    #[test]
    fn a_signed_receipt_verifies_only_in_its_own_domain() {
        let viewer = wallet(1);
        let d = deployment();
        let signed = viewer.sign_receipt(receipt(&viewer, 5000), &d.receipt_domain());
        assert_eq!(signed.verify(&d.receipt_domain()), Ok(()));
        let other_chain = Deployment {
            chain_id: 1,
            ..deployment()
        };
        let other_pool = Deployment {
            reward_pool: Address::repeat_byte(0xAB),
            ..deployment()
        };
        for d in [other_chain, other_pool] {
            assert!(matches!(
                signed.verify(&d.receipt_domain()),
                Err(ReceiptError::WrongSigner { .. })
            ));
        }
        // Nor is it a cheque.
        assert!(signed.verify(&d.cheque_domain()).is_err());
    }

    #[test]
    fn a_receipt_signed_by_someone_else_or_altered_is_refused() {
        let viewer = wallet(1);
        let d = deployment().receipt_domain();
        let forged = wallet(9).sign_receipt(receipt(&viewer, 5000), &d);
        assert_eq!(
            forged.verify(&d),
            Err(ReceiptError::WrongSigner {
                signer: wallet(9).address(),
                expected: viewer.address()
            })
        );
        let mut altered = viewer.sign_receipt(receipt(&viewer, 5000), &d);
        altered.receipt.cumulativeBytes = 50_000;
        assert!(altered.verify(&d).is_err());
        let mut garbage = viewer.sign_receipt(receipt(&viewer, 5000), &d);
        garbage.signature = [0; 65];
        assert!(garbage.verify(&d).is_err());
    }

    #[test]
    fn a_high_s_twin_of_a_valid_signature_is_refused() {
        let viewer = wallet(1);
        let d = deployment().receipt_domain();
        let signed = viewer.sign_receipt(receipt(&viewer, 5000), &d);
        // s' = n - s with the other parity recovers the same key, but the
        // contract refuses it; so must we.
        let sig = Signature::from_raw(&signed.signature).unwrap();
        let n = U256::from_str_radix(
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141",
            16,
        )
        .unwrap();
        let twin = Signature::new(sig.r(), n - sig.s(), !sig.v());
        let mut high = signed.clone();
        high.signature = twin.as_bytes();
        assert_eq!(high.verify(&d), Err(ReceiptError::HighS));
        // The same signature with v = 0/1 instead of 27/28.
        let mut low_v = signed.clone();
        low_v.signature[64] -= 27;
        assert_eq!(low_v.verify(&d), Err(ReceiptError::MalformedSignature));
    }

    #[test]
    fn only_a_larger_cumulative_receipt_supersedes() {
        let viewer = wallet(1);
        let d = deployment().receipt_domain();
        let first = viewer.sign_receipt(receipt(&viewer, 5000), &d);
        let same = viewer.sign_receipt(receipt(&viewer, 5000), &d);
        let later = viewer.sign_receipt(receipt(&viewer, 9000), &d);
        assert!(first.supersedes(None));
        assert!(!same.supersedes(Some(&first.receipt)));
        assert!(later.supersedes(Some(&first.receipt)));
        assert!(!first.supersedes(Some(&later.receipt)));
    }

    #[test]
    fn cheques_verify_against_the_vault_domain() {
        let payer = wallet(4);
        let d = deployment();
        let cheque = Cheque {
            payer: payer.address(),
            payee: wallet(5).address(),
            token: d.token,
            cumulativeAmount: U256::from(10u64).pow(U256::from(18)),
        };
        let signed = payer.sign_cheque(cheque, &d.cheque_domain());
        assert_eq!(signed.verify(&d.cheque_domain()), Ok(()));
        assert!(signed.verify(&d.receipt_domain()).is_err());
    }

    #[test]
    fn cheques_round_trip_and_altered_ones_are_refused() {
        let payer = wallet(4);
        let d = deployment();
        let cheque = Cheque {
            payer: payer.address(),
            payee: wallet(5).address(),
            token: d.token,
            cumulativeAmount: U256::MAX - U256::from(1u8),
        };
        let signed = payer.sign_cheque(cheque, &d.cheque_domain());
        let bytes = signed.to_bytes();
        let back = SignedCheque::from_bytes(&bytes).unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.verify(&d.cheque_domain()), Ok(()));
        // One amount byte changed: decodes, but the payer did not sign it.
        let at = bytes
            .windows(32)
            .position(|w| w == signed.cheque.cumulativeAmount.to_be_bytes::<32>())
            .unwrap();
        let mut altered = bytes.clone();
        altered[at + 31] ^= 1;
        let altered = SignedCheque::from_bytes(&altered).unwrap();
        assert!(matches!(
            altered.verify(&d.cheque_domain()),
            Err(ReceiptError::WrongSigner { .. })
        ));
        // Cut short, padded, too large: refused before any signature work.
        assert!(SignedCheque::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(SignedCheque::from_bytes(&padded).is_err());
        assert!(matches!(
            SignedCheque::from_bytes(&vec![0; MAX_RECEIPT_MESSAGE_BYTES + 1]),
            Err(ReceiptError::TooLarge(_))
        ));
    }

    #[test]
    fn receipt_messages_round_trip_and_bad_ones_are_refused() {
        let viewer = wallet(1);
        let d = deployment().receipt_domain();
        let response = ReceiptResponse {
            receipts: vec![
                viewer.sign_receipt(receipt(&viewer, 5000), &d),
                viewer.sign_receipt(receipt(&viewer, 7000), &d),
            ],
        };
        let bytes = response.to_bytes();
        let back = ReceiptResponse::from_bytes(&bytes).unwrap();
        assert_eq!(back, response);
        assert_eq!(back.receipts[1].verify(&d), Ok(()));
        let one = &response.receipts[0];
        assert_eq!(SignedReceipt::from_bytes(&one.to_bytes()).as_ref(), Ok(one));
        let request = ReceiptRequest {
            epoch: 3,
            served_bytes: 12_000,
            relayer: [2; 20],
            chain_id: 31337,
            reward_pool: [0xAA; 20],
        };
        assert_eq!(
            ReceiptRequest::from_bytes(&request.to_bytes()).unwrap(),
            request
        );
        // Cut short, padded, too many, too large: all refused.
        assert!(ReceiptResponse::from_bytes(&bytes[..bytes.len() - 3]).is_err());
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(ReceiptResponse::from_bytes(&padded).is_err());
        let many = ReceiptResponse {
            receipts: vec![response.receipts[0].clone(); MAX_RECEIPTS_PER_MESSAGE + 1],
        };
        assert!(matches!(
            ReceiptResponse::from_bytes(&many.to_bytes()),
            Err(ReceiptError::Malformed(_))
        ));
        assert!(matches!(
            ReceiptRequest::from_bytes(&vec![0; MAX_RECEIPT_MESSAGE_BYTES + 1]),
            Err(ReceiptError::TooLarge(_))
        ));
    }

    #[test]
    fn content_ids_differ_by_kind_and_by_creator() {
        let key = crate::channel::ChannelKey::from_seed(&[3; 32]);
        let channel = channel_subject(&key.id());
        assert_eq!(channel, channel_subject(&key.id()));
        let root = crate::block::cid_of(crate::block::Codec::DagCbor, key.id().as_bytes());
        assert_ne!(channel, stream_subject(&root));
        let (a, b) = (Address::repeat_byte(1), Address::repeat_byte(2));
        assert_ne!(content_id(channel, a), content_id(channel, b));
        assert_ne!(content_id(channel, a), content_id(stream_subject(&root), a));
        assert_eq!(epoch_of(7_199, 3_600), 1);
        assert_eq!(epoch_of(7_200, 3_600), 2);
    }

    #[test]
    fn a_draw_picks_about_one_viewer_in_two_to_the_bits() {
        let seed = B256::repeat_byte(7);
        let viewers: Vec<Address> = (0..4096u32).map(wallet_address).collect();
        assert!(viewers.iter().all(|v| picked(seed, *v, 0)));
        assert!(!viewers.iter().any(|v| picked(B256::ZERO, *v, 5)));
        let n = viewers.iter().filter(|v| picked(seed, **v, 5)).count();
        // 4096 / 32 = 128 expected; 5 standard deviations either side.
        assert!((73..=183).contains(&n), "{n}");
        // A viewer picked at 6 bits is picked at 5: the bits are nested.
        assert!(
            viewers
                .iter()
                .filter(|v| picked(seed, **v, 6))
                .all(|v| picked(seed, *v, 5))
        );
    }

    fn wallet_address(n: u32) -> Address {
        let mut b = [0u8; 20];
        b[16..].copy_from_slice(&n.to_be_bytes());
        Address::from(keccak256(b).0[12..].try_into().unwrap_or([0; 20]))
    }
}
