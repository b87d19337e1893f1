//! Does a table of contents tell the truth about its tar stream?
//!
//! A mount through a TOC never reads the tar: it serves what the TOC says,
//! each chunk checked against the chunk digest the TOC gives. A producer
//! whose TOC disagrees with its own tar (a bug, or a lie vouched for by the
//! manifest's annotation) would give a tree other than a full pass's, and
//! nothing at mount time could see it. `verify` reads the whole tar anyway,
//! so it compares the two here, entry by entry and chunk by chunk, in the
//! same pass: the tar stream goes through a reader that hashes the byte
//! ranges the TOC gives digests for as the tar reader consumes them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};

use super::ESTARGZ_OWN_ENTRIES;
use crate::layer::layer_index::{BuiltFrom, LayerIndex};
use crate::layer::spans::{hex, spans_covering};
use crate::tar::entry::{EntryKind, TarEntry};
use crate::tar::TarReader;

/// The most disagreements one layer reports; the rest are counted.
const MAX_REPORTED: usize = 10;

/// What a layer's TOC says that its tar does not: at most `MAX_REPORTED`
/// lines, then how many more. Empty: the TOC tells the truth.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disagreements {
    pub reported: Vec<String>,
    pub more: usize,
}

impl Disagreements {
    fn add(&mut self, what: String) {
        if self.reported.len() < MAX_REPORTED {
            self.reported.push(what);
        } else {
            self.more += 1;
        }
    }
}

/// Compare `toc` (the index made from a layer's TOC) with the tar stream
/// `tar` gives, reading it to its end. An error is the stream's (it could
/// not be read or decompressed); a tar it cannot parse is a disagreement.
pub fn compare(toc: &LayerIndex, tar: impl Read) -> io::Result<Disagreements> {
    let checks = Rc::new(RefCell::new(ChunkChecks::default()));
    let mut reader = TarReader::new(CheckingReader {
        inner: tar,
        pos: 0,
        checks: checks.clone(),
    });
    let hidden = |e: &TarEntry| {
        toc.built_from == BuiltFrom::EstargzToc && ESTARGZ_OWN_ENTRIES.contains(&e.path())
    };
    let mut listed = toc.entries.iter();
    let mut found = Disagreements::default();
    loop {
        let entry = match reader.next_entry() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                let at = e
                    .path
                    .map(|p| format!(" ({:?})", String::from_utf8_lossy(&p)))
                    .unwrap_or_default();
                found.add(format!("the tar itself{at}: {}", e.reason));
                break;
            }
        };
        if hidden(&entry) {
            continue;
        }
        let shown = String::from_utf8_lossy(entry.path()).into_owned();
        let Some(said) = listed.next() else {
            found.add(format!("{shown:?}: in the tar, past the TOC's last entry"));
            continue;
        };
        if let Some(field) = differing_field(said, &entry) {
            found.add(format!(
                "{shown:?}: the TOC says {}, the tar {}",
                field.0, field.1
            ));
            continue;
        }
        if entry.kind != EntryKind::File || entry.size == 0 {
            continue;
        }
        let Some(covering) = spans_covering(&toc.spans, said.data_offset, said.size) else {
            continue;
        };
        let mut checks = checks.borrow_mut();
        for span in &toc.spans[covering] {
            let within = span.out_offset - said.data_offset;
            checks.expected.push_back(Expected {
                start: entry.data_offset + within,
                len: span.out_len,
                sha256: span.sha256,
                what: format!("{shown:?}, bytes {within}..{}", within + span.out_len),
            });
        }
    }
    for said in listed {
        found.add(format!(
            "{:?}: in the TOC, not in the tar",
            String::from_utf8_lossy(said.path())
        ));
    }
    // The last file's data and the archive's end: every range is fed.
    let mut rest = reader.into_inner();
    io::copy(&mut rest, &mut io::sink())?;
    let mut checks = checks.borrow_mut();
    for missed in std::mem::take(&mut checks.expected) {
        checks
            .mismatches
            .push(format!("{}: past the end of the tar", missed.what));
    }
    for mismatch in std::mem::take(&mut checks.mismatches) {
        found.add(mismatch);
    }
    Ok(found)
}

