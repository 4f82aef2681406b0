//! Contributions in the event loop: the per-peer ledger, and the receipt
//! protocol (`/shoal/receipt/1.0.0`) by which a relayer asks the viewers
//! it served to sign for what they received.
//!
//! As a **viewer**, a node counts the bytes of live segments each peer
//! delivered, per channel and epoch, and answers a relayer's request with
//! cumulative EIP-712 receipts for exactly that (never more than it
//! received; a relayer that asks for an epoch other than this one or the
//! last gets nothing).
//!
//! As a **relayer**, it records what it served each peer; past the payment
//! threshold it asks the peer for receipts, checks each one (the viewer's
//! signature for the configured deployment, this node's wallet as
//! relayer), keeps the latest per viewer, channel and epoch in the repo's
//! database, and credits the bytes to the peer's account. A peer that
//! neither signs nor serves back is throttled past the disconnect
//! threshold (one optimistic slot aside). Asking and throttling need a
//! configured deployment; without one the node only keeps accounts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, B256};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use shoal_protocol::ledger::{Account, Decision, Ledger, LedgerAction, LedgerConfig};
use shoal_protocol::receipt::{
    Deployment, EPOCH_SECS, MAX_RECEIPT_MESSAGE_BYTES, MAX_RECEIPTS_PER_MESSAGE, Receipt,
    ReceiptRequest, ReceiptResponse, SignedReceipt, Wallet, epoch_of,
};
use shoal_storage::Blockstore;
use tokio::sync::{mpsc, oneshot};

use crate::NodeError;
use crate::event_loop::EventLoop;
use crate::settle::{ClaimOutcome, Settlement};

pub const RECEIPT_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/receipt/1.0.0");

/// A peer's receipt requests are answered at most this often.
const MIN_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// A relayer's request and the viewer's answer together may take this
/// long.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Rewards settings of a node.
#[derive(Clone, Debug, Default)]
pub struct RewardsConfig {
    /// Signs receipts for what this node receives. `None`: a key made for
    /// this run only (nodes without a repo).
    pub wallet: Option<Wallet>,
    /// Where this node claims. With it, the node asks the peers it serves
    /// for receipts and throttles those that do not sign; without, it only
    /// keeps accounts.
    pub deployment: Option<Deployment>,
    pub ledger: LedgerConfig,
}

/// What the receipt tasks tell the event loop.
pub(crate) enum RewardsEvent {
    /// A relayer asks this node (a viewer) for receipts.
    Asked {
        peer: PeerId,
        request: ReceiptRequest,
        reply: oneshot::Sender<ReceiptResponse>,
    },
    /// A viewer this node asked answered, or did not.
    Answered {
        peer: PeerId,
        epoch: u64,
        result: Result<ReceiptResponse, String>,
    },
}

/// Whom a viewer signs for: relayer address, chain id, pool address.
type SignedFor = ([u8; 20], u64, [u8; 20]);

/// What a peer delivered of one content in one epoch.
#[derive(Default)]
struct Delivered {
    bytes: u64,
    segments: HashSet<(u16, u64)>,
}

pub(crate) struct Rewards {
    wallet: Wallet,
    deployment: Option<Deployment>,
    pub(crate) ledger: Ledger<PeerId>,
    /// Viewer side: (peer, content, epoch) → what the peer delivered.
    delivered: HashMap<(PeerId, B256, u64), Delivered>,
    /// Viewer side: the relayer address and deployment signed for, per
    /// peer and epoch: one only, so a peer cannot have the same bytes
    /// signed for several wallets or pools.
    signed_for: HashMap<(PeerId, u64), SignedFor>,
    /// Viewer side: when each peer's last request was answered.
    answered: HashMap<PeerId, Instant>,
    /// Relayer side: the one viewer address each peer signs with.
    viewer_of: HashMap<PeerId, Address>,
    /// Relayer side: peers asked and not yet answered.
    asking: HashSet<PeerId>,
    pub(crate) events_tx: mpsc::Sender<RewardsEvent>,
    pub(crate) events_rx: mpsc::Receiver<RewardsEvent>,
}

