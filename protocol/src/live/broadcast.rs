//! One channel this node publishes, as a machine: the pacing and the
//! ration of each new segment's shards (BitTorrent's super-seeding), and
//! when each ration ends.
//!
//! - Every published shard is **paced** ([`BroadcastAction::Pace`]): the
//!   Bitswap engine queues at most its paced-bytes limit of them for all
//!   viewers together, so a cancel still reaches the rest and the next
//!   announcement does not wait behind a backlog.
//! - For [`LiveConfig::ration_window`] after the announcement a shard goes
//!   to the first [`LiveConfig::ration_copies`] viewers that ask
//!   ([`BroadcastAction::Ration`]); the others hear DONT_HAVE and trade.
//!   When the window ends ([`Broadcast::poll_timeout`]), the shards go to
//!   whoever still waits ([`BroadcastAction::EndRation`]). A zero window
//!   rations nothing.
//! - At most [`MAX_RATIONED_SEGMENTS`] segments are under a ration at
//!   once; an older one's ration ends early rather than be forgotten.
//! - The last [`KEEP_SEGMENTS`] segments of each rendition (a segment's
//!   parts count as one) stay in the
//!   store for viewers that come late or fall behind; older ones are let
//!   go ([`BroadcastAction::Release`]), so a broadcast runs for days on a
//!   bounded disk. The node deletes only what nothing else still holds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::block::Cid;
use crate::channel::{Announcement, ChannelError, ChannelId};

use super::planner::{LiveConfig, groups};

/// Segments whose rations may run at once: a 1 s window over 2 s segments
/// holds one or two; 64 covers very short parts without letting a caller
/// that publishes in a loop grow the queue without end.
pub const MAX_RATIONED_SEGMENTS: usize = 64;

/// Segments per rendition the broadcaster keeps in its store after
/// publishing them: a minute of 2 s segments, far more than any viewer's
/// window.
pub const KEEP_SEGMENTS: usize = 30;

/// What a broadcast asks of the node's Bitswap engine and gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BroadcastAction {
    /// Pace these shards (`Engine::pace`).
    Pace(Vec<Cid>),
    /// Ration these shards to `copies` viewers (`Engine::ration`).
    Ration { shards: Vec<Cid>, copies: usize },
    /// The ration of these shards ends (`Engine::end_ration`).
    EndRation(Vec<Cid>),
    /// Publish the announcement on the rendition's topic.
    Gossip { rendition: u16, data: Vec<u8> },
    /// These blocks (an old segment's manifest and shards) need not be
    /// kept for this broadcast any more.
    Release(Vec<Cid>),
}

/// One channel being published. See the module documentation.
pub struct Broadcast {
    channel: ChannelId,
    config: LiveConfig,
    /// Rationed shards and when their ration ends, oldest first.
    rations: VecDeque<(Instant, Vec<Cid>)>,
    /// Per rendition, the blocks of the units kept, oldest first, each
    /// with its segment (itself, or the one it is a part of).
    kept: BTreeMap<u16, VecDeque<(u64, Vec<Cid>)>>,
    actions: VecDeque<BroadcastAction>,
}

impl Broadcast {
    pub fn new(channel: ChannelId, config: LiveConfig) -> Broadcast {
        Broadcast {
            channel,
            config,
            rations: VecDeque::new(),
            kept: BTreeMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// A signed announcement of this channel to publish on `rendition`'s
    /// topic: its shards are paced and rationed before it goes out, so the
    /// viewers that ask the moment they hear of it find the ration in
    /// place. Refused (and not published) if it does not open under this
    /// channel's key.
    pub fn handle_publish(
        &mut self,
        rendition: u16,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<(), ChannelError> {
        let announcement = Announcement::open(&self.channel, &data)?;
        let shards = announcement.manifest.shards;
        let kept = self.kept.entry(rendition).or_default();
        let mut blocks = shards.clone();
        blocks.push(announcement.manifest_cid);
        let group = announcement
            .part
            .map_or(announcement.sequence, |p| p.segment);
        kept.push_back((group, blocks));
        while groups(kept.iter().map(|(g, _)| *g)) > KEEP_SEGMENTS {
            if let Some((_, old)) = kept.pop_front() {
                self.actions.push_back(BroadcastAction::Release(old));
            }
        }
        self.actions
            .push_back(BroadcastAction::Pace(shards.clone()));
        let window = self.config.ration_window;
        if !window.is_zero() {
            self.actions.push_back(BroadcastAction::Ration {
                shards: shards.clone(),
                copies: self.config.ration_copies,
            });
            self.rations.push_back((now + window, shards));
            while self.rations.len() > MAX_RATIONED_SEGMENTS {
                if let Some((_, old)) = self.rations.pop_front() {
                    self.actions.push_back(BroadcastAction::EndRation(old));
                }
            }
        }
        self.actions
            .push_back(BroadcastAction::Gossip { rendition, data });
        Ok(())
    }

    /// Ends the rations that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.rations.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, shards)) = self.rations.pop_front() {
                self.actions.push_back(BroadcastAction::EndRation(shards));
            }
        }
    }

