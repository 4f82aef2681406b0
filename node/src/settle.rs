//! Settlement on chain, with alloy: the node's wallet deposits in the
//! `Vault`, funds and claims on the `RewardPool`, cashes cheques, and reads
//! balances. The contracts' ABIs and bytecode are the artifacts committed
//! in `contracts/artifacts/` (built by `contracts/build.mjs`).
//!
//! Every call that changes state waits for its transaction's receipt and
//! reports a reverted transaction with the contract's own error decoded
//! (`BadReceipt(2, 2)` reads "receipt 2: the signature is not the
//! viewer's for this chain and contract").

use std::collections::HashMap;

use alloy::network::EthereumWallet;
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use shoal_protocol::receipt::{
    Deployment, EPOCH_SECS, SignedCheque, SignedReceipt, Wallet, picked,
};

sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    ShoalToken,
    "../contracts/artifacts/ShoalToken.json"
);
sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    Vault,
    "../contracts/artifacts/Vault.json"
);
sol!(
    // The generated deploy function takes the constructor's ten
    // arguments.
    #[allow(clippy::too_many_arguments)]
    #[sol(rpc)]
    #[derive(Debug)]
    RewardPool,
    "../contracts/artifacts/RewardPool.json"
);

/// Receipts per `claim` transaction: a batch of 50 costs about 69k gas
/// per receipt (first claims) against 137k for one alone, and stays far
/// below a block's gas limit.
pub const CLAIM_BATCH: usize = 50;

/// How long a sent transaction may take to be mined before the call
/// gives up waiting (it may still be mined later).
pub const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What went wrong on chain.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("invalid RPC URL {0:?}")]
    Url(String),
    #[error("the chain at {rpc} has id {actual}, but the config says {expected}")]
    WrongChain {
        rpc: String,
        expected: u64,
        actual: u64,
    },
    #[error("the reward pool's epochs last {0} s; shoal nodes count in epochs of {EPOCH_SECS} s")]
    EpochLength(u64),
    #[error("the contract refused: {0}")]
    Reverted(String),
    #[error("the transaction was mined but failed (hash {0})")]
    Failed(B256),
    #[error("chain: {0}")]
    Rpc(String),
}

/// How to deploy the contracts (development chains and tests).
#[derive(Clone, Debug)]
pub struct DeployParams {
    /// Token supply, all minted to the deploying wallet.
    pub supply: U256,
    /// An ERC-20 already on the chain to build the vault and pool on,
    /// instead of a new `ShoalToken` (`supply` is then unused).
    pub token: Option<Address>,
    pub unlock_period_secs: u64,
    pub treasury: Address,
    /// Creator / viewers / treasury in basis points (sum 10000).
    pub split_bps: (u16, u16, u16),
    pub epoch_length_secs: u64,
    pub claim_epochs: u64,
    pub min_deposit: U256,
    /// What one viewer's receipts count in an epoch at most
    /// (`shoal_protocol::receipt::MAX_VIEWER_BYTES_PER_EPOCH` for hour-long
    /// epochs).
    pub max_viewer_bytes_per_epoch: u64,
    /// One viewer in 2^`draw_bits` is picked for claims in each epoch
    /// (0: all; `docs/BENCHMARKS.md` has the gas behind the choice).
    pub draw_bits: u8,
}

/// A reward pool's fixed terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolTerms {
    pub epoch_length: u64,
    pub claim_epochs: u64,
    pub min_deposit: U256,
    /// One viewer in 2^`draw_bits` is picked for claims in each epoch.
    pub draw_bits: u8,
}

impl PoolTerms {
    /// The Unix seconds a viewer's lock must cover for its receipts of
    /// `epoch` to count: from the epoch's start to the end of its claim
    /// window (`RewardPool.claim`).
    pub fn lock_span(&self, epoch: u64) -> (u64, u64) {
        let l = self.epoch_length;
        (
            epoch.saturating_mul(l),
            epoch
                .saturating_add(1 + self.claim_epochs)
                .saturating_mul(l),
        )
    }
}

