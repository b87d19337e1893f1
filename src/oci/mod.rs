//! The OCI image spec's types, with no I/O: media types, platforms and the
//! JSON documents (index, manifest, config).

pub mod manifest;
pub mod media;
pub mod platform;

pub use platform::Platform;
