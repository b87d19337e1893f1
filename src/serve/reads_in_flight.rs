//! The FUSE reads being served right now: the background fill
//! (`crate::serve::prefetch`) gives way while there are any, so a read that
//! waits on a span is never queued behind the fill's decoding.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct ReadsInFlight(AtomicUsize);

impl ReadsInFlight {
    /// Count a read until the returned guard is dropped.
    pub fn begin(&self) -> ReadGuard<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        ReadGuard(self)
    }

    /// Whether any read is being served.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One read in flight; it ends when this is dropped (a panic included).
pub struct ReadGuard<'a>(&'a ReadsInFlight);

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}