    /// When the oldest ration ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rations.front().map(|(due, _)| *due)
    }

    pub fn poll_action(&mut self) -> Option<BroadcastAction> {
        self.actions.pop_front()
    }

    /// Adds to `held` the blocks of the segments this broadcast keeps.
    pub fn holds(&self, held: &mut std::collections::BTreeSet<Cid>) {
        for segments in self.kept.values() {
            for (_, blocks) in segments {
                held.extend(blocks.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Codec, cid_of};
    use crate::channel::ChannelKey;
    use crate::manifest::{MANIFEST_VERSION, SegmentManifest};
    use std::time::Duration;

    fn announcement(key: &ChannelKey, sequence: u64) -> (Vec<u8>, Vec<Cid>) {
        let shards: Vec<Cid> = (0..3u8)
            .map(|i| cid_of(Codec::Raw, &[i, sequence as u8]))
            .collect();
        let manifest = SegmentManifest {
            version: MANIFEST_VERSION,
            index: sequence,
            length: 96,
            duration_us: Some(2_000_000),
            hash: crate::block::sha256_multihash(&crate::block::sha256(b"x"))
                .to_bytes()
                .to_vec(),
            k: 2,
            m: 1,
            shard_size: 64,
            shards: shards.clone(),
        };
        let (_, bytes) = manifest.to_block();
        let data = key.announce(0, sequence, 1, "s.ts", b"me", bytes);
        (data, shards)
    }

    fn drain(b: &mut Broadcast) -> Vec<BroadcastAction> {
        std::iter::from_fn(|| b.poll_action()).collect()
    }

    #[test]
    fn shards_are_paced_and_rationed_before_the_announcement_goes_out_and_released_when_due() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let config = LiveConfig::default();
        let window = config.ration_window;
        let mut b = Broadcast::new(key.id(), config);
        let t = Instant::now();
        let (data, shards) = announcement(&key, 7);
        b.handle_publish(0, data.clone(), t).unwrap();
        assert_eq!(
            drain(&mut b),
            vec![
                BroadcastAction::Pace(shards.clone()),
                BroadcastAction::Ration {
                    shards: shards.clone(),
                    copies: 2
                },
                BroadcastAction::Gossip { rendition: 0, data }
            ]
        );
        assert_eq!(b.poll_timeout(), Some(t + window));
        b.handle_timeout(t + window - Duration::from_millis(1));
        assert!(drain(&mut b).is_empty());
        b.handle_timeout(t + window);
        assert_eq!(drain(&mut b), vec![BroadcastAction::EndRation(shards)]);
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn the_last_segments_are_kept_and_older_ones_let_go() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let mut b = Broadcast::new(key.id(), LiveConfig::default());
        let t = Instant::now();
        let mut first = Vec::new();
        for sequence in 0..=KEEP_SEGMENTS as u64 {
            let (data, shards) = announcement(&key, sequence);
            if sequence == 0 {
                first = shards;
            }
            b.handle_publish(0, data, t).unwrap();
        }
        let released: Vec<Vec<Cid>> = drain(&mut b)
            .into_iter()
            .filter_map(|a| match a {
                BroadcastAction::Release(blocks) => Some(blocks),
                _ => None,
            })
            .collect();
        assert_eq!(released.len(), 1);
        assert!(first.iter().all(|c| released[0].contains(c)));
        assert_eq!(
            released[0].len(),
            first.len() + 1,
            "its shards and manifest"
        );
        let mut held = std::collections::BTreeSet::new();
        b.holds(&mut held);
        assert!(first.iter().all(|c| !held.contains(c)));
    }

    #[test]
    fn an_announcement_of_another_channel_is_refused_and_nothing_is_rationed() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let other = ChannelKey::from_seed(&[4; 32]);
        let mut b = Broadcast::new(key.id(), LiveConfig::default());
        let (data, _) = announcement(&other, 1);
        assert!(b.handle_publish(0, data, Instant::now()).is_err());
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn without_a_ration_window_shards_are_only_paced() {
        let key = ChannelKey::from_seed(&[3; 32]);
        let config = LiveConfig {
            ration_window: Duration::ZERO,
            ..LiveConfig::default()
        };
        let mut b = Broadcast::new(key.id(), config);
        let (data, shards) = announcement(&key, 1);
        b.handle_publish(0, data.clone(), Instant::now()).unwrap();
        assert_eq!(
            drain(&mut b),
            vec![
                BroadcastAction::Pace(shards),
                BroadcastAction::Gossip { rendition: 0, data }
            ]
        );
        assert_eq!(b.poll_timeout(), None);
    }
}
