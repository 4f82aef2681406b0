//! The Bitswap wire format (IPFS Bitswap 1.0.0, 1.1.0 and 1.2.0).
//!
//! A message is a protobuf, sent with an unsigned-varint length prefix:
//!
//! ```text
//! Message      { Wantlist wantlist = 1; repeated bytes blocks = 2;  // 1.0.0
//!                repeated Block payload = 3;                        // 1.1.0+
//!                repeated BlockPresence blockPresences = 4;         // 1.2.0
//!                int32 pendingBytes = 5; }
//! Wantlist     { repeated Entry entries = 1; bool full = 2; }
//! Entry        { bytes block = 1; int32 priority = 2; bool cancel = 3;
//!                WantType wantType = 4; bool sendDontHave = 5; }    // 4, 5: 1.2.0
//! Block        { bytes prefix = 1; bytes data = 2; }
//! BlockPresence{ bytes cid = 1; BlockPresenceType type = 2; }
//! ```
//!
//! The codec is written by hand, not generated, so that every limit is
//! checked before anything is allocated: the frame length against
//! [`MAX_MESSAGE_SIZE`] before the frame is buffered, and every repeated
//! field and byte string against its own limit while decoding. Unknown
//! fields are skipped, as protobuf requires.

use cid::Cid;

use crate::block::{self, BLAKE3, SHA2_256};

/// Largest message read or written, as in the IPFS implementations. Larger
/// replies are split ([`split_blocks`]).
pub const MAX_MESSAGE_SIZE: usize = 4 << 20;

/// Blocks written in one message, at most, unless a single block is larger
/// ([`split_blocks`]). A receiver acts on a block only once its whole
/// message has arrived: eight 410 KiB shards answered in one 3.3 MB message
/// reached a fetcher together after 1.4 s at 20 Mb/s, and its next asks
/// left only then, so every peer's link paused a round trip per message
/// (four seeders reached 87–90% of their links; message by message, 92–93%).
/// 64 KiB is 50 ms at 10 Mb/s; Kubo's engine aims at 16 KiB.
pub const TARGET_MESSAGE_SIZE: usize = 64 << 10;

/// Most wantlist entries in one message. Kubo sends at most a few hundred;
/// a full wantlist of a large fetch stays well under this.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 8192;

/// Most block presences in one message.
pub const MAX_PRESENCES_PER_MESSAGE: usize = 8192;

/// Most blocks in one message. Decoding a block costs its hash and about
/// a hundred bytes beside its data, so a 4 MiB frame of tiny blocks must not
/// be read block by block without end; 1024 is 4 KiB a block at the frame
/// limit, smaller than any block shoal makes and than the usual IPFS chunk.
pub const MAX_BLOCKS_PER_MESSAGE: usize = 1024;

/// Longest CID accepted (a CIDv1 with a 64-byte digest is 70 bytes).
const MAX_CID_BYTES: usize = 128;

/// Largest block accepted in a message: the IPFS limit. Larger than shoal's
/// own blocks, so that a peer's legitimate block is decoded and then
/// judged, not mistaken for a malformed message.
pub const MAX_WIRE_BLOCK: usize = 2 << 20;

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message of {0} bytes is over the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(u64),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("message has more than {0} {1}")]
    TooMany(usize, &'static str),
}

/// What a want asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WantType {
    /// The block itself.
    Block,
    /// Only whether the peer has it.
    Have,
}

/// One wantlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantEntry {
    pub cid: Cid,
    pub priority: i32,
    pub cancel: bool,
    pub want_type: WantType,
    pub send_dont_have: bool,
}

/// A peer's answer about a CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Presence {
    Have,
    DontHave,
}

/// A block in a message, with the CID computed from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireBlock {
    pub cid: Cid,
    pub data: Vec<u8>,
}

/// One Bitswap message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub wantlist: Vec<WantEntry>,
    /// Whether `wantlist` replaces the peer's whole wantlist.
    pub full: bool,
    pub blocks: Vec<WireBlock>,
    /// Blocks whose CID could not be computed (an unsupported hash): kept as
    /// a count so the receiver can judge the sender.
    pub unreadable_blocks: usize,
    pub presences: Vec<(Cid, Presence)>,
    pub pending_bytes: i32,
}

