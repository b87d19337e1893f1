//! `ocimount layers`: what each layer does to the image, from the layer
//! indexes alone. The union records it while it merges the layers (see
//! `merge::changes`), so the counts follow the mount's own rules.

use crate::error::Result;
use crate::layer::LayerIndex;
pub use crate::merge::changes::LayerChanges;
use crate::merge::{LayerEntries, TreeBuilder};

/// The changes of every layer, bottom first (the indexes' entries are
/// consumed as the layers are merged).
pub fn layer_changes(indexes: Vec<LayerIndex>) -> Result<Vec<LayerChanges>> {
    let mut builder = TreeBuilder::recording_changes();
    for (position, index) in indexes.into_iter().enumerate() {
        builder.apply(LayerEntries {
            position,
            digest: index.digest,
            entries: index.entries,
        })?;
    }
    Ok(builder.changes().to_vec())
}
