//! The Bitswap engine: both sides of the protocol as a state machine.
//!
//! It is fed peer events and decoded messages and returns [`Output`]s: what
//! to send to whom, which verified blocks arrived and from whom, and which
//! peers to disconnect. It owns no socket, no store and no clock; the node
//! moves the bytes, reads blocks from its store and keeps the ban list.
//! `P` is the peer identifier (libp2p's `PeerId` in the node).
//!
//! What it guarantees beyond the IPFS implementations:
//!
//! - A peer's want stays open until the peer cancels it or the block has
//!   been sent: a block that enters the store later ([`Engine::block_stored`])
//!   goes to every peer still waiting for it. Live streams ask for shards
//!   before they exist.
//! - Every block handed out in [`Output::Received`] names the peer that sent
//!   it, and its CID was computed from its bytes by the wire decoder.
//! - A block nobody wants (which is what a corrupted block looks like
//!   once its CID is computed from its bytes) gets the peer disconnected:
//!   [`Output::Disconnect`]. A block we want is taken from whoever sends
//!   it, and a copy of one we received or gave up lately is only late,
//!   also from a peer that reconnected since we asked it (one record for
//!   the node, [`EngineConfig::remembered_settled`], not one per peer).
//! - Memory per peer is bounded: at most [`EngineConfig::max_peer_wants`]
//!   open wants, [`EngineConfig::max_queued_bytes`] of blocks and
//!   [`EngineConfig::max_queued_presences`] HAVE/DONT_HAVE answers handed
//!   to the node and not yet written. Wants beyond are dropped; blocks and
//!   answers beyond wait here for [`Engine::sent`], answers merged per CID
//!   (one pending answer per open want, whatever the peer repeats), so a
//!   peer that asks without reading holds no more than its wantlist.
//! - A block can be *rationed* ([`Engine::ration`]): sent to a few peers
//!   only, the others told DONT_HAVE so that they fetch it from those few
//!   (or ask again later: the DONT_HAVE closes their want, so a ration's
//!   end does not send a copy to every viewer that was ever refused),
//!   until [`Engine::end_ration`] serves whoever still waits: peers that
//!   asked not to hear DONT_HAVE. A live
//!   broadcaster rations each new shard, so its upload stays a few copies
//!   of the stream however many watch (BitTorrent's super-seeding).
//! - A block can be *paced* ([`Engine::pace`]): at most
//!   [`EngineConfig::max_paced_bytes`] of such blocks (less while the
//!   node finds its uplink slow: [`Engine::set_paced_limit`]) are queued
//!   for all peers together, the rest wait here, in turn, where a cancel
//!   still stops them. A broadcaster's uplink is the scarcest link of a live
//!   channel, and a viewer's is often slower than the stream; a copy
//!   handed to the transport goes out even when its viewer got the shard
//!   elsewhere meanwhile, and announcements and the node's own asks wait
//!   behind it.
//!   A peer whose messages are slow to write ([`Engine::write_slow`]: a
//!   viewer cut off, or one that stopped reading) keeps what it holds, but
//!   its bytes no longer count against the others and it gets no more
//!   paced blocks until they are written: one stuck viewer cannot hold a
//!   broadcaster's whole upload (in the network lab, half the viewers cut
//!   off for 10 s stalled every viewer's segments until the writers gave
//!   up on the cut ones).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use cid::Cid;

use super::wire::{Message, Presence, WantEntry, WantType, WireBlock, split_blocks};

/// Limits, each with the reason for its default.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Open wants kept per peer. A client fetching a 4 MiB segment wants 14
    /// shards; 8192 covers hundreds of segments in flight, and at ~150
    /// bytes an entry bounds a peer's wantlist to about 1.2 MiB.
    pub max_peer_wants: usize,
    /// Bytes of blocks queued for one peer and not yet sent. 16 MiB is four
    /// full messages: enough to keep a fast link busy, small enough that a
    /// slow peer cannot hold much memory.
    pub max_queued_bytes: usize,
    /// Blocks we stopped wanting lately, remembered so that a copy
    /// already on its way is not taken for an unrequested one: received
    /// (from anyone, or stored by another path), also when a reconnection
    /// since made us forget what we had asked the sender (the network
    /// lab's loaded runs banned honest peers so), or given up
    /// ([`Engine::cancel`]). One record for the whole node, not one per
    /// peer: a late copy comes within seconds, and 1024 remembered
    /// cancels for each of a few hundred peers were most of a node's
    /// memory in the swarm model (232 of 436 MB at 300 viewers). 4096
    /// shards are the last 290 live segments of 14 shards, about 700 KiB.
    pub remembered_settled: usize,
    /// Bytes of *paced* blocks ([`Engine::pace`]: the blocks of live
    /// segments, published here or fetched) queued for all peers together
    /// and not yet sent. The rest wait in the engine, where a cancel still
    /// stops them; once queued, a block goes out even if its peer got it
    /// elsewhere meanwhile. 128 KiB is 50 ms of a 20 Mb/s uplink, a
    /// millisecond of a gigabit one, and two seconds of a 0.5 Mb/s home
    /// uplink (then a viewer's own asks wait behind at most that), so
    /// this is a ceiling: the node lowers the budget while its writes
    /// are slow ([`super::uplink::UplinkBudget`]).
    pub max_paced_bytes: usize,
    /// Paced blocks remembered, oldest forgotten first: a node's window of
    /// segments is well inside 4096 shards.
    pub max_paced_blocks: usize,
    /// HAVE/DONT_HAVE answers handed to the node for one peer and not yet
    /// reported written. 8192 is one full message of presences (about
    /// 400 KiB); answers beyond wait in the engine, one per open want.
    pub max_queued_presences: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_peer_wants: 8192,
            max_queued_bytes: 16 << 20,
            remembered_settled: 4096,
            max_paced_bytes: 128 << 10,
            max_paced_blocks: 4096,
            max_queued_presences: super::wire::MAX_PRESENCES_PER_MESSAGE,
        }
    }
}

/// What the engine asks the node to look up in its store.
pub trait BlockSource {
    /// The size of a block the node holds, or `None`.
    fn block_size(&self, cid: &Cid) -> Option<usize>;
}