/// The current epoch by this node's clock.
fn current_epoch() -> u64 {
    epoch_of(crate::live::unix_ms() / 1000, EPOCH_SECS)
}

impl Rewards {
    pub(crate) fn new(config: &RewardsConfig) -> Rewards {
        let (events_tx, events_rx) = mpsc::channel(256);
        let wallet = config
            .wallet
            .clone()
            .unwrap_or_else(crate::wallet::generate);
        Rewards {
            wallet,
            deployment: config.deployment,
            ledger: Ledger::new(config.ledger.clone()),
            delivered: HashMap::new(),
            signed_for: HashMap::new(),
            answered: HashMap::new(),
            viewer_of: HashMap::new(),
            asking: HashSet::new(),
            events_tx,
            events_rx,
        }
    }

    pub(crate) fn address(&self) -> Address {
        self.wallet.address()
    }

    /// Whether `peer` may be served now.
    pub(crate) fn may_serve(&mut self, peer: &PeerId) -> bool {
        self.deployment.is_none() || self.ledger.may_serve(peer, Instant::now()) == Decision::Serve
    }

    /// A viewer-side record: `peer` delivered `bytes` of segment `segment`
    /// of `content`.
    pub(crate) fn delivered(
        &mut self,
        peer: PeerId,
        content: B256,
        segment: (u16, u64),
        bytes: u64,
    ) {
        let d = self
            .delivered
            .entry((peer, content, current_epoch()))
            .or_default();
        d.bytes += bytes;
        d.segments.insert(segment);
    }

    /// Forgets what peers delivered before the last epoch.
    pub(crate) fn prune(&mut self) {
        let keep_from = current_epoch().saturating_sub(1);
        self.delivered
            .retain(|(_, _, epoch), _| *epoch >= keep_from);
        self.signed_for.retain(|(_, epoch), _| *epoch >= keep_from);
        let now = Instant::now();
        self.answered
            .retain(|_, t| now.duration_since(*t) < MIN_REQUEST_INTERVAL);
    }

    pub(crate) fn accounts(&self) -> Vec<(PeerId, Account)> {
        self.ledger
            .accounts()
            .map(|(p, a)| (*p, a.clone()))
            .collect()
    }

    /// Viewer side: the receipts `peer` asks for, signed.
    /// Viewer side: the receipts `peer` asks for, signed. Nothing for an
    /// epoch other than this one or the last, for a second relayer
    /// address or deployment in one epoch, or within a second of the
    /// last answer.
    fn answer(&mut self, peer: &PeerId, request: &ReceiptRequest) -> ReceiptResponse {
        let now = current_epoch();
        if request.epoch > now || request.epoch.saturating_add(1) < now {
            return ReceiptResponse::default();
        }
        let at = Instant::now();
        if self
            .answered
            .get(peer)
            .is_some_and(|t| at.duration_since(*t) < MIN_REQUEST_INTERVAL)
        {
            return ReceiptResponse::default();
        }
        self.answered.insert(*peer, at);
        let asked = (request.relayer, request.chain_id, request.reward_pool);
        if *self
            .signed_for
            .entry((*peer, request.epoch))
            .or_insert(asked)
            != asked
        {
            tracing::warn!(%peer, "asked to sign for a second wallet or deployment; refused");
            return ReceiptResponse::default();
        }
        let domain = Deployment {
            chain_id: request.chain_id,
            reward_pool: Address::from(request.reward_pool),
            vault: Address::ZERO,
            token: Address::ZERO,
        }
        .receipt_domain();
        let mut mine: Vec<(&B256, &Delivered)> = self
            .delivered
            .iter()
            .filter(|((p, _, e), _)| p == peer && *e == request.epoch)
            .map(|((_, c, _), d)| (c, d))
            .collect();
        mine.sort_by_key(|(_, d)| std::cmp::Reverse(d.bytes));
        let receipts = mine
            .into_iter()
            .take(MAX_RECEIPTS_PER_MESSAGE)
            .map(|(content, d)| {
                self.wallet.sign_receipt(
                    Receipt {
                        viewer: self.wallet.address(),
                        relayer: Address::from(request.relayer),
                        contentId: *content,
                        epoch: request.epoch,
                        cumulativeBytes: d.bytes,
                        cumulativeSegments: d.segments.len() as u64,
                    },
                    &domain,
                )
            })
            .collect();
        ReceiptResponse { receipts }
    }

