//! ocimount: mount an OCI image (from a layout, an image archive or a
//! registry) as a read-only directory. Each layer is indexed once, in one
//! verified streaming pass, the layers are merged by the OCI whiteout rules,
//! and file contents are served lazily from a content-addressed cache.
//!
//! The modules are the pipeline's stages. Bottom to top, each importing
//! only the stages before it (docs/design.md, "Source layout";
//! `tests/layering.rs` keeps it so):
//!
//! | stage | what it holds |
//! |---|---|
//! | `limits`, `digest`, `error`, `blob` | the base vocabulary |
//! | `sys` | atomic writes, locks, workers, mountinfo, progress, logs |
//! | `tar` | the strict tar reader |
//! | `layer` | the one-pass indexer, its codecs, the index format |
//! | `oci` | the image spec's types, no I/O |
//! | `source` | references; layouts, archives and registries |
//! | `image` | a reference resolved to a manifest, config and layers |
//! | `cache` | the content-addressed cache: paths, entries, span reader, eviction, records |
//! | `tree`, `merge` | the merged tree, and the union that builds it |
//! | `rootfs` | an image opened for reading |
//! | `view` | export, diff, layers |
//! | `serve` | FUSE, the daemon, spawn, umount, prefetch |
//! | `bundle` | OCI runtime bundles |
//! | `cli` | clap and glue |
//!
//! The binary (`src/main.rs`) only parses arguments, so the tests exercise
//! the same code.

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