/// A message for the node to send: entries and presences as they are, and
/// the CIDs of blocks to read from the store and attach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outgoing {
    pub wantlist: Vec<WantEntry>,
    pub presences: Vec<(Cid, Presence)>,
    pub blocks: Vec<Cid>,
    /// Bytes of `blocks`, already counted against the peer's queue; report
    /// them back with [`Engine::sent`] once written (or dropped).
    pub block_bytes: usize,
    /// Of `presences`, how many the engine counted against the peer's
    /// queue; report them back with [`Engine::sent`] too.
    pub queued_presences: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.wantlist.is_empty() && self.presences.is_empty() && self.blocks.is_empty()
    }

    /// Whether the writer must report this message back with
    /// [`Engine::sent`] (it carries queue space).
    pub fn needs_report(&self) -> bool {
        self.block_bytes > 0 || self.queued_presences > 0
    }

    /// The wire messages that carry this one, given its blocks as read
    /// from the store (a block that left the store meanwhile is simply
    /// missing): blocks in messages of about
    /// [`super::wire::TARGET_MESSAGE_SIZE`], the presences and the
    /// wantlist in the first.
    pub fn into_messages(self, blocks: Vec<WireBlock>) -> Vec<Message> {
        let mut msgs = split_blocks(blocks, self.presences);
        if !self.wantlist.is_empty() {
            match msgs.first_mut() {
                Some(first) => first.wantlist = self.wantlist,
                None => msgs.push(Message {
                    wantlist: self.wantlist,
                    ..Message::default()
                }),
            }
        }
        msgs
    }

    /// Appends `other`, so that one message carries everything a batch of
    /// outputs sends a peer.
    pub fn merge(&mut self, other: Outgoing) {
        self.wantlist.extend(other.wantlist);
        self.presences.extend(other.presences);
        self.blocks.extend(other.blocks);
        self.block_bytes += other.block_bytes;
        self.queued_presences += other.queued_presences;
    }
}

/// Why a peer is disconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Misbehaviour {
    /// It sent a block nobody asked it for: corrupted, or spam.
    UnrequestedBlock(Cid),
    /// It sent a block whose hash function shoal cannot check.
    UncheckableBlock,
}

/// What the engine asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<P> {
    Send {
        peer: P,
        message: Outgoing,
    },
    /// A block we wanted, verified against its CID, from `peer`.
    Received {
        peer: P,
        cid: Cid,
        data: Vec<u8>,
    },
    /// A peer told us whether it has a block we asked about.
    Presence {
        peer: P,
        cid: Cid,
        presence: Presence,
    },
    Disconnect {
        peer: P,
        reason: Misbehaviour,
    },
}

/// One open want of a peer.
#[derive(Clone, Copy, Debug)]
struct PeerWant {
    want_type: WantType,
    priority: i32,
    send_dont_have: bool,
    /// Refused under a ration: closed once its DONT_HAVE is handed out,
    /// and never served meanwhile. It keeps its place in the wantlist
    /// until then, so a peer that asks without reading still holds no
    /// more answers than its wantlist.
    refused: bool,
}

#[derive(Default)]
struct PeerState {
    /// The peer's open wants.
    wants: HashMap<Cid, PeerWant>,
    /// Want-blocks we can serve but that wait for room in the queue.
    deferred: VecDeque<Cid>,
    queued_bytes: usize,
    /// Of `queued_bytes`, paced blocks.
    paced_queued: usize,
    /// Its writer reported a slow message ([`Engine::write_slow`]) and has
    /// reported nothing written since: its paced bytes are not counted in
    /// the shared budget, and no paced block goes to it.
    slow: bool,
    /// Our wants sent to this peer.
    asked: HashMap<Cid, WantType>,
    /// Entries dropped because the wantlist was full.
    dropped_wants: u64,
    /// Answers waiting for room, one per CID, in the order they were
    /// first made: CID → (turn, answer), and turn → CID.
    pending: HashMap<Cid, (u64, Presence)>,
    pending_order: std::collections::BTreeMap<u64, Cid>,
    next_turn: u64,
    /// Answers handed to the node and not yet reported written.
    queued_presences: usize,
}

impl PeerState {
    /// Queues an answer for `cid`, replacing one still waiting.
    fn answer(&mut self, cid: Cid, presence: Presence) {
        match self.pending.get_mut(&cid) {
            Some((_, p)) => *p = presence,
            None => {
                let turn = self.next_turn;
                self.next_turn += 1;
                self.pending.insert(cid, (turn, presence));
                self.pending_order.insert(turn, cid);
            }
        }
    }

    /// Closes the peer's want of `cid` and any answer still waiting for it.
    fn close_want(&mut self, cid: &Cid) {
        self.wants.remove(cid);
        if let Some((turn, _)) = self.pending.remove(cid) {
            self.pending_order.remove(&turn);
        }
    }

    /// Moves waiting answers into `reply` while the queue has room.
    fn release_answers(&mut self, max: usize, reply: &mut Outgoing) {
        while self.queued_presences < max {
            let Some((_, cid)) = self.pending_order.pop_first() else {
                break;
            };
            if let Some((_, presence)) = self.pending.remove(&cid) {
                reply.presences.push((cid, presence));
                reply.queued_presences += 1;
                self.queued_presences += 1;
                if self.wants.get(&cid).is_some_and(|w| w.refused) {
                    self.wants.remove(&cid);
                }
            }
        }
    }
}

/// The Bitswap engine. See the module documentation.
pub struct Engine<P> {
    config: EngineConfig,
    peers: HashMap<P, PeerState>,
    /// Our open wants and their type.
    wants: HashMap<Cid, WantType>,
    /// Blocks received or given up lately, oldest first
    /// ([`EngineConfig::remembered_settled`]).
    settled: VecDeque<Cid>,
    settled_set: HashSet<Cid>,
    /// Rationed blocks and how many more peers each may be sent to.
    rationed: HashMap<Cid, usize>,
    /// Paced blocks, and the order they were paced in.
    paced: HashSet<Cid>,
    paced_order: VecDeque<Cid>,
    /// Bytes of paced blocks queued for all peers.
    paced_queued: usize,
    /// The paced bytes that may be queued now: at most
    /// [`EngineConfig::max_paced_bytes`], lowered while the uplink is
    /// slow ([`Engine::set_paced_limit`]).
    paced_limit: usize,
    /// Peers whose next block waits for room among the paced bytes, in
    /// turn.
    starved: VecDeque<P>,
}

impl<P: Clone + Eq + Hash> Engine<P> {
    pub fn new(config: EngineConfig) -> Self {
        Engine {
            peers: HashMap::new(),
            wants: HashMap::new(),
            settled: VecDeque::new(),
            settled_set: HashSet::new(),
            rationed: HashMap::new(),
            paced: HashSet::new(),
            paced_order: VecDeque::new(),
            paced_queued: 0,
            paced_limit: config.max_paced_bytes,
            starved: VecDeque::new(),
            config,
        }
    }

    /// Lets `limit` bytes of paced blocks be queued for all peers
    /// together, at most [`EngineConfig::max_paced_bytes`]: the node
    /// lowers it while its uplink writes slowly
    /// ([`super::uplink::UplinkBudget`]). Raised, the blocks waiting for
    /// room go out.
    pub fn set_paced_limit(
        &mut self,
        limit: usize,
        store: &impl BlockSource,
        out: &mut Vec<Output<P>>,
    ) {
        self.paced_limit = limit.min(self.config.max_paced_bytes);
        self.pump(store, out);
    }

    pub fn peer_connected(&mut self, peer: P) {
        self.peers.entry(peer).or_default();
    }