    /// Relayer side: checks and keeps the receipts `peer` sent; returns
    /// the bytes they acknowledge beyond what was held.
    fn accept(
        &mut self,
        store: &Blockstore,
        peer: &PeerId,
        epoch: u64,
        response: ReceiptResponse,
    ) -> u64 {
        let Some(deployment) = self.deployment else {
            return 0;
        };
        let domain = deployment.receipt_domain();
        // No receipt may say more than this node ever served the peer.
        let served = self.ledger.account(peer).map_or(0, |a| a.served_bytes);
        let mut acknowledged: u64 = 0;
        for r in response.receipts {
            if r.receipt.relayer != self.wallet.address() || r.receipt.epoch != epoch {
                tracing::debug!(%peer, "a receipt for someone else or another epoch");
                continue;
            }
            if r.receipt.cumulativeBytes > served {
                tracing::warn!(%peer, bytes = r.receipt.cumulativeBytes, served, "refused a receipt for more than was served");
                continue;
            }
            if let Err(e) = r.verify(&domain) {
                tracing::warn!(%peer, error = %e, "refused a receipt");
                continue;
            }
            // One viewer address per peer: a peer cannot mint receipts
            // from throwaway keys.
            let viewer = *self.viewer_of.entry(*peer).or_insert(r.receipt.viewer);
            if viewer != r.receipt.viewer {
                tracing::warn!(%peer, "refused a receipt from a second wallet");
                continue;
            }
            let key = r.key();
            let held = match store.receipt(&key) {
                Ok(held) => held.and_then(|(bytes, _)| SignedReceipt::from_bytes(&bytes).ok()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read receipts");
                    continue;
                }
            };
            if !r.supersedes(held.as_ref().map(|h| &h.receipt)) {
                continue;
            }
            if let Err(e) = store.put_receipt(&key, &r.to_bytes()) {
                tracing::error!(error = %e, "cannot keep a receipt");
                continue;
            }
            let before = held.map_or(0, |h| h.receipt.cumulativeBytes);
            acknowledged = acknowledged.saturating_add(r.receipt.cumulativeBytes - before);
        }
        acknowledged
    }
}

/// Accepts inbound receipt requests: each is read, answered by the event
/// loop, and the answer written back.
pub(crate) fn spawn_acceptor(
    control: &mut libp2p_stream::Control,
    events: mpsc::Sender<RewardsEvent>,
) -> Result<(), libp2p_stream::AlreadyRegistered> {
    let mut incoming = control.accept(RECEIPT_PROTOCOL)?;
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            let events = events.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(EXCHANGE_TIMEOUT, serve(peer, stream, events));
                if let Ok(Err(e)) = served.await {
                    tracing::debug!(%peer, error = %e, "receipt request failed");
                }
            });
        }
    });
    Ok(())
}

async fn serve(
    peer: PeerId,
    mut stream: Stream,
    events: mpsc::Sender<RewardsEvent>,
) -> Result<(), String> {
    let bytes = read_frame(&mut stream).await?;
    let request = ReceiptRequest::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let (reply, answer) = oneshot::channel();
    events
        .send(RewardsEvent::Asked {
            peer,
            request,
            reply,
        })
        .await
        .map_err(|_| "node stopped".to_string())?;
    let response = answer.await.map_err(|_| "node stopped".to_string())?;
    write_frame(&mut stream, &response.to_bytes()).await?;
    stream.close().await.map_err(|e| e.to_string())
}