/// What a `claim` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClaimOutcome {
    /// Receipts counted, and their bytes.
    pub counted: usize,
    pub bytes: u64,
    /// Receipts skipped: their viewers hold no deposit.
    pub not_counted: usize,
    /// Bytes receipts claimed beyond their viewers' cap for the epoch:
    /// counted as spent, never paid.
    pub capped_bytes: u64,
    /// Receipts not sent: nobody funded their content for their epoch
    /// (which can no longer change once the epoch is over).
    pub unfunded: usize,
    /// Receipts not sent: their viewer's deposit was not locked through
    /// their epoch and its claim window.
    pub no_deposit: usize,
    /// Receipts forgotten: their claim window has closed.
    pub expired: usize,
    /// Receipts not sent: their epoch's draw did not pick their viewer.
    pub not_picked: usize,
    /// Pools of closed epochs that counted no bytes, rolled on into their
    /// content's current epoch (or, after `MAX_ROLLS`, to the treasury).
    pub rolled: usize,
    /// `claim` transactions sent.
    pub transactions: usize,
    /// Gas of the claims, and of drawing an epoch's seed if this node
    /// drew it.
    pub gas_used: u64,
    /// The receipts the pool counted: (viewer, content, epoch).
    #[serde(skip)]
    pub counted_receipts: Vec<(Address, B256, u64)>,
}

/// What cashing a cheque did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChequeOutcome {
    pub paid: U256,
    /// What the payer's deposit could not cover (still owed).
    pub bounced: U256,
    pub gas_used: u64,
}

/// The node's side of the contracts, signing with its wallet.
#[derive(Clone)]
pub struct Settlement {
    provider: DynProvider,
    address: Address,
    deployment: Deployment,
}

/// A provider for `rpc` that signs with `wallet` (for contracts of one's
/// own, say a token to deploy a pool on).
pub fn provider(rpc: &str, wallet: &Wallet) -> Result<DynProvider, SettleError> {
    let url: reqwest::Url = rpc.parse().map_err(|_| SettleError::Url(rpc.into()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SettleError::Url(rpc.into()));
    }
    let signer = PrivateKeySigner::from_bytes(&B256::from(wallet.to_bytes()))
        .map_err(|e| SettleError::Rpc(e.to_string()))?;
    // The nonce is asked of the chain for every transaction: a cached
    // nonce moves on when a call is refused before it is sent (its gas
    // estimate reverts), and the next transaction would then wait behind
    // a gap for ever.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

fn rpc_err(e: impl std::fmt::Display) -> SettleError {
    SettleError::Rpc(e.to_string())
}

/// Turns a contract call's error into the contract's own words.
fn revert(e: alloy::contract::Error) -> SettleError {
    if let Some(err) = e.as_decoded_interface_error::<RewardPool::RewardPoolErrors>() {
        return SettleError::Reverted(describe_pool_error(&err));
    }
    if let Some(err) = e.as_decoded_interface_error::<Vault::VaultErrors>() {
        return SettleError::Reverted(describe_vault_error(&err));
    }
    if let Some(err) = e.as_decoded_interface_error::<ShoalToken::ShoalTokenErrors>() {
        return SettleError::Reverted(match err {
            ShoalToken::ShoalTokenErrors::ERC20InsufficientBalance(b) => format!(
                "the wallet holds {} wei of the token, {} needed",
                b.balance, b.needed
            ),
            other => format!("token: {other:?}"),
        });
    }
    SettleError::Rpc(e.to_string())
}

fn describe_pool_error(e: &RewardPool::RewardPoolErrors) -> String {
    use RewardPool::RewardPoolErrors as E;
    match e {
        E::BadReceipt(b) => {
            let why = match b.reason {
                1 => "it names another relayer",
                2 => "the signature is not the viewer's for this chain and contract",
                3 => "it is not newer than the receipt already counted (replayed)",
                4 => "its viewer is its relayer",
                5 => "its epoch's draw did not pick its viewer",
                _ => "unknown reason",
            };
            format!("receipt {}: {why}", b.index)
        }
        E::ClaimWindowClosed(c) => format!(
            "receipt {}: its epoch is not over yet, or its claim window has closed",
            c.index
        ),
        E::ClaimsStillOpen(_) => "claims for that epoch are still open".into(),
        E::NothingToPay(_) => "nothing to pay for that content and epoch".into(),
        E::NothingToSweep(_) => "nothing to sweep".into(),
        E::NotDrawn(d) => format!(
            "the seed of epoch {} is not drawn yet (RewardPool.draw)",
            d.epoch
        ),
        E::EpochNotOver(_) => "that epoch is not over yet".into(),
        E::EpochOver(_) => "that epoch is over; fund the current one or a later one".into(),
        E::BadSplit(_) => "the split must add up to 10000 basis points".into(),
        E::BadEpochs(_) => {
            "epoch length, claim epochs and the viewer's byte cap must be positive, and draw bits at most 16".into()
        }
        E::ZeroAddress(_) => "an address is zero".into(),
        other => format!("{other:?}"),
    }
}

fn describe_vault_error(e: &Vault::VaultErrors) -> String {
    use Vault::VaultErrors as E;
    match e {
        E::WithdrawalLocked(w) if w.unlockAt == 0 => {
            "no withdrawal was requested (run `shoal rewards withdraw` to request one)".into()
        }
        E::WithdrawalLocked(w) => format!(
            "the deposit is locked until {} (Unix time); a payee may still cash cheques until then",
            w.unlockAt
        ),
        E::InsufficientDeposit(d) => format!(
            "only {} wei of the deposit are free (the rest is locked, or not there)",
            d.available
        ),
        E::LockShrinks(l) => format!(
            "a lock may only grow and last longer: {} wei until Unix time {} at least",
            l.amount, l.until
        ),
        E::BadSignature(_) => {
            "the cheque is not signed by its payer for this chain and vault".into()
        }
        E::NothingDue(_) => "the cheque was cashed already".into(),
        other => format!("{other:?}"),
    }
}

/// A receipt as the pool's ABI types it.
fn to_pool(s: &SignedReceipt) -> RewardPool::SignedReceipt {
    let r = &s.receipt;
    RewardPool::SignedReceipt {
        receipt: RewardPool::Receipt {
            viewer: r.viewer,
            relayer: r.relayer,
            contentId: r.contentId,
            epoch: r.epoch,
            cumulativeBytes: r.cumulativeBytes,
            cumulativeSegments: r.cumulativeSegments,
        },
        signature: Bytes::copy_from_slice(&s.signature),
    }
}

/// Sends a prepared call and waits for it to be mined; returns the gas
/// used.
async fn send<P, D>(
    call: alloy::contract::CallBuilder<P, D>,
) -> Result<alloy::rpc::types::TransactionReceipt, SettleError>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    let pending = call.send().await.map_err(revert)?;
    let receipt = pending
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(rpc_err)?;
    if !receipt.status() {
        return Err(SettleError::Failed(receipt.transaction_hash));
    }
    Ok(receipt)
}