    /// Forgets a peer; returns the CIDs we had asked it for, to ask others.
    pub fn peer_disconnected(&mut self, peer: &P) -> Vec<Cid> {
        self.starved.retain(|p| p != peer);
        self.peers
            .remove(peer)
            .map(|s| {
                if !s.slow {
                    self.paced_queued = self.paced_queued.saturating_sub(s.paced_queued);
                }
                s.asked
                    .into_keys()
                    .filter(|c| self.wants.contains_key(c))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Our open wants.
    #[cfg(test)]
    fn wants(&self) -> impl Iterator<Item = (&Cid, &WantType)> {
        self.wants.iter()
    }

    /// How many wants a peer has open with us.
    #[cfg(test)]
    fn peer_want_count(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, |s| s.wants.len())
    }

    /// Bytes queued for a peer and not yet reported sent.
    #[cfg(test)]
    fn queued_bytes(&self, peer: &P) -> usize {
        self.peers.get(peer).map_or(0, |s| s.queued_bytes)
    }

    /// Asks `peer` for `cid`. A want-block upgrades an earlier want-have;
    /// a want-have after a want-block is not sent. Asked again, the same
    /// want is sent again: the caller asks again when the first went
    /// unanswered (a message lost with a failed stream), and a peer takes
    /// a repeated want as the same want.
    pub fn want(&mut self, peer: &P, cid: Cid, want_type: WantType, out: &mut Vec<Output<P>>) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        let entry = self.wants.entry(cid).or_insert(want_type);
        if want_type == WantType::Block {
            *entry = WantType::Block;
        }
        if want_type == WantType::Have && state.asked.get(&cid) == Some(&WantType::Block) {
            return;
        }
        state.asked.insert(cid, want_type);
        out.push(Output::Send {
            peer: peer.clone(),
            message: Outgoing {
                wantlist: vec![WantEntry {
                    cid,
                    priority: 1,
                    cancel: false,
                    want_type,
                    send_dont_have: true,
                }],
                ..Outgoing::default()
            },
        });
    }

    /// Gives up on `cid`: cancels it with every peer asked. A copy that
    /// arrives later is only late.
    pub fn cancel(&mut self, cid: &Cid, out: &mut Vec<Output<P>>) {
        self.wants.remove(cid);
        self.remember_settled(*cid);
        self.cancel_asks(cid, None, out);
    }

    /// Cancels our asks for `cid` with every peer but `except`.
    fn cancel_asks(&mut self, cid: &Cid, except: Option<&P>, out: &mut Vec<Output<P>>) {
        for (peer, state) in &mut self.peers {
            if state.asked.remove(cid).is_none() || Some(peer) == except {
                continue;
            }
            out.push(Output::Send {
                peer: peer.clone(),
                message: Outgoing {
                    wantlist: vec![WantEntry {
                        cid: *cid,
                        priority: 0,
                        cancel: true,
                        want_type: WantType::Block,
                        send_dont_have: false,
                    }],
                    ..Outgoing::default()
                },
            });
        }
    }

    /// Handles a message from `peer`.
    pub fn on_message(
        &mut self,
        peer: &P,
        msg: Message,
        store: &impl BlockSource,
        out: &mut Vec<Output<P>>,
    ) {
        if !self.peers.contains_key(peer) {
            self.peer_connected(peer.clone());
        }
        if msg.unreadable_blocks > 0 {
            out.push(Output::Disconnect {
                peer: peer.clone(),
                reason: Misbehaviour::UncheckableBlock,
            });
            return;
        }
        // Blocks first: a block nobody asked for ends the conversation. A
        // block we want is taken from whoever sends it (its bytes match
        // its CID), and a copy of one we asked for or received lately is
        // only late.
        for block in msg.blocks {
            let Some(state) = self.peers.get(peer) else {
                return;
            };
            let asked = state.asked.contains_key(&block.cid) || self.wants.contains_key(&block.cid);
            let late = self.settled_set.contains(&block.cid);
            if !asked && !late {
                out.push(Output::Disconnect {
                    peer: peer.clone(),
                    reason: Misbehaviour::UnrequestedBlock(block.cid),
                });
                return;
            }
            if self.wants.remove(&block.cid).is_some() {
                self.remember_settled(block.cid);
                self.cancel_asks(&block.cid, Some(peer), out);
                out.push(Output::Received {
                    peer: peer.clone(),
                    cid: block.cid,
                    data: block.data,
                });
            }
        }
        for (cid, presence) in msg.presences {
            let asked = self
                .peers
                .get(peer)
                .is_some_and(|s| s.asked.contains_key(&cid));
            if asked {
                out.push(Output::Presence {
                    peer: peer.clone(),
                    cid,
                    presence,
                });
            }
        }
        self.on_wantlist(peer, msg.wantlist, msg.full, store, out);
        self.pump(store, out);
    }

    fn on_wantlist(
        &mut self,
        peer: &P,
        entries: Vec<WantEntry>,
        full: bool,
        store: &impl BlockSource,
        out: &mut Vec<Output<P>>,
    ) {
        let max_wants = self.config.max_peer_wants;
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if full {
            state.wants.clear();
            state.deferred.clear();
            state.pending.clear();
            state.pending_order.clear();
        }
        let mut reply = Outgoing::default();
        for e in entries {
            if e.cancel {
                state.close_want(&e.cid);
                continue;
            }
            if !state.wants.contains_key(&e.cid) && state.wants.len() >= max_wants {
                state.dropped_wants += 1;
                continue;
            }
            let before = state.wants.insert(
                e.cid,
                PeerWant {
                    want_type: e.want_type,
                    priority: e.priority,
                    send_dont_have: e.send_dont_have,
                    refused: false,
                },
            );
            let open_block = before.is_some_and(|w| w.want_type == WantType::Block && !w.refused);
            match (e.want_type, store.block_size(&e.cid)) {
                (WantType::Have, Some(_)) => {
                    state.answer(e.cid, Presence::Have);
                    // A want-have is answered; the want stays open so that
                    // a later want-block or cancel finds it.
                }
                // Asked again while the first want-block is still open
                // (the block waits for queue room, a ration's end or its
                // return to the store): it is queued once. A want-block
                // repeated after its block was queued is served again, so
                // a block lost with a failed stream comes the second time.
                (WantType::Block, Some(_)) if open_block => {}
                (WantType::Block, Some(_)) => state.deferred.push_back(e.cid),
                (_, None) if e.send_dont_have => state.answer(e.cid, Presence::DontHave),
                (_, None) => {}
            }
        }
        state.deferred.retain(|c| state.wants.contains_key(c));
        // The peer's highest priorities go first (a stable sort keeps
        // arrival order among equals).
        let wants = &state.wants;
        state
            .deferred
            .make_contiguous()
            .sort_by_key(|c| std::cmp::Reverse(wants.get(c).map_or(i32::MIN, |w| w.priority)));
        self.fill_queue(peer, store, &mut reply);
        if !reply.is_empty() {
            out.push(Output::Send {
                peer: peer.clone(),
                message: reply,
            });
        }
    }

    /// Moves deferred want-blocks of `peer` into `reply` while the queue has
    /// room. A block is sent once; its want is then closed. A rationed block
    /// already sent to its share of peers is answered DONT_HAVE, which
    /// closes the want; a peer that asked to hear no DONT_HAVE keeps it
    /// open for [`Engine::end_ration`].
    fn fill_queue(&mut self, peer: &P, store: &impl BlockSource, reply: &mut Outgoing) {
        let max = self.config.max_queued_bytes;
        let max_presences = self.config.max_queued_presences;
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        while let Some(cid) = state.deferred.front().copied() {
            let Some(size) = store.block_size(&cid) else {
                // Gone from the store (evicted): the want stays open.
                state.deferred.pop_front();
                continue;
            };
            if self.rationed.get(&cid) == Some(&0) {
                state.deferred.pop_front();
                if state.wants.get(&cid).is_some_and(|w| w.send_dont_have) {
                    // Refused, not queued: closed once its DONT_HAVE goes
                    // out, and a viewer asks again once it has given
                    // other viewers their time. Kept open, every refused
                    // want was served at the ration's end (`shoal-sim
                    // swarm --home`, 1000 viewers: up to 5.5 copies of
                    // each shard once viewers ask for another shard when
                    // refused).
                    if let Some(w) = state.wants.get_mut(&cid) {
                        w.refused = true;
                    }
                    state.answer(cid, Presence::DontHave);
                }
                continue;
            }
            // One block always fits an empty queue, so a block larger than
            // the limit cannot stall the peer forever.
            if state.queued_bytes > 0 && state.queued_bytes + size > max {
                break;
            }
            let paced = self.paced.contains(&cid);
            if paced && state.slow {
                // Served again once what it holds is written (`sent`).
                break;
            }
            if paced && self.paced_queued > 0 && self.paced_queued + size > self.paced_limit {
                if !self.starved.contains(peer) {
                    self.starved.push_back(peer.clone());
                }
                break;
            }
            state.deferred.pop_front();
            state.close_want(&cid);
            if let Some(left) = self.rationed.get_mut(&cid) {
                *left -= 1;
            }
            state.queued_bytes += size;
            if paced {
                state.paced_queued += size;
                self.paced_queued += size;
            }
            reply.blocks.push(cid);
            reply.block_bytes += size;
        }
        state.release_answers(max_presences, reply);
    }

    /// The node finished writing (or dropped) a message to `peer` carrying
    /// `bytes` of blocks and `presences` counted answers (its
    /// [`Outgoing::block_bytes`] and [`Outgoing::queued_presences`]);
    /// want-blocks and answers waiting for room may now go out.
    pub fn sent(
        &mut self,
        peer: &P,
        bytes: usize,
        presences: usize,
        store: &impl BlockSource,
        out: &mut Vec<Output<P>>,
    ) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        state.queued_presences = state.queued_presences.saturating_sub(presences);
        let freed = bytes.min(state.queued_bytes);
        state.queued_bytes -= freed;
        // Which of the bytes were paced is not reported; counting them
        // first frees the room no later than it really is.
        let paced = freed.min(state.paced_queued);
        state.paced_queued -= paced;
        if state.slow {
            // Its writer moves again: what it still holds counts again.
            state.slow = false;
            self.paced_queued += state.paced_queued;
        } else {
            self.paced_queued = self.paced_queued.saturating_sub(paced);
        }
        // Peers that waited for room among the paced bytes go before this
        // one, which takes its turn behind them if it must wait too.
        self.pump(store, out);
        let mut reply = Outgoing::default();
        self.fill_queue(peer, store, &mut reply);
        if !reply.is_empty() {
            out.push(Output::Send {
                peer: peer.clone(),
                message: reply,
            });
        }
    }