impl Message {
    pub fn is_empty(&self) -> bool {
        self.wantlist.is_empty()
            && !self.full
            && self.blocks.is_empty()
            && self.presences.is_empty()
    }

    /// Encodes the message body (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_prefix(false)
    }

    /// Encodes with the unsigned-varint length prefix.
    pub fn encode_framed(&self) -> Vec<u8> {
        self.encode_with_prefix(true)
    }

    /// Block data is the bulk of a message and is copied once, straight
    /// into the output: its length is known from the sizes alone, so only
    /// the small parts (wantlist, presences) are built separately first.
    fn encode_with_prefix(&self, framed: bool) -> Vec<u8> {
        let head = self.encode_wantlist();
        let tail = self.encode_presences();
        let prefixes: Vec<Vec<u8>> = self.blocks.iter().map(|b| cid_prefix(&b.cid)).collect();
        let block_len =
            |prefix: &[u8], data: &[u8]| field_len(1, prefix.len()) + field_len(2, data.len());
        let body_len = head.len()
            + tail.len()
            + self
                .blocks
                .iter()
                .zip(&prefixes)
                .map(|(b, p)| field_len(3, block_len(p, &b.data)))
                .sum::<usize>();
        let mut out = Vec::with_capacity(body_len + 10);
        if framed {
            put_varint(&mut out, body_len as u64);
        }
        out.extend_from_slice(&head);
        for (b, prefix) in self.blocks.iter().zip(&prefixes) {
            put_varint(&mut out, (3 << 3) | u64::from(LEN));
            put_varint(&mut out, block_len(prefix, &b.data) as u64);
            put_bytes(&mut out, 1, prefix);
            put_bytes(&mut out, 2, &b.data);
        }
        out.extend_from_slice(&tail);
        out
    }

    /// Field 1 (the wantlist), or nothing.
    fn encode_wantlist(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.wantlist.is_empty() && !self.full {
            return out;
        }
        let mut wl = Vec::with_capacity(self.wantlist.len() * 48 + 2);
        for e in &self.wantlist {
            let mut entry = Vec::with_capacity(e.cid.encoded_len() + 16);
            put_bytes(&mut entry, 1, &e.cid.to_bytes());
            if e.priority != 0 {
                put_varint_field(&mut entry, 2, e.priority as i64 as u64);
            }
            if e.cancel {
                put_varint_field(&mut entry, 3, 1);
            }
            if e.want_type == WantType::Have {
                put_varint_field(&mut entry, 4, 1);
            }
            if e.send_dont_have {
                put_varint_field(&mut entry, 5, 1);
            }
            put_bytes(&mut wl, 1, &entry);
        }
        if self.full {
            put_varint_field(&mut wl, 2, 1);
        }
        put_bytes(&mut out, 1, &wl);
        out
    }

    /// Fields 4 (presences) and 5 (pending bytes).
    fn encode_presences(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.presences.len() * 48 + 8);
        for (cid, presence) in &self.presences {
            let mut p = Vec::with_capacity(cid.encoded_len() + 4);
            put_bytes(&mut p, 1, &cid.to_bytes());
            if *presence == Presence::DontHave {
                put_varint_field(&mut p, 2, 1);
            }
            put_bytes(&mut out, 4, &p);
        }
        if self.pending_bytes != 0 {
            put_varint_field(&mut out, 5, self.pending_bytes as i64 as u64);
        }
        out
    }

    /// Decodes a message body (the length prefix already removed).
    pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
        if buf.len() > MAX_MESSAGE_SIZE {
            return Err(WireError::TooLarge(buf.len() as u64));
        }
        let mut msg = Message::default();
        let mut r = Reader(buf);
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, LEN) => decode_wantlist(r.bytes()?, &mut msg)?,
                (2, LEN) => {
                    // Bitswap 1.0.0: the bytes of a CIDv0 (dag-pb, sha2-256) block.
                    let data = r.bytes()?;
                    check_block(data, &msg)?;
                    let digest = block::sha256(data);
                    let cid = Cid::new_v0(block::sha256_multihash(&digest))
                        .map_err(|_| WireError::Malformed("CIDv0"))?;
                    msg.blocks.push(WireBlock {
                        cid,
                        data: data.to_vec(),
                    });
                }
                (3, LEN) => decode_payload(r.bytes()?, &mut msg)?,
                (4, LEN) => {
                    if msg.presences.len() == MAX_PRESENCES_PER_MESSAGE {
                        return Err(WireError::TooMany(MAX_PRESENCES_PER_MESSAGE, "presences"));
                    }
                    let mut p = Reader(r.bytes()?);
                    let (mut cid, mut kind) = (None, Presence::Have);
                    while let Some((f, w)) = p.key()? {
                        match (f, w) {
                            (1, LEN) => cid = Some(read_cid(p.bytes()?)?),
                            (2, VARINT) => {
                                kind = match p.varint()? {
                                    0 => Presence::Have,
                                    1 => Presence::DontHave,
                                    _ => return Err(WireError::Malformed("presence type")),
                                }
                            }
                            _ => p.skip(w)?,
                        }
                    }
                    let cid = cid.ok_or(WireError::Malformed("presence without CID"))?;
                    msg.presences.push((cid, kind));
                }
                (5, VARINT) => msg.pending_bytes = r.varint()? as i32,
                _ => r.skip(wire)?,
            }
        }
        Ok(msg)
    }
}