impl Settlement {
    /// Connects to the chain at `rpc` and checks it is the configured one.
    pub async fn connect(
        rpc: &str,
        wallet: &Wallet,
        deployment: Deployment,
    ) -> Result<Settlement, SettleError> {
        let provider = provider(rpc, wallet)?;
        let actual = provider.get_chain_id().await.map_err(rpc_err)?;
        if actual != deployment.chain_id {
            return Err(SettleError::WrongChain {
                rpc: rpc.into(),
                expected: deployment.chain_id,
                actual,
            });
        }
        let settlement = Settlement {
            provider,
            address: wallet.address(),
            deployment,
        };
        // Viewers count per epoch by their own clocks, with the
        // protocol's epoch length.
        let length = settlement
            .pool()
            .epochLength()
            .call()
            .await
            .map_err(revert)?;
        if length != EPOCH_SECS {
            return Err(SettleError::EpochLength(length));
        }
        Ok(settlement)
    }

    /// Deploys the token, the vault and the reward pool from `wallet`.
    pub async fn deploy(
        rpc: &str,
        wallet: &Wallet,
        p: &DeployParams,
    ) -> Result<Deployment, SettleError> {
        let provider = provider(rpc, wallet)?;
        let chain_id = provider.get_chain_id().await.map_err(rpc_err)?;
        let token = match p.token {
            Some(token) => token,
            None => *ShoalToken::deploy(&provider, wallet.address(), p.supply)
                .await
                .map_err(revert)?
                .address(),
        };
        let vault = Vault::deploy(&provider, token, p.unlock_period_secs)
            .await
            .map_err(revert)?;
        let pool = RewardPool::deploy(
            &provider,
            token,
            *vault.address(),
            p.treasury,
            p.split_bps.0,
            p.split_bps.1,
            p.split_bps.2,
            p.epoch_length_secs,
            p.claim_epochs,
            p.min_deposit,
            p.max_viewer_bytes_per_epoch,
            p.draw_bits,
        )
        .await
        .map_err(revert)?;
        Ok(Deployment {
            chain_id,
            reward_pool: *pool.address(),
            vault: *vault.address(),
            token,
        })
    }