    /// The node has been writing a message to `peer` for a while
    /// (`SLOW_WRITE` in the node): the paced bytes the peer holds stop
    /// counting against [`EngineConfig::max_paced_bytes`], so the other
    /// peers are served, and the peer gets no more paced blocks until
    /// the node reports that message (or a later one)
    /// [sent](Engine::sent), with zero bytes if it carried none.
    pub fn write_slow(&mut self, peer: &P, store: &impl BlockSource, out: &mut Vec<Output<P>>) {
        let Some(state) = self.peers.get_mut(peer) else {
            return;
        };
        if state.slow {
            return;
        }
        state.slow = true;
        self.paced_queued = self.paced_queued.saturating_sub(state.paced_queued);
        self.starved.retain(|p| p != peer);
        self.pump(store, out);
    }

    /// Serves the peers waiting for room among the paced bytes, in turn,
    /// while there is room. Called wherever a store is at hand, so that
    /// room freed by a peer that left is used on the next event.
    fn pump(&mut self, store: &impl BlockSource, out: &mut Vec<Output<P>>) {
        let mut turns = self.starved.len();
        while turns > 0 && self.paced_queued < self.paced_limit {
            turns -= 1;
            let Some(next) = self.starved.pop_front() else {
                break;
            };
            let mut reply = Outgoing::default();
            self.fill_queue(&next, store, &mut reply);
            if !reply.is_empty() {
                out.push(Output::Send {
                    peer: next,
                    message: reply,
                });
            }
        }
    }

    /// A block entered the store: every peer still wanting it gets it (or a
    /// HAVE for a want-have).
    pub fn block_stored(&mut self, cid: &Cid, store: &impl BlockSource, out: &mut Vec<Output<P>>) {
        self.pump(store, out);
        self.serve_waiting(cid, true, store, out);
        // A block we wanted that arrived by another path (an import, HTTP).
        if self.wants.remove(cid).is_some() {
            self.remember_settled(*cid);
            self.cancel_asks(cid, None, out);
        }
    }

    fn remember_settled(&mut self, cid: Cid) {
        if self.settled_set.insert(cid) {
            self.settled.push_back(cid);
            while self.settled.len() > self.config.remembered_settled {
                if let Some(old) = self.settled.pop_front() {
                    self.settled_set.remove(&old);
                }
            }
        }
    }

    /// Rations `cid`: it is sent to at most `copies` peers (those that ask
    /// first); later want-blocks are answered DONT_HAVE, so those peers
    /// fetch it from the ones that have it, until [`Engine::end_ration`].
    /// Rationing a block again resets its count.
    pub fn ration(&mut self, cid: Cid, copies: usize) {
        self.rationed.insert(cid, copies);
    }

    /// Paces `cid` from now on: its copies count against
    /// [`EngineConfig::max_paced_bytes`]. A live node paces the blocks of
    /// every segment it publishes or fetches.
    pub fn pace(&mut self, cid: Cid) {
        if self.paced.insert(cid) {
            self.paced_order.push_back(cid);
            while self.paced_order.len() > self.config.max_paced_blocks {
                if let Some(old) = self.paced_order.pop_front() {
                    self.paced.remove(&old);
                }
            }
        }
    }

    /// Ends the ration of `cid`: peers still waiting for it are sent it.
    pub fn end_ration(&mut self, cid: &Cid, store: &impl BlockSource, out: &mut Vec<Output<P>>) {
        if self.rationed.remove(cid).is_some() {
            // Want-haves were answered HAVE already.
            self.serve_waiting(cid, false, store, out);
        }
    }

    /// Blocks under a ration.
    #[cfg(test)]
    fn rationed(&self) -> usize {
        self.rationed.len()
    }