/// Asks `peer` for receipts (relayer side).
async fn ask(
    mut control: libp2p_stream::Control,
    peer: PeerId,
    request: ReceiptRequest,
) -> Result<ReceiptResponse, String> {
    let mut stream = control
        .open_stream(peer, RECEIPT_PROTOCOL)
        .await
        .map_err(|e| e.to_string())?;
    write_frame(&mut stream, &request.to_bytes()).await?;
    let bytes = read_frame(&mut stream).await?;
    ReceiptResponse::from_bytes(&bytes).map_err(|e| e.to_string())
}

/// A frame: a 4-byte big-endian length, then the message.
async fn write_frame(stream: &mut Stream, bytes: &[u8]) -> Result<(), String> {
    let len = u32::try_from(bytes.len()).map_err(|_| "message too large".to_string())?;
    stream
        .write_all(&len.to_be_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

/// Reads a frame, refusing a declared length over the limit before
/// reading it.
async fn read_frame(stream: &mut Stream) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| e.to_string())?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RECEIPT_MESSAGE_BYTES {
        return Err(format!("a {len}-byte receipt message"));
    }
    let mut body = vec![0u8; len];
    stream
        .read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(body)
}

impl EventLoop {
    /// Bytes of blocks were sent to `peer`.
    pub(crate) fn rewards_served(&mut self, peer: PeerId, bytes: u64) {
        let ask = self.rewards.ledger.served(&peer, bytes, Instant::now());
        if let Some(LedgerAction::AskReceipt { peer, owed }) = ask {
            self.ask_receipts(peer, owed);
        }
    }

    /// Asks every peer that owes something and was not asked for a while.
    pub(crate) fn rewards_due(&mut self) {
        if self.rewards.deployment.is_none() {
            return;
        }
        for action in self.rewards.ledger.due(Instant::now()) {
            let LedgerAction::AskReceipt { peer, owed } = action;
            if self.swarm.is_connected(&peer) {
                self.ask_receipts(peer, owed);
            }
        }
    }

    fn ask_receipts(&mut self, peer: PeerId, owed: u64) {
        let Some(d) = self.rewards.deployment else {
            return;
        };
        if !self.rewards.asking.insert(peer) {
            return;
        }
        let epoch = current_epoch();
        let served = self
            .rewards
            .ledger
            .account(&peer)
            .map_or(owed, |a| a.served_bytes);
        let request = ReceiptRequest {
            epoch,
            served_bytes: served,
            relayer: self.rewards.address().into(),
            chain_id: d.chain_id,
            reward_pool: d.reward_pool.into(),
        };
        tracing::debug!(%peer, owed, "asking for receipts");
        let control = self.control.clone();
        let events = self.rewards.events_tx.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(EXCHANGE_TIMEOUT, ask(control, peer, request))
                .await
                .unwrap_or_else(|_| Err("no answer in time".into()));
            let _ = events
                .send(RewardsEvent::Answered {
                    peer,
                    epoch,
                    result,
                })
                .await;
        });
    }

    pub(crate) fn on_rewards_event(&mut self, event: RewardsEvent) {
        match event {
            RewardsEvent::Asked {
                peer,
                request,
                reply,
            } => {
                let _ = reply.send(self.rewards.answer(&peer, &request));
            }
            RewardsEvent::Answered {
                peer,
                epoch,
                result,
            } => {
                self.rewards.asking.remove(&peer);
                match result {
                    Ok(response) => {
                        let acknowledged = self.rewards.accept(&self.store, &peer, epoch, response);
                        tracing::debug!(%peer, acknowledged, "receipts");
                        if acknowledged > 0 {
                            self.rewards
                                .ledger
                                .acknowledged(&peer, acknowledged, Instant::now());
                        }
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "no receipts"),
                }
            }
        }
    }
}

