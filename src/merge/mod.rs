//! Merging a manifest's layers into one tree by the image-spec's whiteout
//! rules (`union`), and writing the result in the tree's flat form
//! (`encode`).

pub mod changes;
mod draft;
pub mod encode;
mod shrinking;
pub mod union;

pub use union::*;
