//! One layer blob: its tar entries, its random-access spans, the one-pass
//! indexer that finds both, the binary index file and the byte reader.

pub mod background_hash;
pub mod compression;
pub mod deflate_frame;
pub mod descriptor;
pub mod format;
pub mod gzip;
pub mod index;
pub mod layer_index;
pub mod spans;
pub mod toc;
pub mod toc_reference;
pub mod verify;
pub mod window_use;
pub mod zstd;

pub use crate::tar::entry::{EntryExtra, EntryKind, TarEntry};
pub use compression::Compression;
pub use descriptor::LayerInfo;
pub use layer_index::LayerIndex;
pub use spans::{Span, SpanStart};
