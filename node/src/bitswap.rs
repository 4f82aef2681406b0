//! Bitswap streams: the bytes between the engine and the network.
//!
//! Inbound, one task per stream reads length-prefixed frames, refusing a
//! frame whose declared length is over the limit before reading it, decodes
//! it and hands the message to the event loop. Outbound, one task per peer
//! owns a stream, reads the blocks a message names from the store, splits
//! large replies under the message limit and reports each message that
//! carried queue space once written; it opens streams only on connections
//! the peer has and stops when the peer goes (what it still held was for a
//! peer that no longer waits for it). A peer that takes nothing of a frame
//! for [`WRITE_STALL`] is reported [`StreamEvent::Stalled`] (the event loop
//! disconnects it) and its writer stops; one whose message takes longer
//! than [`SLOW_WRITE`] is reported [`StreamEvent::Slow`] first, so that
//! the engine stops counting what it holds against the other peers. All
//! protocol decisions are the engine's (`shoal_protocol::bitswap`), which
//! also bounds what waits in a writer's queue.

use std::sync::Arc;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use shoal_protocol::bitswap::wire::{self, MAX_MESSAGE_SIZE};
use shoal_protocol::bitswap::{Message, Outgoing, PROTOCOLS, WireBlock, WireError};
use shoal_storage::Blockstore;

use crate::limits::UploadLimiter;
use crate::streams::{Control, Incoming, OpenError};
use tokio::sync::mpsc;

/// How long a write may make no progress before the peer is dropped. A
/// frame is written in [`WRITE_CHUNK`] pieces, each within this time, so a
/// slow link that takes 64 KiB per 10 s (51 kb/s) keeps its stream, and a
/// peer that reads nothing is gone within 10 s of its window filling.
pub(crate) const WRITE_STALL: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one message may take to write before the engine hears that
/// its peer is slow ([`StreamEvent::Slow`]). A broadcaster's paced bytes
/// (128 KiB for all viewers) drain in 100 ms at 10 Mb/s: a single message
/// five times longer is a path backed up (a viewer cut off, or one that
/// stopped reading), not a busy uplink, and the other viewers should not
/// wait for it.
pub(crate) const SLOW_WRITE: std::time::Duration = std::time::Duration::from_millis(500);

/// The piece of a frame that must go out within [`WRITE_STALL`].
const WRITE_CHUNK: usize = 64 << 10;

/// What the stream tasks tell the event loop.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    Message(PeerId, Message),
    /// The writer wrote (or dropped) a message carrying this many bytes of
    /// blocks and this many counted answers.
    Sent {
        peer: PeerId,
        bytes: usize,
        presences: usize,
    },
    /// A message to the peer has been writing for [`SLOW_WRITE`].
    Slow(PeerId),
    /// The peer took nothing for [`WRITE_STALL`]; its writer stopped.
    Stalled(PeerId),
    /// The peer sent something that is not a valid Bitswap message.
    Malformed(PeerId, WireError),
}

pub(crate) fn protocols() -> Vec<StreamProtocol> {
    PROTOCOLS.iter().map(|p| StreamProtocol::new(p)).collect()
}

/// Accepts inbound Bitswap streams (one queue per protocol version).
pub(crate) fn spawn_acceptors(
    incoming: Vec<Incoming>,
    events: mpsc::Sender<StreamEvent>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    for mut incoming in incoming {
        let events = events.clone();
        tasks.spawn(async move {
            while let Some((peer, stream)) = incoming.recv().await {
                tokio::spawn(read_stream(peer, stream, events.clone()));
            }
        });
    }
}

/// Reads one unsigned varint, a byte at a time (at most 10 bytes).
async fn read_length(stream: &mut Stream) -> std::io::Result<Option<u64>> {
    let mut buf = [0u8; 10];
    for i in 0..buf.len() {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf[i] = byte[0];
        if byte[0] & 0x80 == 0 {
            return match wire::read_varint(&buf[..=i]) {
                Ok(Some((v, _))) => Ok(Some(v)),
                _ => Err(std::io::ErrorKind::InvalidData.into()),
            };
        }
    }
    Err(std::io::ErrorKind::InvalidData.into())
}

async fn read_stream(peer: PeerId, mut stream: Stream, events: mpsc::Sender<StreamEvent>) {
    loop {
        let len = match read_length(&mut stream).await {
            Ok(Some(len)) => len,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "bitswap stream ended");
                return;
            }
        };
        if len > MAX_MESSAGE_SIZE as u64 {
            let _ = events
                .send(StreamEvent::Malformed(peer, WireError::TooLarge(len)))
                .await;
            return;
        }
        // The length is within the limit: only now is memory reserved.
        let mut body = vec![0u8; len as usize];
        if let Err(e) = stream.read_exact(&mut body).await {
            tracing::debug!(%peer, error = %e, "bitswap stream ended inside a message");
            return;
        }
        let event = match Message::decode(&body) {
            Ok(msg) => StreamEvent::Message(peer, msg),
            Err(e) => StreamEvent::Malformed(peer, e),
        };
        let stop = matches!(event, StreamEvent::Malformed(..));
        if events.send(event).await.is_err() || stop {
            return;
        }
    }
}