/// Checks a block before anything is computed or copied for it: not
/// empty (no content of shoal's or IPFS's is an empty block, and empty
/// blocks are the cheapest way to make a decoder count), not over
/// [`MAX_WIRE_BLOCK`], and within [`MAX_BLOCKS_PER_MESSAGE`].
fn check_block(data: &[u8], msg: &Message) -> Result<(), WireError> {
    if data.is_empty() {
        return Err(WireError::Malformed("empty block"));
    }
    if data.len() > MAX_WIRE_BLOCK {
        return Err(WireError::Malformed("block over 2 MiB"));
    }
    if msg.blocks.len() + msg.unreadable_blocks >= MAX_BLOCKS_PER_MESSAGE {
        return Err(WireError::TooMany(MAX_BLOCKS_PER_MESSAGE, "blocks"));
    }
    Ok(())
}

fn decode_wantlist(buf: &[u8], msg: &mut Message) -> Result<(), WireError> {
    let mut r = Reader(buf);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => {
                if msg.wantlist.len() == MAX_ENTRIES_PER_MESSAGE {
                    return Err(WireError::TooMany(
                        MAX_ENTRIES_PER_MESSAGE,
                        "wantlist entries",
                    ));
                }
                let mut e = Reader(r.bytes()?);
                let mut entry = WantEntry {
                    cid: Cid::default(),
                    priority: 0,
                    cancel: false,
                    want_type: WantType::Block,
                    send_dont_have: false,
                };
                let mut has_cid = false;
                while let Some((f, w)) = e.key()? {
                    match (f, w) {
                        (1, LEN) => {
                            entry.cid = read_cid(e.bytes()?)?;
                            has_cid = true;
                        }
                        (2, VARINT) => entry.priority = e.varint()? as i32,
                        (3, VARINT) => entry.cancel = e.varint()? != 0,
                        (4, VARINT) => {
                            entry.want_type = match e.varint()? {
                                0 => WantType::Block,
                                1 => WantType::Have,
                                _ => return Err(WireError::Malformed("want type")),
                            }
                        }
                        (5, VARINT) => entry.send_dont_have = e.varint()? != 0,
                        _ => e.skip(w)?,
                    }
                }
                if !has_cid {
                    return Err(WireError::Malformed("wantlist entry without CID"));
                }
                msg.wantlist.push(entry);
            }
            (2, VARINT) => msg.full = r.varint()? != 0,
            _ => r.skip(wire)?,
        }
    }
    Ok(())
}

