//! Contributions' I/O: the receipt protocol (`/shoal/receipt/1.0.0`) on
//! the wire, the receipts a relayer holds, and claiming them on chain. The
//! rules (what a viewer signs, what a relayer keeps, when to ask, whom to
//! throttle) are `shoal_protocol::rewards`, inside the node's machine.
//!
//! One request and one answer per stream, each a 4-byte big-endian length
//! and at most `MAX_RECEIPT_MESSAGE_BYTES`, the whole exchange within
//! [`EXCHANGE_TIMEOUT`].

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use shoal_protocol::ledger::{Account, LedgerConfig};
use shoal_protocol::receipt::{
    Deployment, MAX_RECEIPT_MESSAGE_BYTES, ReceiptRequest, ReceiptResponse, SignedReceipt, Wallet,
};
use shoal_storage::Blockstore;
use tokio::sync::{mpsc, oneshot};

use crate::NodeError;

pub const RECEIPT_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/receipt/1.0.0");

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

/// A relayer asks this node (a viewer) for receipts: the event loop
/// answers through `reply`.
pub(crate) struct ReceiptAsked {
    pub(crate) peer: PeerId,
    pub(crate) request: ReceiptRequest,
    pub(crate) reply: oneshot::Sender<ReceiptResponse>,
}

/// Accepts inbound receipt requests: each is read, answered by the event
/// loop, and the answer written back.
pub(crate) fn spawn_acceptor(
    mut incoming: crate::streams::Incoming,
    events: mpsc::Sender<ReceiptAsked>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    tasks.spawn(async move {
        while let Some((peer, stream)) = incoming.recv().await {
            let events = events.clone();
            tokio::spawn(async move {
                let served = tokio::time::timeout(EXCHANGE_TIMEOUT, serve(peer, stream, events));
                if let Ok(Err(e)) = served.await {
                    tracing::debug!(%peer, error = %e, "receipt request failed");
                }
            });
        }
    });
}

async fn serve(
    peer: PeerId,
    mut stream: Stream,
    events: mpsc::Sender<ReceiptAsked>,
) -> Result<(), String> {
    let bytes = read_frame(&mut stream).await?;
    let request = ReceiptRequest::from_bytes(&bytes).map_err(|e| e.to_string())?;
    let (reply, answer) = oneshot::channel();
    events
        .send(ReceiptAsked {
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

/// Asks `peer` for receipts (relayer side), within [`EXCHANGE_TIMEOUT`].
pub(crate) async fn ask(
    control: crate::streams::Control,
    peer: PeerId,
    request: ReceiptRequest,
) -> Result<ReceiptResponse, String> {
    tokio::time::timeout(EXCHANGE_TIMEOUT, exchange(control, peer, request))
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()))
}

async fn exchange(
    control: crate::streams::Control,
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
