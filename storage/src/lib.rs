//! shoal-storage: where shoal keeps content on disk.
//!
//! - [`codec`]: systematic Reed-Solomon over segments;
//! - [`blockstore`]: the redb database of blocks, pins, quota and GC;
//! - [`import`]: files and HLS presentations into blocks and manifests;
//! - [`assemble`]: blocks back into files and HLS presentations;
//! - [`hls`]: the HLS playlist reader and writer those two share;
//! - [`cmaf`]: a fragmented MP4 stream cut into init, fragments and
//!   segments.

// Errors name the CID they are about (a CID is ~100 bytes inline) so the
// user can act on them; they are returned on cold paths only.
#![allow(clippy::result_large_err)]

pub mod blockstore;
pub mod cmaf;
pub mod codec;
pub mod files;

pub use blockstore::{BlockListener, Blockstore, HeldReceipt, StoreError, StoreOptions};
pub mod hls;
pub mod import;

pub use import::{
    ImportError, ImportOptions, Imported, StoredSegment, import_file, import_hls, import_segment,
};
pub mod assemble;

pub use assemble::{AssembleError, export_hls, write_stream};
