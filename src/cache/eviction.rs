//! `--cache-max`: a bound on the decoded data the cache holds while mounts
//! run. Every process that stores spans checks the total now and then;
//! over the bound, it frees down to 90% of it: first the decoded data of
//! layers nothing reads (least recently used first, as `cache prune`
//! does), then its own layers' spans, least recently read first, the spans
//! indexing wrote (costly to rebuild) last. An evicted span is decoded
//! again when next read; a reader in the middle of one is never served the
//! evicted bytes (see `layer::residency`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cache::admin::{allocated, layer_last_used};
use crate::cache::{paths, LayerReader};
use crate::sys::lock::try_exclusive_lock;

pub struct CacheLimit {
    max: u64,
    root: PathBuf,
    /// The readers' stored bytes at the last check.
    checked_at: AtomicU64,
    busy: Mutex<()>,
}

impl CacheLimit {
    pub fn new(cache_root: &Path, max: u64) -> CacheLimit {
        CacheLimit {
            max,
            root: cache_root.to_path_buf(),
            checked_at: AtomicU64::new(0),
            busy: Mutex::new(()),
        }
    }

    /// Called after reads: when these readers have stored enough since the
    /// last check, check the whole cache and free what is over.
    pub fn after_read(&self, readers: &[LayerReader]) {
        let stored: u64 = readers.iter().map(LayerReader::stored_bytes).sum();
        let every = (self.max / 32).max(1 << 20);
        if stored < self.checked_at.load(Ordering::Relaxed) + every {
            return;
        }
        let Ok(_one_at_a_time) = self.busy.try_lock() else {
            return;
        };
        self.checked_at.store(stored, Ordering::Relaxed);
        let total = decoded_total(&self.root);
        if total <= self.max {
            return;
        }
        let mut need = total - (self.max - self.max / 10);
        need = need.saturating_sub(self.free_closed_layers(need));
        if need > 0 {
            need = need.saturating_sub(evict_own_spans(readers, need));
        }
        tracing::info!(
            "cache over its {}-byte limit ({total} bytes decoded): freed down{}",
            self.max,
            if need > 0 {
                format!(", {need} bytes short (the rest is in use)")
            } else {
                String::new()
            }
        );
    }

    /// Drop the decoded data of layers no process reads, least recently
    /// used first. Returns the bytes freed.
    fn free_closed_layers(&self, need: u64) -> u64 {
        let mut layers: Vec<(u64, PathBuf)> = paths::layer_dirs(&self.root)
            .into_iter()
            .map(|(_, dir)| dir)
            .filter(|dir| allocated(&dir.join("data")) > 0)
            .map(|dir| (layer_last_used(&dir), dir))
            .collect();
        layers.sort();
        let mut freed = 0;
        for (_, dir) in layers {
            if freed >= need {
                break;
            }
            // Our own readers hold this shared, so our layers are skipped.
            if let Ok(Some(_claim)) = try_exclusive_lock(&dir.join("inuse")) {
                freed += crate::cache::admin::drop_decoded(&dir).unwrap_or(0);
            }
        }
        freed
    }
}

/// Evict these readers' spans, least recently read first (materialised
/// last), until `need` bytes are freed. Returns the bytes freed.
fn evict_own_spans(readers: &[LayerReader], need: u64) -> u64 {
    let mut candidates: Vec<(bool, u32, usize, usize)> = Vec::new();
    for (r, reader) in readers.iter().enumerate() {
        for (i, used, materialised) in reader.resident_spans() {
            candidates.push((materialised, used, r, i));
        }
    }
    candidates.sort();
    let mut freed = 0;
    for chunk in candidates.chunks(16) {
        if freed >= need {
            break;
        }
        for (r, reader) in readers.iter().enumerate() {
            let mine: Vec<usize> = chunk.iter().filter(|c| c.2 == r).map(|c| c.3).collect();
            if !mine.is_empty() {
                freed += reader.evict(&mine);
            }
        }
    }
    freed
}

/// Decoded bytes held on disk by every layer of the cache.
pub fn decoded_total(cache_root: &Path) -> u64 {
    paths::layer_dirs(cache_root)
        .iter()
        .map(|(_, dir)| allocated(&dir.join(paths::DATA)))
        .sum()
}

/// `SIZE` as `--cache-max` takes it: bytes, or a number with K, M, G or T
/// (powers of 1024; `MiB`, `M` and `MB` alike).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 500M or 2G"))?;
    let unit = unit
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i');
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in {text:?}: use K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1 GB"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert!(parse_size("3X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("M").is_err());
    }
}
