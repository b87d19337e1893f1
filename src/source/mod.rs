//! Where an image comes from: a reference (`[oci:]PATH`, `oci-archive:`,
//! `docker-archive:`, `docker://`) and the store that reads its documents
//! and blobs, whether an OCI layout, an image archive or a registry.

pub mod archive;
pub mod layout;
pub mod reference;
pub mod registry;
pub mod selector;
pub mod store;

pub use layout::Layout;
pub use reference::ImageRef;
pub use store::ImageStore;