/// The receipts held (as a relayer), with what of each was claimed.
pub(crate) fn held_receipts(store: &Blockstore) -> Result<Vec<(SignedReceipt, u64)>, NodeError> {
    let mut out = Vec::new();
    for held in store.receipts()? {
        match SignedReceipt::from_bytes(&held.receipt) {
            Ok(r) => out.push((r, held.claimed)),
            Err(e) => tracing::warn!(error = %e, "a stored receipt does not decode; skipped"),
        }
    }
    Ok(out)
}

/// Claims what can be claimed now: receipts whose epoch is over and
/// whose claim window is open, beyond what was claimed of them before.
/// What the pool counted is recorded, so nothing is sent twice.
pub(crate) async fn claim(
    store: &Blockstore,
    chain: &Settlement,
) -> Result<ClaimOutcome, NodeError> {
    let now = chain.current_epoch().await?;
    let window = chain.claim_epochs().await?;
    let me = chain.address();
    let ready: Vec<SignedReceipt> = held_receipts(store)?
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
    // What the pool already counted (a claim whose answer was lost, or
    // one from another process) is recorded, not sent again: the pool
    // would refuse the whole batch for it.
    let mut fresh = Vec::new();
    for r in ready {
        let x = &r.receipt;
        let counted = chain.counted(x.viewer, x.contentId, x.epoch).await?;
        if counted >= x.cumulativeBytes {
            store.mark_claimed(&r.key(), counted)?;
        } else {
            fresh.push(r);
        }
    }
    let mut total = ClaimOutcome::default();
    // Each batch's counted receipts are recorded as soon as it is mined;
    // receipts skipped for want of a viewer deposit stay for later.
    for batch in fresh.chunks(crate::settle::CLAIM_BATCH) {
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
        total.bytes += outcome.bytes;
        total.not_counted += outcome.not_counted;
        total.transactions += outcome.transactions;
        total.gas_used += outcome.gas_used;
        total.counted_receipts.extend(outcome.counted_receipts);
    }
    Ok(total)
}

/// One peer's account, as `shoal rewards` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AccountReport {
    pub peer: String,
    pub served_bytes: u64,
    pub received_bytes: u64,
    pub acknowledged_bytes: u64,
    pub owed_bytes: u64,
}

impl AccountReport {
    pub fn of(peer: &PeerId, a: &Account) -> Self {
        AccountReport {
            peer: peer.to_string(),
            served_bytes: a.served_bytes,
            received_bytes: a.received_bytes,
            acknowledged_bytes: a.acknowledged_bytes,
            owed_bytes: a.owed(),
        }
    }
}

/// One receipt held, as `shoal rewards` shows it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ReceiptReport {
    pub viewer: String,
    /// The content id (`0x…`).
    pub content: String,
    pub epoch: u64,
    pub bytes: u64,
    pub segments: u64,
    /// Bytes of it already claimed on chain.
    pub claimed: u64,
}

/// The receipts held in `store`, for display.
pub fn receipt_reports(store: &Blockstore) -> Result<Vec<ReceiptReport>, NodeError> {
    Ok(held_receipts(store)?
        .into_iter()
        .map(|(r, claimed)| ReceiptReport {
            viewer: r.receipt.viewer.to_string(),
            content: r.receipt.contentId.to_string(),
            epoch: r.receipt.epoch,
            bytes: r.receipt.cumulativeBytes,
            segments: r.receipt.cumulativeSegments,
            claimed,
        })
        .collect())
}

/// Claims with the receipts held in `store` (see [`crate::Node::claim`]),
/// for a repo whose daemon is not running.
pub async fn claim_from(store: &Blockstore, chain: &Settlement) -> Result<ClaimOutcome, NodeError> {
    claim(store, chain).await
}
