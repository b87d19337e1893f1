//! Reading OCI image layouts: references, media types, platforms and the JSON
//! documents (index, manifest, config).

pub mod layout;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;

pub use layout::Layout;
pub use platform::Platform;
pub use reference::ImageRef;
