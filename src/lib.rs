//! ocimount: read OCI image layouts, index their layers once, merge them with
//! the OCI whiteout rules and serve the merged rootfs lazily.
//!
//! The binary (`src/main.rs`) only parses arguments; everything it does lives
//! here so the tests exercise the same code.

pub mod blob;
pub mod bundle;
pub mod cache;
pub mod cli;
pub mod decode_ahead;
pub mod digest;
pub mod error;
pub mod export;
pub mod first_reads;
pub mod fs;
pub mod image;
pub mod layer;
pub mod layer_changes;
pub mod limits;
pub mod merge;
pub mod mount;
pub mod oci;
pub mod prefetch;
pub mod reads_in_flight;
pub mod rootfs;
pub mod source;
pub mod sys;
pub mod tar;
pub mod tree;
pub mod tree_diff;

pub use digest::Digest;
pub use error::{Error, Result};