fn decode_payload(buf: &[u8], msg: &mut Message) -> Result<(), WireError> {
    let mut r = Reader(buf);
    let (mut prefix, mut data) = (None, None);
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, LEN) => prefix = Some(r.bytes()?),
            (2, LEN) => data = Some(r.bytes()?),
            _ => r.skip(wire)?,
        }
    }
    let (prefix, data) = match (prefix, data) {
        (Some(p), Some(d)) => (p, d),
        _ => return Err(WireError::Malformed("block without prefix or data")),
    };
    check_block(data, msg)?;
    match cid_from_prefix(prefix, data)? {
        Some(cid) => msg.blocks.push(WireBlock {
            cid,
            data: data.to_vec(),
        }),
        None => msg.unreadable_blocks += 1,
    }
    Ok(())
}

/// The CID prefix of Bitswap 1.1.0: version, codec, multihash code and
/// digest length, as varints.
pub fn cid_prefix(cid: &Cid) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    put_varint(&mut out, cid.version() as u64);
    put_varint(&mut out, cid.codec());
    put_varint(&mut out, cid.hash().code());
    put_varint(&mut out, u64::from(cid.hash().size()));
    out
}

/// Computes the CID of `data` under `prefix`; `None` for a hash function
/// shoal does not implement.
fn cid_from_prefix(prefix: &[u8], data: &[u8]) -> Result<Option<Cid>, WireError> {
    let mut r = Reader(prefix);
    let version = r.varint()?;
    let codec = r.varint()?;
    let code = r.varint()?;
    let len = r.varint()?;
    let digest: Vec<u8> = match code {
        SHA2_256 => block::sha256(data).to_vec(),
        BLAKE3 => blake3::hash(data).as_bytes().to_vec(),
        _ => return Ok(None),
    };
    if len != digest.len() as u64 {
        return Err(WireError::Malformed("CID prefix digest length"));
    }
    let mh = cid::multihash::Multihash::<64>::wrap(code, &digest)
        .map_err(|_| WireError::Malformed("multihash"))?;
    let cid = match version {
        0 if codec == 0x70 && code == SHA2_256 => {
            Cid::new_v0(mh).map_err(|_| WireError::Malformed("CIDv0"))?
        }
        1 => Cid::new_v1(codec, mh),
        _ => return Err(WireError::Malformed("CID version")),
    };
    Ok(Some(cid))
}

fn read_cid(bytes: &[u8]) -> Result<Cid, WireError> {
    if bytes.len() > MAX_CID_BYTES {
        return Err(WireError::Malformed("CID too long"));
    }
    Cid::try_from(bytes).map_err(|_| WireError::Malformed("CID"))
}

/// Groups blocks into messages of about [`TARGET_MESSAGE_SIZE`] (a larger
/// block goes alone), each under [`MAX_MESSAGE_SIZE`] and
/// [`MAX_BLOCKS_PER_MESSAGE`]; the first message also carries `presences`.
pub fn split_blocks(blocks: Vec<WireBlock>, presences: Vec<(Cid, Presence)>) -> Vec<Message> {
    // Room for the framing and per-block prefix/tags.
    const OVERHEAD: usize = 64;
    let mut out = vec![Message {
        presences,
        ..Message::default()
    }];
    let mut size = out[0].encode().len();
    for b in blocks {
        let cost = b.data.len() + OVERHEAD;
        let full = out.last().is_some_and(|m| {
            !m.blocks.is_empty()
                && (size + cost > TARGET_MESSAGE_SIZE || m.blocks.len() == MAX_BLOCKS_PER_MESSAGE)
        });
        if full {
            out.push(Message::default());
            size = 0;
        }
        size += cost;
        if let Some(last) = out.last_mut() {
            last.blocks.push(b);
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

// --- protobuf primitives -------------------------------------------------

const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;
const I32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Encoded size of a length-delimited field holding `len` bytes.
fn field_len(field: u32, len: usize) -> usize {
    varint_len((u64::from(field) << 3) | u64::from(LEN)) + varint_len(len as u64) + len
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, (u64::from(field) << 3) | u64::from(LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads an unsigned varint from the front of `buf`: `Ok(None)` when more
/// bytes are needed, the value and its length otherwise.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let mut v = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    if buf.len() >= 10 {
        return Err(WireError::Malformed("varint over 10 bytes"));
    }
    Ok(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, WireError> {
        match read_varint(self.0)? {
            Some((v, n)) => {
                self.0 = &self.0[n..];
                Ok(v)
            }
            None => Err(WireError::Malformed("truncated varint")),
        }
    }

    fn key(&mut self) -> Result<Option<(u64, u8)>, WireError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, (key & 7) as u8)))
    }

    fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.varint()?;
        if len > self.0.len() as u64 {
            return Err(WireError::Malformed("length past the end"));
        }
        let (head, tail) = self.0.split_at(len as usize);
        self.0 = tail;
        Ok(head)
    }

    fn skip(&mut self, wire: u8) -> Result<(), WireError> {
        let n = match wire {
            VARINT => return self.varint().map(drop),
            LEN => return self.bytes().map(drop),
            I64 => 8,
            I32 => 4,
            _ => return Err(WireError::Malformed("unsupported wire type")),
        };
        if self.0.len() < n {
            return Err(WireError::Malformed("truncated fixed field"));
        }
        self.0 = &self.0[n..];
        Ok(())
    }
}