/// The first field in which the TOC's entry and the tar's differ: what
/// each says.
fn differing_field(said: &TarEntry, tar: &TarEntry) -> Option<(String, String)> {
    let text = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    let sorted = |e: &TarEntry| {
        let mut x = e.xattrs().to_vec();
        x.sort();
        x
    };
    let pairs = [
        (said.path() != tar.path()).then(|| (text(said.path()), text(tar.path()))),
        (said.kind != tar.kind).then(|| (format!("{:?}", said.kind), format!("{:?}", tar.kind))),
        (said.mode & 0o7777 != tar.mode & 0o7777)
            .then(|| (format!("mode {:o}", said.mode), format!("{:o}", tar.mode))),
        (said.uid != tar.uid).then(|| (format!("uid {}", said.uid), tar.uid.to_string())),
        (said.gid != tar.gid).then(|| (format!("gid {}", said.gid), tar.gid.to_string())),
        (said.size != tar.size).then(|| {
            (
                format!("{} bytes", said.size),
                format!("{} bytes", tar.size),
            )
        }),
        (said.link() != tar.link())
            .then(|| (format!("link {}", text(said.link())), text(tar.link()))),
        (said.device() != tar.device()).then(|| {
            (
                format!("device {:?}", said.device()),
                format!("{:?}", tar.device()),
            )
        }),
        // TOCs give whole seconds.
        (said.mtime != tar.mtime).then(|| (format!("mtime {}", said.mtime), tar.mtime.to_string())),
        (sorted(said) != sorted(tar)).then(|| {
            (
                format!("{} xattrs", said.xattrs().len()),
                format!("other xattrs ({})", tar.xattrs().len()),
            )
        }),
    ];
    pairs.into_iter().flatten().next()
}

/// A range of the tar stream the TOC gives a SHA-256 for.
struct Expected {
    start: u64,
    len: u64,
    sha256: [u8; 32],
    what: String,
}

#[derive(Default)]
struct ChunkChecks {
    /// In stream order: each is queued as its entry is read, before its
    /// data passes.
    expected: VecDeque<Expected>,
    /// The hash of the front range, once its first byte has passed.
    open: Option<Sha256>,
    mismatches: Vec<String>,
}

impl ChunkChecks {
    /// The stream's bytes `at..at + data.len()`, as they pass.
    fn feed(&mut self, mut at: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let Some(next) = self.expected.front() else {
                return;
            };
            let (start, end) = (next.start, next.start + next.len);
            let data_end = at + data.len() as u64;
            if data_end <= start {
                return;
            }
            if at < start {
                data = &data[(start - at) as usize..];
                at = start;
            }
            let take = ((end - at) as usize).min(data.len());
            self.open
                .get_or_insert_with(Sha256::new)
                .update(&data[..take]);
            data = &data[take..];
            at += take as u64;
            if at == end {
                let done = self.expected.pop_front().expect("the front range");
                let got: [u8; 32] = self.open.take().unwrap_or_default().finalize().into();
                if got != done.sha256 {
                    self.mismatches.push(format!(
                        "{}: the tar's are sha256:{}, the TOC's chunk digest sha256:{}",
                        done.what,
                        hex(&got),
                        hex(&done.sha256)
                    ));
                }
            }
        }
    }
}

/// The tar stream as the tar reader consumes it, the expected ranges
/// hashed on the way.
struct CheckingReader<R> {
    inner: R,
    pos: u64,
    checks: Rc<RefCell<ChunkChecks>>,
}

