//! ocimount: read OCI image layouts, index their layers once, merge them with
//! the OCI whiteout rules and serve the merged rootfs lazily.
//!
//! The binary (`src/main.rs`) only parses arguments; everything it does lives
//! here so the tests exercise the same code.

pub mod blob;
pub mod bundle;
pub mod cache;
pub mod cli;
pub mod digest;
pub mod error;
pub mod image;
pub mod layer;
pub mod limits;
pub mod merge;
pub mod oci;
pub mod rootfs;
pub mod serve;
pub mod source;
pub mod sys;
pub mod tar;
pub mod tree;
pub mod view;

pub use digest::Digest;
pub use error::{Error, Result};
