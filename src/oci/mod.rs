//! Reading OCI image layouts: references, media types, platforms and the JSON
//! documents (index, manifest, config).

pub mod archive;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;
pub mod store;

pub use layout::Layout;
pub use platform::Platform;
pub use reference::ImageRef;
pub use store::ImageStore;