/// Opens a Bitswap stream to `peer` on a connection it has, newest
/// protocol version first.
async fn open(control: &Control, peer: PeerId) -> Option<Stream> {
    for protocol in protocols() {
        match control.open_connected(peer, protocol.clone()).await {
            Ok(stream) => return Some(stream),
            Err(OpenError::Unsupported(_)) => continue,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot open a bitswap stream");
                return None;
            }
        }
    }
    None
}

/// Builds the wire messages for one engine message, its blocks read from
/// the store.
fn build(out: Outgoing, store: &Blockstore) -> Vec<Message> {
    let mut blocks = Vec::with_capacity(out.blocks.len());
    for cid in &out.blocks {
        match store.get(cid) {
            Ok(Some(data)) => blocks.push(WireBlock { cid: *cid, data }),
            Ok(None) => tracing::debug!(%cid, "block left the store before it was sent"),
            Err(e) => tracing::warn!(%cid, error = %e, "cannot read a block to send"),
        }
    }
    out.into_messages(blocks)
}

/// Writes `frame` in pieces, each within [`WRITE_STALL`].
async fn write_frame(stream: &mut Stream, frame: &[u8]) -> std::io::Result<()> {
    for piece in frame.chunks(WRITE_CHUNK) {
        match tokio::time::timeout(WRITE_STALL, stream.write_all(piece)).await {
            Ok(written) => written?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
    match tokio::time::timeout(WRITE_STALL, stream.flush()).await {
        Ok(flushed) => flushed,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// [`write_frame`], telling the event loop once the write has taken
/// [`SLOW_WRITE`] and setting `slow` if it did.
async fn write_watched(
    stream: &mut Stream,
    frame: &[u8],
    peer: PeerId,
    events: &mpsc::Sender<StreamEvent>,
    slow: &mut bool,
) -> std::io::Result<()> {
    let write = write_frame(stream, frame);
    tokio::pin!(write);
    match tokio::time::timeout(SLOW_WRITE, &mut write).await {
        Ok(written) => written,
        Err(_) => {
            *slow = true;
            let _ = events.send(StreamEvent::Slow(peer)).await;
            write.await
        }
    }
}

/// Starts the writer of one peer; returns its queue. The queue needs no
/// bound of its own: it holds CIDs, not bytes, and the engine bounds what
/// goes in (its per-peer byte budget for blocks and answers until they are
/// reported written, and our own wants).
pub(crate) fn spawn_writer(
    peer: PeerId,
    control: Control,
    store: Arc<Blockstore>,
    upload: Arc<UploadLimiter>,
    events: mpsc::Sender<StreamEvent>,
    blocking: Arc<()>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> mpsc::UnboundedSender<Outgoing> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    tasks.spawn(async move {
        let mut stream: Option<Stream> = None;
        while let Some(out) = rx.recv().await {
            // The peer went away (the event loop dropped this writer's
            // queue): what is left was for a peer that no longer waits
            // for it, and a new connection starts afresh.
            if rx.is_closed() {
                return;
            }
            let (bytes, presences) = (out.block_bytes, out.queued_presences);
            let report = out.needs_report();
            // A slow message is reported written even without queue
            // space to give back: the engine waits for that report.
            let mut slow = false;
            // Reading blocks touches the disk: off the async threads. Most
            // messages (wants, presences) carry none and are built here.
            let msgs = if out.blocks.is_empty() {
                build(out, &store)
            } else {
                let store = store.clone();
                let token = blocking.clone();
                tokio::task::spawn_blocking(move || {
                    let _token = token;
                    build(out, &store)
                })
                .await
                .unwrap_or_default()
            };
            for msg in msgs {
                let frame = msg.encode_framed();
                upload.acquire(frame.len()).await;
                // One retry on a fresh stream: the old one may have been
                // closed by the peer since the last message.
                for _attempt in 0..2 {
                    if rx.is_closed() {
                        return;
                    }
                    if stream.is_none() {
                        stream = open(&control, peer).await;
                    }
                    let Some(s) = stream.as_mut() else { break };
                    match write_watched(s, &frame, peer, &events, &mut slow).await {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                            tracing::debug!(%peer, "bitswap peer takes nothing; dropping it");
                            // Its queue space comes back with the peer's
                            // departure; what waits here is dropped with it.
                            let _ = events.send(StreamEvent::Stalled(peer)).await;
                            return;
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "bitswap write failed");
                            stream = None;
                        }
                    }
                }
            }
            if (report || slow)
                && events
                    .send(StreamEvent::Sent {
                        peer,
                        bytes,
                        presences,
                    })
                    .await
                    .is_err()
            {
                return;
            }
        }
        if let Some(mut s) = stream {
            let _ = s.close().await;
        }
    });
    tx
}
