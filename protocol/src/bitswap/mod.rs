//! Bitswap 1.2.0, wire-compatible with IPFS: the message codec ([`wire`])
//! and the protocol engine ([`engine`]), both without I/O. The libp2p
//! connection handler in `shoal-node` only moves the bytes.

pub mod engine;
pub mod uplink;
pub mod wire;

/// Protocol ids, newest first: what shoal offers and accepts.
pub const PROTOCOLS: [&str; 3] = [
    "/ipfs/bitswap/1.2.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.0.0",
];

pub use engine::{BlockSource, Engine, EngineConfig, Misbehaviour, Outgoing, Output};
pub use wire::{FrameDecoder, Message, Presence, WantEntry, WantType, WireBlock, WireError};