    pub fn address(&self) -> Address {
        self.address
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    fn token(&self) -> ShoalToken::ShoalTokenInstance<&DynProvider> {
        ShoalToken::new(self.deployment.token, &self.provider)
    }

    fn vault(&self) -> Vault::VaultInstance<&DynProvider> {
        Vault::new(self.deployment.vault, &self.provider)
    }

    fn pool(&self) -> RewardPool::RewardPoolInstance<&DynProvider> {
        RewardPool::new(self.deployment.reward_pool, &self.provider)
    }

    /// Token balance of `who`.
    pub async fn token_balance(&self, who: Address) -> Result<U256, SettleError> {
        self.token().balanceOf(who).call().await.map_err(revert)
    }

    /// What `who` holds in the vault, and when it may withdraw (0: no
    /// withdrawal requested).
    pub async fn deposit_of(&self, who: Address) -> Result<(U256, u64), SettleError> {
        let v = self.vault();
        let balance = v.balanceOf(who).call().await.map_err(revert)?;
        let unlock = v.unlockAt(who).call().await.map_err(revert)?;
        Ok((balance, unlock))
    }

    pub async fn transfer(&self, to: Address, amount: U256) -> Result<(), SettleError> {
        send(self.token().transfer(to, amount)).await.map(drop)
    }

    /// Approves the vault and deposits `amount`.
    pub async fn deposit(&self, amount: U256) -> Result<(), SettleError> {
        send(self.token().approve(self.deployment.vault, amount)).await?;
        send(self.vault().deposit(amount)).await.map(drop)
    }

    /// Locks `amount` of this node's vault deposit until `until` (Unix
    /// seconds): a viewer's receipts count for the epochs its lock covers
    /// from their start to the end of their claim window.
    pub async fn lock(&self, amount: U256, until: u64) -> Result<(), SettleError> {
        send(self.vault().lock(amount, until)).await.map(drop)
    }

    /// `who`'s lock: the amount, since when and until when (Unix seconds;
    /// expired once `until` has passed).
    pub async fn lock_of(&self, who: Address) -> Result<(U256, u64, u64), SettleError> {
        let l = self.vault().locks(who).call().await.map_err(revert)?;
        Ok((U256::from(l.amount), l.since, l.until))
    }

    /// Locks what the pool asks of a viewer (`minDeposit`, or the lock
    /// already running if it is larger) until the claim window of the
    /// epoch `epochs` from the current one has closed; the rest of the
    /// deposit stays free to pay cheques. A running lock that is large
    /// enough is only extended, so the epochs it already covers keep
    /// counting. Returns the first epoch its receipts count in and the
    /// lock's end.
    pub async fn lock_for_epochs(&self, epochs: u64) -> Result<(u64, u64), SettleError> {
        let terms = self.terms().await?;
        let now = self.current_epoch().await?;
        let running = self
            .vault()
            .lockedOf(self.address)
            .call()
            .await
            .map_err(revert)?;
        let (_, _, until) = self.lock_of(self.address).await?;
        let amount = running.max(terms.min_deposit);
        let until = until.max(terms.lock_span(now + epochs).1);
        self.lock(amount, until).await?;
        let (_, since, _) = self.lock_of(self.address).await?;
        // The first epoch that starts at or after the lock's start.
        Ok((since.div_ceil(terms.epoch_length.max(1)), until))
    }

    /// Starts the unlock period; returns when withdrawing becomes possible.
    pub async fn request_withdrawal(&self) -> Result<u64, SettleError> {
        send(self.vault().requestWithdrawal()).await?;
        Ok(self.deposit_of(self.address).await?.1)
    }

    pub async fn withdraw(&self, amount: U256) -> Result<(), SettleError> {
        send(self.vault().withdraw(amount)).await.map(drop)
    }

    /// Funds the content `subject` made by `creator` (content id
    /// [`shoal_protocol::receipt::content_id`]) for `epoch`, paying
    /// `creator` its share at once.
    pub async fn fund(
        &self,
        subject: B256,
        creator: Address,
        epoch: u64,
        amount: U256,
    ) -> Result<(), SettleError> {
        send(self.token().approve(self.deployment.reward_pool, amount)).await?;
        send(self.pool().fund(subject, creator, epoch, amount))
            .await
            .map(drop)
    }

    /// The seed that picks `epoch`'s viewers, drawing it if nobody has
    /// (`RewardPool.draw`: two transactions in two blocks, each waited
    /// for). Only for an epoch that is over.
    pub async fn draw(&self, epoch: u64) -> Result<B256, SettleError> {
        self.draw_metered(epoch).await.map(|(seed, _)| seed)
    }

    /// [`Settlement::draw`], with the gas this node spent on it (0 if the
    /// seed was drawn already).
    pub async fn draw_metered(&self, epoch: u64) -> Result<(B256, u64), SettleError> {
        let mut gas = 0;
        for _ in 0..3 {
            let seed = self.seed(epoch).await?;
            if !seed.is_zero() {
                return Ok((seed, gas));
            }
            gas += send(self.pool().draw(epoch)).await?.gas_used;
        }
        let seed = self.seed(epoch).await?;
        if seed.is_zero() {
            return Err(SettleError::Rpc(format!(
                "the draw of epoch {epoch} did not complete in three transactions"
            )));
        }
        Ok((seed, gas))
    }

    /// The seed of `epoch` (zero: not drawn yet).
    pub async fn seed(&self, epoch: u64) -> Result<B256, SettleError> {
        self.pool().seed(epoch).call().await.map_err(revert)
    }

    /// Rolls on the pool of a closed epoch that counted no bytes of
    /// `content` (`RewardPool.sweep`).
    pub async fn sweep(&self, content: B256, epoch: u64) -> Result<(), SettleError> {
        send(self.pool().sweep(content, epoch)).await.map(drop)
    }

    /// The bytes the pool counted for `content` in `epoch`, over all
    /// relayers.
    pub async fn total_bytes(&self, content: B256, epoch: u64) -> Result<U256, SettleError> {
        self.pool()
            .totalBytes(content, epoch)
            .call()
            .await
            .map_err(revert)
    }

    /// The pool's current epoch (from the chain's clock).
    pub async fn current_epoch(&self) -> Result<u64, SettleError> {
        self.pool().currentEpoch().call().await.map_err(revert)
    }

    /// Claims with `receipts` (this node must be their relayer), in
    /// batches of [`CLAIM_BATCH`].
    pub async fn claim(&self, receipts: &[SignedReceipt]) -> Result<ClaimOutcome, SettleError> {
        let mut out = ClaimOutcome::default();
        for batch in receipts.chunks(CLAIM_BATCH) {
            let signed: Vec<RewardPool::SignedReceipt> = batch.iter().map(to_pool).collect();
            let receipt = send(self.pool().claim(signed)).await?;
            out.transactions += 1;
            out.gas_used += receipt.gas_used;
            for log in receipt.inner.logs() {
                if let Ok(c) = log.log_decode::<RewardPool::ReceiptCounted>() {
                    let e = &c.inner.data;
                    out.counted += 1;
                    // Chain events: a sum of them may exceed 64 bits
                    // (each capped receipt may claim up to 2^64 - 1).
                    out.bytes = out.bytes.saturating_add(e.delta);
                    out.counted_receipts.push((e.viewer, e.contentId, e.epoch));
                } else if log.log_decode::<RewardPool::ReceiptNotCounted>().is_ok() {
                    out.not_counted += 1;
                } else if let Ok(c) = log.log_decode::<RewardPool::ReceiptCapped>() {
                    out.capped_bytes = out.capped_bytes.saturating_add(c.inner.data.uncounted);
                }
            }
        }
        Ok(out)
    }

    /// What the viewer pool of `content` holds for `epoch`.
    pub async fn viewer_pool(&self, content: B256, epoch: u64) -> Result<U256, SettleError> {
        self.pool()
            .viewerPool(content, epoch)
            .call()
            .await
            .map_err(revert)
    }

    /// The pool's fixed terms (immutable in the contract: read once per
    /// task, not per receipt).
    pub async fn terms(&self) -> Result<PoolTerms, SettleError> {
        let pool = self.pool();
        Ok(PoolTerms {
            epoch_length: pool.epochLength().call().await.map_err(revert)?,
            claim_epochs: pool.claimEpochs().call().await.map_err(revert)?,
            min_deposit: pool.minDeposit().call().await.map_err(revert)?,
            draw_bits: pool.drawBits().call().await.map_err(revert)?,
        })
    }

    /// Whether `viewer`'s receipts for `epoch` can count: its deposit
    /// locked from the epoch's start to the end of its claim window.
    pub async fn viewer_counts(
        &self,
        viewer: Address,
        epoch: u64,
        terms: &PoolTerms,
    ) -> Result<bool, SettleError> {
        let (start, end) = terms.lock_span(epoch);
        self.vault()
            .lockedThrough(viewer, terms.min_deposit, start, end)
            .call()
            .await
            .map_err(revert)
    }

    /// The cumulative bytes the pool has counted for a viewer, this node
    /// as relayer, a content and an epoch.
    pub async fn counted(
        &self,
        viewer: Address,
        content: B256,
        epoch: u64,
    ) -> Result<u64, SettleError> {
        self.pool()
            .counted(viewer, self.address, content, epoch)
            .call()
            .await
            .map_err(revert)
    }

    /// What this node may take from the viewer pool of `content` in
    /// `epoch` (provisional while claims are open).
    pub async fn claimable(&self, content: B256, epoch: u64) -> Result<U256, SettleError> {
        self.pool()
            .claimable(content, epoch, self.address)
            .call()
            .await
            .map_err(revert)
    }

    /// Takes this node's share of a closed epoch's viewer pool.
    pub async fn payout(&self, content: B256, epoch: u64) -> Result<U256, SettleError> {
        let amount = self.claimable(content, epoch).await?;
        send(self.pool().payout(content, epoch)).await?;
        Ok(amount)
    }

    /// Cashes a cheque (for its payee; anyone may send it).
    pub async fn cash_cheque(&self, cheque: &SignedCheque) -> Result<ChequeOutcome, SettleError> {
        let c = &cheque.cheque;
        let receipt = send(self.vault().cashCheque(
            c.payer,
            c.payee,
            c.cumulativeAmount,
            Bytes::copy_from_slice(&cheque.signature),
        ))
        .await?;
        let mut out = ChequeOutcome {
            gas_used: receipt.gas_used,
            ..ChequeOutcome::default()
        };
        for log in receipt.inner.logs() {
            if let Ok(e) = log.log_decode::<Vault::ChequeCashed>() {
                out.paid = e.inner.data.paid;
            } else if let Ok(e) = log.log_decode::<Vault::ChequeBounced>() {
                out.bounced = e.inner.data.unpaid;
            }
        }
        Ok(out)
    }
}

/// Connects with a repo's wallet to the deployment its `[rewards]`
/// section names, at `rpc` or the configured endpoint.
pub async fn from_repo(dir: &std::path::Path, rpc: Option<&str>) -> Result<Settlement, String> {
    let paths = crate::repo::RepoPaths::load(dir).map_err(|e| e.to_string())?;
    let settings = &paths.config.rewards;
    let deployment = settings.deployment()?.ok_or_else(|| {
        "no [rewards] deployment in config.toml (chain_id, reward_pool, vault, token)".to_string()
    })?;
    let rpc = rpc
        .or(settings.rpc.as_deref())
        .ok_or_else(|| "no RPC endpoint: give --rpc URL or set rewards.rpc".to_string())?;
    let wallet = crate::wallet::load_or_create(&paths.wallet()).map_err(|e| e.to_string())?;
    Settlement::connect(rpc, &wallet, deployment)
        .await
        .map_err(|e| e.to_string())
}

/// Claims what can be claimed now: receipts whose epoch is over and
/// whose claim window is open, beyond what was claimed of them before,
/// for content someone funded, from viewers the epoch's draw picked and
/// whose deposit was locked through the epoch (the others would cost gas
/// and count nothing). The epoch's seed is drawn if nobody has yet.
/// What the pool counted is recorded, so nothing is sent twice; receipts
/// whose window has closed are forgotten, and their pools rolled on if
/// nothing of them was counted.
pub async fn claim(
    store: &shoal_storage::Blockstore,
    chain: &Settlement,
) -> Result<ClaimOutcome, crate::NodeError> {
    let now = chain.current_epoch().await?;
    let terms = chain.terms().await?;
    let window = terms.claim_epochs;
    let me = chain.address();
    let mut total = ClaimOutcome::default();
    let held = crate::rewards::held_receipts(store)?;
    // Receipts whose claim window has closed can never be paid: forgotten.
    // A pool of theirs that counted nothing (nobody claimed, or the draw
    // picked none of its viewers) rolls on into its content's current
    // epoch, for the relayers serving it now: the first relayer to see it
    // does so, the others find it empty.
    let closed = |epoch: u64| epoch < now && now - epoch > window;
    let expired: Vec<&SignedReceipt> = held
        .iter()
        .map(|(r, _)| r)
        .filter(|r| closed(r.receipt.epoch))
        .collect();
    let pools: std::collections::BTreeSet<(B256, u64)> = expired
        .iter()
        .map(|r| (r.receipt.contentId, r.receipt.epoch))
        .collect();
    for (content, epoch) in pools {
        if chain.total_bytes(content, epoch).await? == U256::ZERO
            && chain.viewer_pool(content, epoch).await? > U256::ZERO
        {
            match chain.sweep(content, epoch).await {
                Ok(()) => total.rolled += 1,
                Err(SettleError::Reverted(why)) => {
                    tracing::debug!(%content, epoch, %why, "pool not rolled on");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let expired: Vec<Vec<u8>> = expired.iter().map(|r| r.key()).collect();
    store.delete_receipts(&expired)?;
    total.expired = expired.len();
    let ready: Vec<SignedReceipt> = held
        .into_iter()
        .filter(|(r, claimed)| {
            let r = &r.receipt;
            r.relayer == me
                && r.epoch < now
                && now - r.epoch <= window
                && r.cumulativeBytes > *claimed
        })
        .map(|(r, _)| r)
        .collect();
    // Receipts that cannot count are not sent (they would cost gas for
    // nothing): one question per content and epoch, per epoch (its seed)
    // and per viewer and epoch, not per receipt.
    let mut funded: HashMap<(B256, u64), bool> = HashMap::new();
    let mut seeds: HashMap<u64, B256> = HashMap::new();
    let mut counts: HashMap<(Address, u64), bool> = HashMap::new();
    let mut worth = Vec::new();
    for r in ready {
        let x = &r.receipt;
        let pool = match funded.get(&(x.contentId, x.epoch)) {
            Some(f) => *f,
            None => {
                let f = chain.viewer_pool(x.contentId, x.epoch).await? > U256::ZERO;
                funded.insert((x.contentId, x.epoch), f);
                f
            }
        };
        if !pool {
            total.unfunded += 1;
            continue;
        }
        if terms.draw_bits > 0 {
            let seed = match seeds.get(&x.epoch) {
                Some(s) => *s,
                None => {
                    let (s, gas) = chain.draw_metered(x.epoch).await?;
                    total.gas_used += gas;
                    seeds.insert(x.epoch, s);
                    s
                }
            };
            if !picked(seed, x.viewer, terms.draw_bits) {
                total.not_picked += 1;
                continue;
            }
        }
        let viewer = match counts.get(&(x.viewer, x.epoch)) {
            Some(c) => *c,
            None => {
                let c = chain.viewer_counts(x.viewer, x.epoch, &terms).await?;
                counts.insert((x.viewer, x.epoch), c);
                c
            }
        };
        if !viewer {
            total.no_deposit += 1;
            continue;
        }
        worth.push(r);
    }
    // What the pool already counted (a claim whose answer was lost, or
    // one from another process) is recorded, not sent again: the pool
    // would refuse the whole batch for it.
    let mut fresh = Vec::new();
    for r in worth {
        let x = &r.receipt;
        let counted = chain.counted(x.viewer, x.contentId, x.epoch).await?;
        if counted >= x.cumulativeBytes {
            store.mark_claimed(&r.key(), counted)?;
        } else {
            fresh.push(r);
        }
    }
    // Each batch's counted receipts are recorded as soon as it is mined;
    // receipts skipped for want of a viewer deposit stay for later.
    for batch in fresh.chunks(CLAIM_BATCH) {
        let outcome = chain.claim(batch).await?;
        for r in batch {
            let x = &r.receipt;
            if outcome
                .counted_receipts
                .contains(&(x.viewer, x.contentId, x.epoch))
            {
                store.mark_claimed(&r.key(), x.cumulativeBytes)?;
            }
        }
        total.counted += outcome.counted;
        total.bytes = total.bytes.saturating_add(outcome.bytes);
        total.not_counted += outcome.not_counted;
        total.capped_bytes = total.capped_bytes.saturating_add(outcome.capped_bytes);
        total.transactions += outcome.transactions;
        total.gas_used += outcome.gas_used;
        total.counted_receipts.extend(outcome.counted_receipts);
    }
    Ok(total)
}
