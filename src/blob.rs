//! Where a blob's bytes come from: one seam for the indexer and the span
//! reader, whatever holds the blob.
//!
//! A blob is content-addressed: it knows its digest and its size, reads at
//! any offset, and streams front to back for the one-pass indexer. A file
//! in an OCI layout, a member of a `docker save` or `oci-archive` tarball
//! (a byte range of the archive, read in place) and a JSON document made in
//! memory all sit behind [`BlobSource`]; `layer` and `cache` see only that.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::digest::Digest;

/// The bytes of one blob.
pub trait BlobSource: Send + Sync {
    /// The digest the bytes must hash to (checked by whoever reads them all).
    fn digest(&self) -> Digest;

    /// Its length in bytes, as the descriptor gives it.
    fn size(&self) -> u64;

    /// Read up to `buf.len()` bytes at `offset`; `Ok(0)` only at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Where the bytes live, for messages: a path, or an archive and member.
    fn location(&self) -> String;

    /// The blob as a whole file of its own, where it is one (a layout blob):
    /// it can then be linked to rather than copied.
    fn whole_file(&self) -> Option<&Path> {
        None
    }

    /// Fill `buf` from `offset`, or fail with `UnexpectedEof`.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} ends early", self.location()),
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A hint that `len` bytes from `offset` are about to be read: a
    /// remote source fetches them in one request (and fails as the read
    /// would). Local sources ignore it.
    fn will_need(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    /// Whether reads cross a network (and so are worth caching even where
    /// the bytes are the blob's own, as in a plain tar layer).
    fn is_remote(&self) -> bool {
        false
    }

    /// The blob front to back. Sources with a cheaper sequential path (one
    /// HTTP GET, say) override this; the default reads at offsets.
    fn stream(&self) -> Box<dyn Read + Send + '_> {
        Box::new(BlobCursor::new(self, 0))
    }
}

/// A shared, open blob.
pub type Blob = Arc<dyn BlobSource>;

impl fmt::Debug for dyn BlobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.location(), self.digest())
    }
}

/// A blob read front to back from `pos`, through `read_at`.
pub struct BlobCursor<'a, S: ?Sized> {
    source: &'a S,
    pos: u64,
}

impl<'a, S: BlobSource + ?Sized> BlobCursor<'a, S> {
    pub fn new(source: &'a S, pos: u64) -> Self {
        BlobCursor { source, pos }
    }
}

impl<S: BlobSource + ?Sized> Read for BlobCursor<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.source.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A byte range of a file: a whole layout blob (`start` 0), or one member
/// of an image archive read where it lies.
pub struct FileRange {
    file: Arc<File>,
    path: PathBuf,
    /// The archive member's name, when the range is one.
    member: Option<String>,
    start: u64,
    size: u64,
    digest: Digest,
}

impl FileRange {
    /// The whole of `file`, which must be `size` bytes long.
    pub fn whole(file: File, path: PathBuf, digest: Digest, size: u64) -> FileRange {
        FileRange {
            file: Arc::new(file),
            path,
            member: None,
            start: 0,
            size,
            digest,
        }
    }

    /// `size` bytes of the shared archive `file` from `start`: the member
    /// called `member`.
    pub fn member(
        file: Arc<File>,
        path: PathBuf,
        member: String,
        start: u64,
        size: u64,
        digest: Digest,
    ) -> FileRange {
        FileRange {
            file,
            path,
            member: Some(member),
            start,
            size,
            digest,
        }
    }
}

impl BlobSource for FileRange {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let want = (self.size - offset).min(buf.len() as u64) as usize;
        self.file.read_at(&mut buf[..want], self.start + offset)
    }

    fn location(&self) -> String {
        match &self.member {
            Some(member) => format!("{} (member {member})", self.path.display()),
            None => self.path.display().to_string(),
        }
    }

    fn whole_file(&self) -> Option<&Path> {
        self.member.is_none().then_some(self.path.as_path())
    }
}

/// A document made in memory (the manifest of a `docker save` archive,
/// which has none of its own).
pub struct MemoryBlob {
    bytes: Vec<u8>,
    digest: Digest,
    what: String,
}

impl MemoryBlob {
    pub fn new(bytes: Vec<u8>, what: String) -> MemoryBlob {
        MemoryBlob {
            digest: Digest::of(&bytes),
            bytes,
            what,
        }
    }
}

impl BlobSource for MemoryBlob {
    fn digest(&self) -> Digest {
        self.digest
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = offset.min(self.bytes.len() as u64) as usize;
        let n = buf.len().min(self.bytes.len() - start);
        buf[..n].copy_from_slice(&self.bytes[start..start + n]);
        Ok(n)
    }

    fn location(&self) -> String {
        self.what.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_member_range_reads_only_its_own_bytes() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"headerMEMBERtrailer").unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        let range = FileRange::member(
            file,
            f.path().to_path_buf(),
            "m".into(),
            6,
            6,
            Digest::of(b"MEMBER"),
        );
        let mut all = Vec::new();
        range.stream().read_to_end(&mut all).unwrap();
        assert_eq!(all, b"MEMBER");
        let mut buf = [0u8; 10];
        assert_eq!(range.read_at(&mut buf, 4).unwrap(), 2);
        assert_eq!(&buf[..2], b"ER");
        assert_eq!(range.read_at(&mut buf, 6).unwrap(), 0);
        let err = range.read_exact_at(&mut buf, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert!(range.whole_file().is_none());
    }

    #[test]
    fn a_memory_blob_knows_its_digest() {
        let blob = MemoryBlob::new(b"{}".to_vec(), "made".into());
        assert_eq!(blob.digest(), Digest::of(b"{}"));
        let mut buf = [0u8; 4];
        assert_eq!(blob.read_at(&mut buf, 1).unwrap(), 1);
        assert_eq!(blob.read_at(&mut buf, 9).unwrap(), 0);
    }
}