impl<R: Read> Read for CheckingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.checks.borrow_mut().feed(self.pos, &buf[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::layer::spans::{sha256, Span, SpanStart};
    use crate::layer::Compression;

    /// A tar of `files` (name, mode, content), each mtime 7.
    fn tar_of(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode, content) in files {
            let mut header = tar::Header::new_ustar();
            header.set_size(content.len() as u64);
            header.set_mode(*mode);
            header.set_mtime(7);
            builder.append_data(&mut header, name, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// The index a TOC of `files` gives, each file's data cut in chunks of
    /// `chunk` bytes, in a stream of file data alone.
    fn toc_of(files: &[(&str, u32, &[u8])], chunk: usize) -> LayerIndex {
        let (mut entries, mut spans, mut at) = (Vec::new(), Vec::new(), 0u64);
        for (name, mode, content) in files {
            let mut entry = TarEntry::new(name.as_bytes(), EntryKind::File);
            entry.mode = *mode;
            entry.mtime = 7;
            entry.size = content.len() as u64;
            entry.data_offset = at;
            entries.push(entry);
            for piece in content.chunks(chunk) {
                spans.push(Span {
                    out_offset: at,
                    out_len: piece.len() as u64,
                    in_offset: spans.len() as u64 * 100,
                    crc32: 0,
                    sha256: sha256(piece),
                    start: SpanStart::GzipMember,
                });
                at += piece.len() as u64;
            }
        }
        LayerIndex {
            digest: Digest::of(b"blob"),
            diff_id: Digest::of(b"tar"),
            compression: Compression::Gzip,
            compressed_size: 1000,
            uncompressed_size: at,
            entries,
            spans: spans.into(),
            built_from: BuiltFrom::EstargzToc,
            prefetch_spans: 0,
        }
    }

    const FILES: [(&str, u32, &[u8]); 2] = [
        ("etc/a", 0o644, b"the first file, in three chunks"),
        ("etc/b", 0o755, b"and a second"),
    ];

    #[test]
    fn a_toc_that_tells_the_truth_has_nothing_to_say() {
        let found = compare(&toc_of(&FILES, 12), &tar_of(&FILES)[..]).unwrap();
        assert_eq!(found, Disagreements::default());
    }

    #[test]
    fn each_kind_of_lie_is_named_with_its_file() {
        // Another mode for etc/b.
        let mut lying = FILES;
        lying[1].1 = 0o4755;
        let found = compare(&toc_of(&lying, 12), &tar_of(&FILES)[..]).unwrap();
        assert_eq!(
            found.reported,
            ["\"etc/b\": the TOC says mode 4755, the tar 755"]
        );
        // Other bytes in etc/a's second chunk, of the same length.
        let mut lying = FILES;
        lying[0].2 = b"the first filE, in three chunks";
        let found = compare(&toc_of(&lying, 12), &tar_of(&FILES)[..]).unwrap();
        assert_eq!(found.reported.len(), 1, "{found:?}");
        assert!(
            found.reported[0].starts_with(&format!(
                "\"etc/a\", bytes 12..24: the tar's are sha256:{}, the TOC's chunk digest sha256:{}",
                crate::layer::spans::hex(&sha256(b"le, in three")),
                crate::layer::spans::hex(&sha256(b"lE, in three"))
            )),
            "{found:?}"
        );
        // A file the tar does not have, and one the TOC does not list.
        let extra = [FILES[0], FILES[1], ("etc/c", 0o644, &b"c"[..])];
        let found = compare(&toc_of(&extra, 12), &tar_of(&FILES)[..]).unwrap();
        assert_eq!(found.reported, ["\"etc/c\": in the TOC, not in the tar"]);
        let found = compare(&toc_of(&FILES[..1], 12), &tar_of(&FILES)[..]).unwrap();
        assert_eq!(
            found.reported,
            ["\"etc/b\": in the tar, past the TOC's last entry"]
        );
    }

    #[test]
    fn a_flood_of_lies_is_reported_in_part_and_counted() {
        let many: Vec<(String, u32, &[u8])> = (0..25)
            .map(|i| (format!("f{i}"), 0o644, &b"x"[..]))
            .collect();
        let files: Vec<(&str, u32, &[u8])> =
            many.iter().map(|(n, m, c)| (n.as_str(), *m, *c)).collect();
        let lying: Vec<(&str, u32, &[u8])> =
            files.iter().map(|(n, _, c)| (*n, 0o600, *c)).collect();
        let found = compare(&toc_of(&lying, 12), &tar_of(&files)[..]).unwrap();
        assert_eq!((found.reported.len(), found.more), (MAX_REPORTED, 15));
    }
}