/// Splits a byte stream into length-prefixed frames, refusing a frame whose
/// declared length is over the limit before buffering any of it.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Adds received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some((len, n)) = read_varint(&self.buf)? else {
            return Ok(None);
        };
        if len > MAX_MESSAGE_SIZE as u64 {
            return Err(WireError::TooLarge(len));
        }
        let end = n + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let frame = self.buf[n..end].to_vec();
        self.buf.drain(..end);
        Ok(Some(frame))
    }

    /// Bytes held for a frame not yet complete.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Codec, cid_of};

    fn sample() -> Message {
        let a = cid_of(Codec::Raw, b"a");
        let b = cid_of(Codec::DagCbor, b"b");
        Message {
            wantlist: vec![
                WantEntry {
                    cid: a,
                    priority: 5,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                },
                WantEntry {
                    cid: b,
                    priority: -1,
                    cancel: true,
                    want_type: WantType::Block,
                    send_dont_have: false,
                },
            ],
            full: true,
            blocks: vec![WireBlock {
                cid: a,
                data: b"a".to_vec(),
            }],
            unreadable_blocks: 0,
            presences: vec![(a, Presence::Have), (b, Presence::DontHave)],
            pending_bytes: 1234,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Message::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn block_cid_is_computed_from_its_bytes() {
        let mut m = sample();
        let mut bytes = m.encode();
        // Change the block's data ("a" -> "x"): the decoded CID follows the
        // bytes, so the receiver sees a block it never asked for.
        let at = bytes.iter().rposition(|&b| b == b'a').unwrap();
        bytes[at] = b'x';
        let decoded = Message::decode(&bytes).unwrap();
        m.blocks[0] = WireBlock {
            cid: cid_of(Codec::Raw, b"x"),
            data: b"x".to_vec(),
        };
        assert_eq!(decoded.blocks, m.blocks);
    }

    #[test]
    fn truncated_and_garbage_messages_are_errors() {
        let bytes = sample().encode();
        for cut in 1..bytes.len() {
            // Every prefix either decodes (a shorter valid message) or is an
            // error; none panics.
            let _ = Message::decode(&bytes[..cut]);
        }
        assert!(Message::decode(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(Message::decode(&[0x0b]).is_err()); // wire type 3 (groups)
        assert!(Message::decode(&[0xff; 11]).is_err());
    }

    #[test]
    fn framed_length_is_exact() {
        let mut m = sample();
        m.blocks.push(WireBlock {
            cid: cid_of(Codec::Raw, &[7u8; 300]),
            data: vec![7u8; 300],
        });
        let framed = m.encode_framed();
        let (len, n) = read_varint(&framed).unwrap().unwrap();
        assert_eq!(len as usize, framed.len() - n);
        assert_eq!(&framed[n..], m.encode().as_slice());
        assert_eq!(Message::decode(&framed[n..]).unwrap(), m);
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut bytes = sample().encode();
        put_varint_field(&mut bytes, 99, 7);
        put_bytes(&mut bytes, 98, b"future");
        assert_eq!(Message::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn empty_blocks_and_too_many_blocks_are_refused_before_hashing() {
        let block = |data: Vec<u8>| WireBlock {
            cid: cid_of(Codec::Raw, &data),
            data,
        };
        let empty = Message {
            blocks: vec![block(Vec::new())],
            ..Message::default()
        };
        assert_eq!(
            Message::decode(&empty.encode()),
            Err(WireError::Malformed("empty block"))
        );
        let many = Message {
            blocks: (0..=MAX_BLOCKS_PER_MESSAGE as u32)
                .map(|i| block(i.to_be_bytes().to_vec()))
                .collect(),
            ..Message::default()
        };
        assert_eq!(
            Message::decode(&many.encode()),
            Err(WireError::TooMany(MAX_BLOCKS_PER_MESSAGE, "blocks"))
        );
        // What shoal sends of the same blocks is split under the count.
        let split = split_blocks(many.blocks, Vec::new());
        assert_eq!(split.len(), 2);
        for m in split {
            assert!(Message::decode(&m.encode()).is_ok());
        }
    }

    #[test]
    fn too_many_entries_are_refused() {
        let entry = WantEntry {
            cid: cid_of(Codec::Raw, b"a"),
            priority: 1,
            cancel: false,
            want_type: WantType::Block,
            send_dont_have: false,
        };
        let m = Message {
            wantlist: vec![entry; MAX_ENTRIES_PER_MESSAGE + 1],
            ..Message::default()
        };
        assert!(matches!(
            Message::decode(&m.encode()),
            Err(WireError::TooMany(..))
        ));
    }

    #[test]
    fn frames_over_the_limit_are_refused_before_buffering() {
        let mut d = FrameDecoder::default();
        let mut header = Vec::new();
        put_varint(&mut header, (MAX_MESSAGE_SIZE + 1) as u64);
        d.extend(&header);
        assert_eq!(
            d.next_frame(),
            Err(WireError::TooLarge((MAX_MESSAGE_SIZE + 1) as u64))
        );

        let mut d = FrameDecoder::default();
        let framed = sample().encode_framed();
        let (a, b) = framed.split_at(7);
        d.extend(a);
        assert_eq!(d.next_frame().unwrap(), None);
        d.extend(b);
        let frame = d.next_frame().unwrap().unwrap();
        assert_eq!(Message::decode(&frame).unwrap(), sample());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn large_blocks_travel_one_a_message() {
        let blocks: Vec<WireBlock> = (0..10u8)
            .map(|i| {
                let data = vec![i; 1 << 20];
                WireBlock {
                    cid: cid_of(Codec::Raw, &data),
                    data,
                }
            })
            .collect();
        let msgs = split_blocks(blocks, vec![(cid_of(Codec::Raw, b"p"), Presence::DontHave)]);
        // Each block over the target travels alone, so that the receiver
        // has it (and asks for the next) as soon as it arrives.
        assert_eq!(msgs.len(), 10);
        assert!(msgs.iter().all(|m| m.blocks.len() == 1));
        assert_eq!(msgs[0].presences.len(), 1);
        for m in &msgs {
            let framed = m.encode_framed();
            assert!(framed.len() <= MAX_MESSAGE_SIZE, "{}", framed.len());
            let mut d = FrameDecoder::default();
            d.extend(&framed);
            Message::decode(&d.next_frame().unwrap().unwrap()).unwrap();
        }
    }

    #[test]
    fn small_blocks_share_messages_up_to_the_target_size() {
        let blocks: Vec<WireBlock> = (0..100u8)
            .map(|i| {
                let data = vec![i; 20 << 10];
                WireBlock {
                    cid: cid_of(Codec::Raw, &data),
                    data,
                }
            })
            .collect();
        let msgs = split_blocks(blocks, Vec::new());
        assert_eq!(msgs.iter().map(|m| m.blocks.len()).sum::<usize>(), 100);
        // Three 20 KiB blocks fit the target, a fourth would not.
        assert_eq!(msgs.len(), 34);
        for m in &msgs {
            assert!(m.encode().len() <= TARGET_MESSAGE_SIZE);
        }
    }
}