    /// Serves every peer with an open want for `cid`: the block for a
    /// want-block, and a HAVE for a want-have if `haves`.
    fn serve_waiting(
        &mut self,
        cid: &Cid,
        haves: bool,
        store: &impl BlockSource,
        out: &mut Vec<Output<P>>,
    ) {
        let waiting: Vec<(P, WantType)> = self
            .peers
            .iter()
            .filter_map(|(p, s)| {
                s.wants
                    .get(cid)
                    .filter(|w| !w.refused)
                    .map(|w| (p.clone(), w.want_type))
            })
            .filter(|(_, t)| haves || *t == WantType::Block)
            .collect();
        for (peer, want_type) in waiting {
            let mut reply = Outgoing::default();
            if let Some(state) = self.peers.get_mut(&peer) {
                match want_type {
                    WantType::Have => state.answer(*cid, Presence::Have),
                    WantType::Block if !state.deferred.contains(cid) => {
                        state.deferred.push_back(*cid)
                    }
                    WantType::Block => {}
                }
            }
            self.fill_queue(&peer, store, &mut reply);
            if !reply.is_empty() {
                out.push(Output::Send {
                    peer,
                    message: reply,
                });
            }
        }
    }

    /// Wants dropped from a peer because its wantlist was full.
    #[cfg(test)]
    fn dropped_wants(&self, peer: &P) -> u64 {
        self.peers.get(peer).map_or(0, |s| s.dropped_wants)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitswap::wire::WireBlock;
    use crate::block::{Codec, cid_of};

    #[derive(Default)]
    struct Store(HashMap<Cid, usize>);
    impl BlockSource for Store {
        fn block_size(&self, cid: &Cid) -> Option<usize> {
            self.0.get(cid).copied()
        }
    }

    fn want(cid: Cid, want_type: WantType, send_dont_have: bool) -> WantEntry {
        WantEntry {
            cid,
            priority: 1,
            cancel: false,
            want_type,
            send_dont_have,
        }
    }

    /// A raw block of `data`.
    fn block(data: &[u8]) -> WireBlock {
        WireBlock {
            cid: cid_of(Codec::Raw, data),
            data: data.to_vec(),
        }
    }

    /// A message carrying `b` alone.
    fn msg(b: &WireBlock) -> Message {
        Message {
            blocks: vec![b.clone()],
            ..Message::default()
        }
    }

    fn wants_msg(entries: Vec<WantEntry>) -> Message {
        Message {
            wantlist: entries,
            ..Message::default()
        }
    }

    fn sends(out: &[Output<u32>]) -> Vec<(u32, Outgoing)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { peer, message } => Some((*peer, message.clone())),
                _ => None,
            })
            .collect()
    }

    /// One message to `peer` carrying only `presence` for `cid`.
    fn presence_only(peer: u32, cid: Cid, presence: Presence) -> Vec<(u32, Outgoing)> {
        vec![(
            peer,
            Outgoing {
                presences: vec![(cid, presence)],
                queued_presences: 1,
                ..Outgoing::default()
            },
        )]
    }

    #[test]
    fn want_before_the_block_exists_is_served_when_it_arrives() {
        let mut e = Engine::new(EngineConfig::default());
        let mut store = Store::default();
        let cid = cid_of(Codec::Raw, b"later");
        let mut out = Vec::new();
        e.peer_connected(7u32);
        e.peer_connected(8u32);
        e.on_message(
            &7,
            wants_msg(vec![want(cid, WantType::Block, true)]),
            &store,
            &mut out,
        );
        e.on_message(
            &8,
            wants_msg(vec![want(cid, WantType::Have, false)]),
            &store,
            &mut out,
        );
        // Peer 7 hears DONT_HAVE (it asked for it); peer 8 hears nothing.
        assert_eq!(sends(&out), presence_only(7, cid, Presence::DontHave));
        out.clear();

        store.0.insert(cid, 5);
        e.block_stored(&cid, &store, &mut out);
        let mut s = sends(&out);
        s.sort_by_key(|(p, _)| *p);
        assert_eq!(s[0].0, 7);
        assert_eq!(s[0].1.blocks, vec![cid]);
        assert_eq!(s[1..], presence_only(8, cid, Presence::Have));
        // Sent once: the want of peer 7 is closed.
        out.clear();
        e.block_stored(&cid, &store, &mut out);
        assert!(
            sends(&out)
                .iter()
                .all(|(p, m)| *p != 7 || m.blocks.is_empty())
        );
    }

    #[test]
    fn a_rationed_block_goes_to_a_few_peers_until_the_ration_ends() {
        let mut e = Engine::new(EngineConfig::default());
        let mut store = Store::default();
        let cid = cid_of(Codec::Raw, b"fresh shard");
        store.0.insert(cid, 5);
        e.ration(cid, 2);
        let mut out = Vec::new();
        // Five peers ask for it; the last one without asking for DONT_HAVE.
        for p in 1u32..=5 {
            e.on_message(
                &p,
                wants_msg(vec![want(cid, WantType::Block, p != 5)]),
                &store,
                &mut out,
            );
        }
        let mut s = sends(&out);
        s.sort_by_key(|(p, _)| *p);
        let served: Vec<u32> = s
            .iter()
            .filter(|(_, m)| m.blocks == vec![cid])
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(served, vec![1, 2], "the first two askers get it");
        let refused: Vec<u32> = s
            .iter()
            .filter(|(_, m)| m.presences == vec![(cid, Presence::DontHave)])
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(refused, vec![3, 4], "the others hear DONT_HAVE");
        assert!(s.iter().all(|(p, _)| *p != 5), "5 asked to hear nothing");

        // A new want-have hears HAVE.
        out.clear();
        e.on_message(
            &6,
            wants_msg(vec![want(cid, WantType::Have, true)]),
            &store,
            &mut out,
        );
        assert_eq!(sends(&out), presence_only(6, cid, Presence::Have));
        // Peer 3 asks again while the ration lasts: refused again.
        out.clear();
        e.on_message(
            &3,
            wants_msg(vec![want(cid, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert_eq!(sends(&out), presence_only(3, cid, Presence::DontHave));

        // The ration ends: the refused wants were closed by their DONT_HAVE
        // (3 and 4 ask again if they still need it); 5, which could not be
        // told, gets it. No one gets a second copy or another HAVE.
        out.clear();
        e.end_ration(&cid, &store, &mut out);
        let mut s = sends(&out);
        s.sort_by_key(|(p, _)| *p);
        assert_eq!(
            s.iter()
                .map(|(p, m)| (*p, m.blocks.clone()))
                .collect::<Vec<_>>(),
            vec![(5, vec![cid])]
        );
        // Asked after the end, it goes at once.
        out.clear();
        e.on_message(
            &3,
            wants_msg(vec![want(cid, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert_eq!(sends(&out)[0].1.blocks, vec![cid]);
        assert!(s.iter().all(|(_, m)| m.presences.is_empty()));
        assert_eq!(e.rationed(), 0);
        // Ending it twice does nothing.
        out.clear();
        e.end_ration(&cid, &store, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn refusals_a_peer_does_not_read_hold_no_more_than_its_wantlist() {
        let config = EngineConfig {
            max_peer_wants: 2,
            max_queued_presences: 1,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let cids: Vec<Cid> = (0u8..6).map(|i| cid_of(Codec::Raw, &[i])).collect();
        for c in &cids {
            store.0.insert(*c, 5);
            e.ration(*c, 0);
        }
        let mut out = Vec::new();
        // Three asks: two fit the wantlist; both are refused, and one
        // DONT_HAVE goes out (the other waits for room).
        let asks = |range: std::ops::Range<usize>| {
            wants_msg(
                cids[range]
                    .iter()
                    .map(|c| want(*c, WantType::Block, true))
                    .collect(),
            )
        };
        e.on_message(&1, asks(0..3), &store, &mut out);
        assert_eq!(e.dropped_wants(&1), 1);
        // The peer reads nothing and asks on: the refusal still waiting
        // keeps its place, so only one more fits, and the rest is dropped.
        e.on_message(&1, asks(3..6), &store, &mut out);
        assert_eq!(e.dropped_wants(&1), 3);
        assert_eq!(e.peer_want_count(&1), 2);
    }

    #[test]
    fn paced_blocks_wait_in_the_engine_where_a_cancel_still_stops_them() {
        let config = EngineConfig {
            max_paced_bytes: 150,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let live = cid_of(Codec::Raw, b"new live shard");
        let bulk = cid_of(Codec::Raw, b"file shard");
        store.0.insert(live, 100);
        store.0.insert(bulk, 100);
        e.pace(live);
        let mut out = Vec::new();
        // Four peers ask for the live shard: one copy fits the paced
        // bytes, the other three wait in turn.
        for p in 1u32..=4 {
            e.on_message(
                &p,
                wants_msg(vec![want(live, WantType::Block, true)]),
                &store,
                &mut out,
            );
        }
        let served = |out: &[Output<u32>]| -> Vec<u32> {
            let mut v: Vec<u32> = sends(out)
                .iter()
                .filter(|(_, m)| m.blocks.contains(&live))
                .map(|(p, _)| *p)
                .collect();
            v.sort();
            v
        };
        assert_eq!(served(&out), vec![1]);
        // Pacing is for live shards only: a file's block goes at once.
        out.clear();
        e.on_message(
            &1,
            wants_msg(vec![want(bulk, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert_eq!(sends(&out)[0].1.blocks, vec![bulk]);
        // Peer 3 got the shard elsewhere and cancels while it waits.
        let mut cancel = want(live, WantType::Block, false);
        cancel.cancel = true;
        e.on_message(&3, wants_msg(vec![cancel]), &store, &mut out);
        // Peer 1's copy is out: the next in turn gets one.
        out.clear();
        e.sent(&1, 100, 0, &store, &mut out);
        assert_eq!(served(&out), vec![2]);
        out.clear();
        e.sent(&2, 100, 0, &store, &mut out);
        assert_eq!(served(&out), vec![4], "peer 3 cancelled and gets nothing");
        // Peer 4 leaves with its copy unsent: the room is not lost.
        e.peer_disconnected(&4);
        out.clear();
        e.on_message(
            &5,
            wants_msg(vec![want(live, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert_eq!(served(&out), vec![5]);
    }

    #[test]
    fn a_lowered_paced_limit_holds_copies_back_until_it_is_raised() {
        let config = EngineConfig {
            max_paced_bytes: 250,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let live = cid_of(Codec::Raw, b"live shard");
        store.0.insert(live, 100);
        e.pace(live);
        let mut out = Vec::new();
        // The uplink is slow: room for one copy, not two.
        e.set_paced_limit(150, &store, &mut out);
        for p in 1u32..=3 {
            e.on_message(
                &p,
                wants_msg(vec![want(live, WantType::Block, true)]),
                &store,
                &mut out,
            );
        }
        let served = |out: &[Output<u32>]| -> usize {
            sends(out)
                .iter()
                .filter(|(_, m)| m.blocks.contains(&live))
                .count()
        };
        assert_eq!(served(&out), 1);
        // Raised past the ceiling, it stops at the ceiling: the waiting
        // copies go out as far as it allows, two in all.
        out.clear();
        e.set_paced_limit(usize::MAX, &store, &mut out);
        assert_eq!(served(&out), 1);
    }

    #[test]
    fn a_peer_slow_to_take_its_paced_blocks_does_not_hold_up_the_others() {
        let config = EngineConfig {
            max_paced_bytes: 150,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let first = cid_of(Codec::Raw, b"shard one");
        let second = cid_of(Codec::Raw, b"shard two");
        for c in [first, second] {
            store.0.insert(c, 100);
            e.pace(c);
        }
        let served = |out: &[Output<u32>], cid: Cid| -> Vec<u32> {
            sends(out)
                .iter()
                .filter(|(_, m)| m.blocks.contains(&cid))
                .map(|(p, _)| *p)
                .collect()
        };
        let mut out = Vec::new();
        // Peer 1 (cut off, say) takes the room; peer 2 waits for it.
        for p in [1u32, 2] {
            e.on_message(
                &p,
                wants_msg(vec![
                    want(first, WantType::Block, true),
                    want(second, WantType::Block, true),
                ]),
                &store,
                &mut out,
            );
        }
        assert_eq!(served(&out, first), vec![1]);
        // Peer 1's message is slow to write: peer 2 is served at once.
        out.clear();
        e.write_slow(&1, &store, &mut out);
        assert_eq!(served(&out, first), vec![2]);
        // Reported again, nothing changes.
        out.clear();
        e.write_slow(&1, &store, &mut out);
        assert!(out.is_empty());
        // Peer 2 takes its copy; its next shard goes out, but peer 1,
        // still holding its first, gets no more while it is slow.
        e.sent(&2, 100, 0, &store, &mut out);
        assert_eq!(served(&out, second), vec![2]);
        // Peer 1's write ends: it is served again, within the budget.
        out.clear();
        e.sent(&2, 100, 0, &store, &mut out);
        e.sent(&1, 100, 0, &store, &mut out);
        assert_eq!(served(&out, second), vec![1]);
        // And its bytes count again: a third peer waits behind them.
        let third = cid_of(Codec::Raw, b"shard three");
        store.0.insert(third, 100);
        e.pace(third);
        out.clear();
        e.on_message(
            &3,
            wants_msg(vec![want(third, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert!(served(&out, third).is_empty());
        // A slow peer that leaves gives nothing back twice.
        e.write_slow(&1, &store, &mut out);
        assert_eq!(served(&out, third), vec![3]);
        e.peer_disconnected(&1);
        e.sent(&3, 100, 0, &store, &mut out);
        assert_eq!(e.paced_queued, 0);
        // A peer whose writer is stuck on a message without blocks gets
        // no paced block until the node reports that message written.
        e.peer_connected(4);
        e.write_slow(&4, &store, &mut out);
        out.clear();
        e.on_message(
            &4,
            wants_msg(vec![want(third, WantType::Block, true)]),
            &store,
            &mut out,
        );
        assert!(served(&out, third).is_empty());
        e.sent(&4, 0, 0, &store, &mut out);
        assert_eq!(served(&out, third), vec![4]);
    }

    #[test]
    fn a_cancelled_want_is_not_served() {
        let mut e = Engine::new(EngineConfig::default());
        let mut store = Store::default();
        let cid = cid_of(Codec::Raw, b"x");
        let mut out = Vec::new();
        e.on_message(
            &1u32,
            wants_msg(vec![want(cid, WantType::Block, false)]),
            &store,
            &mut out,
        );
        let mut cancel = want(cid, WantType::Block, false);
        cancel.cancel = true;
        e.on_message(&1, wants_msg(vec![cancel]), &store, &mut out);
        store.0.insert(cid, 1);
        out.clear();
        e.block_stored(&cid, &store, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn received_blocks_name_their_sender_and_cancel_the_rest() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let data = b"shard".to_vec();
        let cid = cid_of(Codec::Raw, &data);
        let mut out = Vec::new();
        for p in [1u32, 2, 3] {
            e.peer_connected(p);
            e.want(&p, cid, WantType::Block, &mut out);
        }
        out.clear();
        let msg = Message {
            blocks: vec![WireBlock {
                cid,
                data: data.clone(),
            }],
            ..Message::default()
        };
        e.on_message(&2, msg.clone(), &store, &mut out);
        assert!(out.contains(&Output::Received {
            peer: 2,
            cid,
            data: data.clone()
        }));
        let mut cancelled: Vec<u32> = sends(&out)
            .into_iter()
            .filter(|(_, m)| m.wantlist.iter().any(|w| w.cancel && w.cid == cid))
            .map(|(p, _)| p)
            .collect();
        cancelled.sort();
        assert_eq!(cancelled, vec![1, 3]);
        // Peer 1's copy was already on its way: late, not misbehaviour.
        out.clear();
        e.on_message(&1, msg, &store, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn an_unrequested_block_disconnects_the_sender() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let wanted = cid_of(Codec::Raw, b"good");
        let mut out = Vec::new();
        e.peer_connected(9u32);
        e.want(&9, wanted, WantType::Block, &mut out);
        out.clear();
        // The peer "answers" with corrupted bytes: their CID is not the one
        // asked for.
        let bad = WireBlock {
            cid: cid_of(Codec::Raw, b"g00d"),
            data: b"g00d".to_vec(),
        };
        e.on_message(
            &9,
            Message {
                blocks: vec![bad.clone()],
                ..Message::default()
            },
            &store,
            &mut out,
        );
        assert_eq!(
            out,
            vec![Output::Disconnect {
                peer: 9,
                reason: Misbehaviour::UnrequestedBlock(bad.cid)
            }]
        );
        // The want is still open, to be asked of someone else.
        assert!(e.wants().any(|(c, _)| *c == wanted));
    }

    #[test]
    fn a_wanted_block_is_taken_from_anyone_and_a_lately_received_one_is_only_late() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let x = block(b"x");
        let mut out = Vec::new();
        for p in [1u32, 2, 3] {
            e.peer_connected(p);
        }
        e.want(&1, x.cid, WantType::Block, &mut out);
        out.clear();
        // Peer 2 was not asked but sends what we want: taken.
        e.on_message(&2, msg(&x), &store, &mut out);
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Received { peer: 2, .. }))
        );
        assert!(!out.iter().any(|o| matches!(o, Output::Disconnect { .. })));
        // Peer 1 reconnects (what we asked it is forgotten) and its copy,
        // queued before, arrives: late, not misbehaviour.
        let _ = e.peer_disconnected(&1);
        e.peer_connected(1);
        out.clear();
        e.on_message(&1, msg(&x), &store, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A block nobody wanted still costs the sender its connection.
        let y = block(b"y");
        e.on_message(&3, msg(&y), &store, &mut out);
        assert_eq!(
            out,
            vec![Output::Disconnect {
                peer: 3,
                reason: Misbehaviour::UnrequestedBlock(y.cid)
            }]
        );
    }

    #[test]
    fn a_copy_of_a_block_given_up_is_late_until_the_node_forgets_it() {
        let config = EngineConfig {
            remembered_settled: 2,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let store = Store::default();
        let (x, y, z) = (block(b"x"), block(b"y"), block(b"z"));
        let mut out = Vec::new();
        for p in [1u32, 2, 3] {
            e.peer_connected(p);
        }
        for b in [&x, &y] {
            e.want(&1, b.cid, WantType::Block, &mut out);
            e.want(&2, b.cid, WantType::Have, &mut out);
        }
        e.cancel(&x.cid, &mut out);
        out.clear();
        // Both peers asked for x were cancelled; their copies, already on
        // their way, are late.
        e.on_message(&1, msg(&x), &store, &mut out);
        e.on_message(&2, msg(&x), &store, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // The record is the node's, bounded: two more settled blocks (y
        // given up, z received) push x out, and a copy of x is then
        // unrequested.
        e.cancel(&y.cid, &mut out);
        e.want(&3, z.cid, WantType::Block, &mut out);
        e.on_message(&3, msg(&z), &store, &mut out);
        out.clear();
        e.on_message(&2, msg(&y), &store, &mut out);
        assert!(out.is_empty(), "y is still late: {out:?}");
        e.on_message(&1, msg(&x), &store, &mut out);
        assert_eq!(
            out,
            vec![Output::Disconnect {
                peer: 1,
                reason: Misbehaviour::UnrequestedBlock(x.cid)
            }]
        );
    }

    #[test]
    fn wantlists_and_queues_are_bounded() {
        let config = EngineConfig {
            max_peer_wants: 10,
            max_queued_bytes: 100,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let cids: Vec<Cid> = (0..20u8).map(|i| cid_of(Codec::Raw, &[i])).collect();
        for c in &cids {
            store.0.insert(*c, 40);
        }
        let mut out = Vec::new();
        let entries = cids
            .iter()
            .map(|c| want(*c, WantType::Block, false))
            .collect();
        e.on_message(&1u32, wants_msg(entries), &store, &mut out);
        assert_eq!(e.peer_want_count(&1) + 2, 10, "two were sent and closed");
        assert_eq!(e.dropped_wants(&1), 10);
        // 100 bytes of queue: two 40-byte blocks, the rest wait.
        let s = sends(&out);
        assert_eq!(s[0].1.blocks.len(), 2);
        assert_eq!(e.queued_bytes(&1), 80);
        out.clear();
        e.sent(&1, 80, 0, &store, &mut out);
        assert_eq!(sends(&out)[0].1.blocks.len(), 2);
    }

    #[test]
    fn higher_priority_wants_are_served_first() {
        let config = EngineConfig {
            max_queued_bytes: 10,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let low = cid_of(Codec::Raw, b"low");
        let high = cid_of(Codec::Raw, b"high");
        store.0.insert(low, 10);
        store.0.insert(high, 10);
        let mut entries = vec![
            want(low, WantType::Block, false),
            want(high, WantType::Block, false),
        ];
        entries[0].priority = 1;
        entries[1].priority = 9;
        let mut out = Vec::new();
        e.on_message(&1u32, wants_msg(entries), &store, &mut out);
        // Room for one block: the high-priority one goes first.
        assert_eq!(sends(&out)[0].1.blocks, vec![high]);
    }

    #[test]
    fn full_wantlist_replaces_the_old_one() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let a = cid_of(Codec::Raw, b"a");
        let b = cid_of(Codec::Raw, b"b");
        let mut out = Vec::new();
        e.on_message(
            &1u32,
            wants_msg(vec![want(a, WantType::Block, false)]),
            &store,
            &mut out,
        );
        let mut msg = wants_msg(vec![want(b, WantType::Block, false)]);
        msg.full = true;
        e.on_message(&1, msg, &store, &mut out);
        assert_eq!(e.peer_want_count(&1), 1);
    }

    #[test]
    fn presences_are_reported_only_for_what_was_asked() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let a = cid_of(Codec::Raw, b"a");
        let b = cid_of(Codec::Raw, b"b");
        let mut out = Vec::new();
        e.peer_connected(1u32);
        e.want(&1, a, WantType::Have, &mut out);
        out.clear();
        let msg = Message {
            presences: vec![(a, Presence::Have), (b, Presence::Have)],
            ..Message::default()
        };
        e.on_message(&1, msg, &store, &mut out);
        assert_eq!(
            out,
            vec![Output::Presence {
                peer: 1,
                cid: a,
                presence: Presence::Have
            }]
        );
    }

    /// Answers handed out to `peer` in `out`.
    fn answers(out: &[Output<u32>]) -> Vec<(Cid, Presence)> {
        sends(out)
            .into_iter()
            .flat_map(|(_, m)| m.presences)
            .collect()
    }

    #[test]
    fn a_peer_that_does_not_read_holds_no_more_than_its_wantlist() {
        let config = EngineConfig {
            max_peer_wants: 64,
            max_queued_presences: 8,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let store = Store::default();
        let mut handed = Vec::new();
        // A thousand floods of want-haves for blocks we lack, each asking
        // for DONT_HAVE, and no report that anything was written.
        for round in 0..1000u32 {
            let entries = (0..100u32)
                .map(|i| {
                    let cid = cid_of(Codec::Raw, &(round * 100 + i).to_be_bytes());
                    want(cid, WantType::Have, true)
                })
                .collect();
            let mut out = Vec::new();
            e.on_message(&1u32, wants_msg(entries), &store, &mut out);
            handed.extend(answers(&out));
        }
        assert_eq!(handed.len(), 8, "only the queue's worth is handed out");
        assert_eq!(e.peer_want_count(&1), 64);
        let state = &e.peers[&1];
        assert!(state.pending.len() <= 64 - 8 && state.pending_order.len() == state.pending.len());
        // Once the writer reports them written, the next answers go.
        let mut out = Vec::new();
        e.sent(&1, 0, 8, &store, &mut out);
        assert_eq!(answers(&out).len(), 8);
    }

    #[test]
    fn a_want_repeated_in_one_message_gets_one_answer() {
        let mut e = Engine::new(EngineConfig::default());
        let store = Store::default();
        let cid = cid_of(Codec::Raw, b"absent");
        let mut out = Vec::new();
        let entries = vec![want(cid, WantType::Have, true); 8192];
        e.on_message(&1u32, wants_msg(entries), &store, &mut out);
        assert_eq!(answers(&out), vec![(cid, Presence::DontHave)]);
    }

    #[test]
    fn a_cancel_drops_the_answer_still_waiting() {
        let config = EngineConfig {
            max_queued_presences: 1,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let store = Store::default();
        let (a, b, c) = (
            cid_of(Codec::Raw, b"a"),
            cid_of(Codec::Raw, b"b"),
            cid_of(Codec::Raw, b"c"),
        );
        let mut out = Vec::new();
        let entries = [a, b, c]
            .iter()
            .map(|x| want(*x, WantType::Have, true))
            .collect();
        e.on_message(&1u32, wants_msg(entries), &store, &mut out);
        assert_eq!(answers(&out), vec![(a, Presence::DontHave)]);
        let mut cancel = want(b, WantType::Have, false);
        cancel.cancel = true;
        out.clear();
        e.on_message(&1, wants_msg(vec![cancel]), &store, &mut out);
        assert!(answers(&out).is_empty(), "the queue is still full");
        out.clear();
        e.sent(&1, 0, 1, &store, &mut out);
        assert_eq!(answers(&out), vec![(c, Presence::DontHave)]);
    }

    #[test]
    fn a_want_asked_again_is_sent_again_but_a_want_have_never_follows_a_want_block() {
        let mut e = Engine::new(EngineConfig::default());
        let cid = cid_of(Codec::Raw, b"lost on the way");
        e.peer_connected(2u32);
        let mut out = Vec::new();
        e.want(&2, cid, WantType::Have, &mut out);
        e.want(&2, cid, WantType::Have, &mut out);
        e.want(&2, cid, WantType::Block, &mut out);
        e.want(&2, cid, WantType::Block, &mut out);
        e.want(&2, cid, WantType::Have, &mut out);
        let sent: Vec<WantType> = sends(&out)
            .into_iter()
            .flat_map(|(_, m)| m.wantlist)
            .map(|w| w.want_type)
            .collect();
        use WantType::{Block, Have};
        assert_eq!(sent, vec![Have, Have, Block, Block]);
    }

    #[test]
    fn a_want_block_repeated_while_its_block_waits_for_queue_room_is_served_once() {
        let config = EngineConfig {
            max_queued_bytes: 40,
            ..EngineConfig::default()
        };
        let mut e = Engine::new(config);
        let mut store = Store::default();
        let (a, b) = (cid_of(Codec::Raw, b"a"), cid_of(Codec::Raw, b"b"));
        store.0.insert(a, 40);
        store.0.insert(b, 40);
        let mut out = Vec::new();
        let ask = |c| wants_msg(vec![want(c, WantType::Block, true)]);
        e.on_message(
            &1u32,
            wants_msg(vec![
                want(a, WantType::Block, true),
                want(b, WantType::Block, true),
            ]),
            &store,
            &mut out,
        );
        // The queue holds one: b waits, and is asked for again.
        e.on_message(&1, ask(b), &store, &mut out);
        e.sent(&1, 40, 0, &store, &mut out);
        e.sent(&1, 40, 0, &store, &mut out);
        let blocks: Vec<Cid> = sends(&out)
            .into_iter()
            .flat_map(|(_, m)| m.blocks)
            .collect();
        assert_eq!(blocks, vec![a, b]);
        // Asked once more after b was queued (the first copy may have been
        // lost with its stream): b goes again.
        out.clear();
        e.on_message(&1, ask(b), &store, &mut out);
        let blocks: Vec<Cid> = sends(&out)
            .into_iter()
            .flat_map(|(_, m)| m.blocks)
            .collect();
        assert_eq!(blocks, vec![b]);
    }
}
