//! Compare two directory trees the way an image consumer sees them.
//!
//! A Rust port of the `treecmp.py` the suite used to run, with the same
//! verdicts and (nearly) the same report, so the tests need nothing from
//! outside the repository.
//!
//! For every path below the two roots (the roots themselves are not
//! compared) it compares: type, permission bits (with setuid, setgid and
//! sticky), uid and gid, mtime in whole seconds (not for directories and
//! symlinks), size and content of regular files, symlink targets, device
//! numbers, `user.*` xattrs, and hardlink groups (regular files that share
//! an inode in the reference must share one, as the same group, in the
//! candidate). Symlinks are never followed. The report has one line per
//! difference (at most `max`, then `... N more`) and ends with
//! `treecmp: N paths, M differences`, N counting the reference's paths.
//!
//! Values in `differs` lines are printed the way Python's `repr` prints
//! them (`mode: '0o644' vs '0o600'`, `uid: 0 vs 1000`, `rdev: (1, 3) vs
//! (1, 5)`, `xattrs: {'user.a': b'x'} vs {}`), so reports read the same as
//! the Python tool's. Contents are compared as streams, a MiB at a time;
//! sha256 digests are computed only to show a difference.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// What to compare; `Default` compares everything, as `treecmp.py` does
/// without options.
#[derive(Clone, Debug)]
pub struct Options {
    /// uid and gid (`--no-owner` turns this off).
    pub owner: bool,
    /// mtime of everything but directories and symlinks (`--no-mtime`).
    pub mtime: bool,
    /// `user.*` xattrs (`--no-xattr`).
    pub xattr: bool,
    /// Difference lines printed before `... N more` (`--max`).
    pub max: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            owner: true,
            mtime: true,
            xattr: true,
            max: 50,
        }
    }
}

/// The outcome of a comparison.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Paths below the reference root.
    pub paths: usize,
    /// Every difference, in report order.
    pub differences: Vec<String>,
    /// The printed report: differences (capped) and the summary line.
    pub report: String,
}

/// `treecmp REF CANDIDATE` with every check on: its report, and whether
/// the trees are equal.
pub fn treecmp(reference: &Path, candidate: &Path) -> (bool, String) {
    let c = compare(reference, candidate, &Options::default());
    (c.differences.is_empty(), c.report)
}

pub fn assert_same_tree(reference: &Path, candidate: &Path) {
    let (same, report) = treecmp(reference, candidate);
    assert!(same, "trees differ:\n{report}");
    assert!(report.contains(" 0 differences"), "{report}");
}

/// Compare `candidate` against `reference`.
pub fn compare(reference: &Path, candidate: &Path, opts: &Options) -> Comparison {
    let a = walk(reference);
    let b = walk(candidate);
    let mut diffs = Vec::new();
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        diffs.push(format!("missing in candidate: {}", show(p)));
    }
    for p in b.keys().filter(|p| !a.contains_key(*p)) {
        diffs.push(format!("extra in candidate: {}", show(p)));
    }
    // Paths whose reference inode has other links, by inode, per side.
    let mut groups_a: BTreeMap<(u64, u64), BTreeSet<&[u8]>> = BTreeMap::new();
    let mut groups_b: BTreeMap<(u64, u64), BTreeSet<&[u8]>> = BTreeMap::new();
    for (p, full_a) in &a {
        let Some(full_b) = b.get(p) else { continue };
        let (da, db) = match (describe(full_a, opts), describe(full_b, opts)) {
            (Ok(da), Ok(db)) => (da, db),
            (Err(e), _) | (_, Err(e)) => {
                diffs.push(format!("error reading {}: {e}", show(p)));
                continue;
            }
        };
        match differing(&da, &db) {
            Ok(keys) if keys.is_empty() => {}
            Ok(keys) => diffs.push(format!("differs {}: {}", show(p), keys.join(", "))),
            Err(e) => diffs.push(format!("error reading {}: {e}", show(p))),
        }
        if da.kind == libc::S_IFREG && da.nlink > 1 {
            groups_a.entry(da.inode).or_default().insert(p);
            groups_b.entry(db.inode).or_default().insert(p);
        }
    }
    let cand_groups = linked(groups_b);
    for g in linked(groups_a).difference(&cand_groups) {
        let names: Vec<String> = g.iter().map(|p| repr_str(p)).collect();
        diffs.push(format!(
            "hardlink group not preserved: [{}]",
            names.join(", ")
        ));
    }

    let mut report = String::new();
    for d in diffs.iter().take(opts.max) {
        report.push_str(d);
        report.push('\n');
    }
    if diffs.len() > opts.max {
        report.push_str(&format!("... {} more\n", diffs.len() - opts.max));
    }
    report.push_str(&format!(
        "treecmp: {} paths, {} differences\n",
        a.len(),
        diffs.len()
    ));
    Comparison {
        paths: a.len(),
        differences: diffs,
        report,
    }
}

/// The groups (sorted names) of more than one path.
fn linked(groups: BTreeMap<(u64, u64), BTreeSet<&[u8]>>) -> BTreeSet<Vec<&[u8]>> {
    groups
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|g| g.into_iter().collect())
        .collect()
}

/// Every path below `root` (relative, as bytes, so sorted the way Python
/// sorts str paths) and its full path. Like `os.walk`: symlinks to
/// directories are listed but not entered, and a directory that cannot be
/// read (or fails part way) is listed but its contents are not.
fn walk(root: &Path) -> BTreeMap<Vec<u8>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut pending = vec![(root.to_path_buf(), Vec::new())];
    while let Some((dir, rel)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let listed: io::Result<Vec<_>> = entries.collect();
        let Ok(listed) = listed else { continue };
        for entry in listed {
            let mut name = rel.clone();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(entry.file_name().as_bytes());
            let full = entry.path();
            // DirEntry::file_type does not follow symlinks.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push((full.clone(), name.clone()));
            }
            out.insert(name, full);
        }
    }
    out
}

/// A value as the Python tool held it, compared and printed alike.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(i128),
    Str(Vec<u8>),
    Pair(u64, u64),
    /// Name and value, in `llistxattr` order (shown so, compared in any).
    Xattrs(Vec<(Vec<u8>, XattrValue)>),
    /// A regular file's content (the Python tool's `sha256`), compared by
    /// reading both files.
    Content(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
enum XattrValue {
    Bytes(Vec<u8>),
    /// `lgetxattr` failed with this errno.
    Error(i32),
}

/// One side's description of a path.
struct Described {
    /// Keys in the Python tool's order: type, mode, uid, gid, mtime, size,
    /// sha256 | target | rdev, xattrs.
    fields: Vec<(&'static str, Value)>,
    kind: libc::mode_t,
    inode: (u64, u64),
    nlink: u64,
}

/// `e`, naming the path it is about (as Python's OSError does).
fn at(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{e}: '{}'", path.display()))
}

fn describe(path: &Path, opts: &Options) -> io::Result<Described> {
    let st = std::fs::symlink_metadata(path).map_err(at(path))?;
    let kind = st.mode() & libc::S_IFMT;
    let ft = st.file_type();
    let mut fields = vec![
        ("type", Value::Int(kind.into())),
        (
            "mode",
            Value::Str(format!("0o{:o}", st.mode() & 0o7777).into()),
        ),
    ];
    if opts.owner {
        fields.push(("uid", Value::Int(st.uid().into())));
        fields.push(("gid", Value::Int(st.gid().into())));
    }
    if opts.mtime && !ft.is_dir() && !ft.is_symlink() {
        fields.push(("mtime", Value::Int(python_mtime(&st))));
    }
    if ft.is_file() {
        fields.push(("size", Value::Int(st.size().into())));
        fields.push(("sha256", Value::Content(path.to_path_buf())));
    } else if ft.is_symlink() {
        let target = std::fs::read_link(path).map_err(at(path))?;
        fields.push(("target", Value::Str(target.into_os_string().into_vec())));
    } else if ft.is_char_device() || ft.is_block_device() {
        let rdev = st.rdev();
        fields.push((
            "rdev",
            Value::Pair(libc::major(rdev).into(), libc::minor(rdev).into()),
        ));
    }
    if opts.xattr {
        fields.push(("xattrs", Value::Xattrs(user_xattrs(path))));
    }
    Ok(Described {
        fields,
        kind,
        inode: (st.dev(), st.ino()),
        nlink: st.nlink(),
    })
}

/// `int(st.st_mtime)` exactly as Python computes it: seconds plus
/// nanoseconds as one double, truncated toward zero.
fn python_mtime(st: &Metadata) -> i128 {
    (st.mtime() as f64 + st.mtime_nsec() as f64 * 1e-9).trunc() as i128
}

/// The keys whose values differ, each as `key: A vs B`: first the
/// reference's keys in order, then keys only the candidate has.
fn differing(a: &Described, b: &Described) -> io::Result<Vec<String>> {
    let mut keys = Vec::new();
    let only_b = b
        .fields
        .iter()
        .filter(|(k, _)| field(a, k).is_none())
        .map(|(k, _)| *k);
    for key in a.fields.iter().map(|(k, _)| *k).chain(only_b) {
        let (va, vb) = (field(a, key), field(b, key));
        if !same(va, vb)? {
            keys.push(format!("{key}: {} vs {}", repr(va)?, repr(vb)?));
        }
    }
    Ok(keys)
}

fn field<'a>(d: &'a Described, key: &str) -> Option<&'a Value> {
    d.fields.iter().find(|(k, _)| *k == key).map(|f| &f.1)
}

fn same(a: Option<&Value>, b: Option<&Value>) -> io::Result<bool> {
    match (a, b) {
        (Some(Value::Content(x)), Some(Value::Content(y))) => same_content(x, y),
        (Some(Value::Xattrs(x)), Some(Value::Xattrs(y))) => {
            let sorted = |v: &[(Vec<u8>, XattrValue)]| {
                let mut v = v.to_vec();
                v.sort_by(|p, q| p.0.cmp(&q.0));
                v
            };
            Ok(sorted(x) == sorted(y))
        }
        _ => Ok(a == b),
    }
}

/// Open a regular file without following a symlink put in its place.
fn open(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(at(path))
}

const CHUNK: usize = 1 << 20;

/// Read as much of `buf` as the file holds; short only at end of file.
fn fill(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    let (mut ba, mut bb) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    loop {
        let na = fill(&mut fa, &mut ba).map_err(at(a))?;
        let nb = fill(&mut fb, &mut bb).map_err(at(b))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn sha256_hex(path: &Path) -> io::Result<String> {
    let mut f = open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let mut h = Sha256::new();
    loop {
        let n = fill(&mut f, &mut buf).map_err(at(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The `user.*` xattrs of `path` itself (never a symlink's target); none
/// when they cannot be listed (e.g. the filesystem has no xattrs).
fn user_xattrs(path: &Path) -> Vec<(Vec<u8>, XattrValue)> {
    let mut out = Vec::new();
    let Ok(cpath) = CString::new(path.as_os_str().as_bytes()) else {
        return out;
    };
    let Ok(list) =
        xattr_call(|buf, len| unsafe { libc::llistxattr(cpath.as_ptr(), buf.cast(), len) })
    else {
        return out;
    };
    for name in list.split(|&c| c == 0).filter(|n| !n.is_empty()) {
        if !name.starts_with(b"user.") {
            continue;
        }
        let cname = CString::new(name).unwrap();
        let value = match xattr_call(|buf, len| unsafe {
            libc::lgetxattr(cpath.as_ptr(), cname.as_ptr(), buf.cast(), len)
        }) {
            Ok(v) => XattrValue::Bytes(v),
            Err(e) => XattrValue::Error(e.raw_os_error().unwrap_or(0)),
        };
        out.push((name.to_vec(), value));
    }
    out
}

/// Run an xattr call that fills a buffer: ask for the size, then fetch,
/// again if the value grew in between (ERANGE).
fn xattr_call(call: impl Fn(*mut u8, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; size as usize];
        if size == 0 {
            return Ok(buf);
        }
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
    }
}

/// A relative path as the report shows it.
fn show(p: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(p)
}

/// A value as Python's `repr` prints it; an absent key is `None`.
fn repr(v: Option<&Value>) -> io::Result<String> {
    Ok(match v {
        None => "None".to_string(),
        Some(Value::Int(i)) => i.to_string(),
        Some(Value::Str(s)) => repr_str(s),
        Some(Value::Pair(x, y)) => format!("({x}, {y})"),
        Some(Value::Content(path)) => repr_str(sha256_hex(path)?.as_bytes()),
        Some(Value::Xattrs(map)) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        XattrValue::Bytes(b) => repr_bytes(b),
                        XattrValue::Error(e) => repr_str(format!("<error {e}>").as_bytes()),
                    };
                    format!("{}: {v}", repr_str(k))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    })
}

/// Python's quote choice: single quotes unless the text has a single quote
/// and no double quote.
fn quote_for(s: &[u8]) -> u8 {
    if s.contains(&b'\'') && !s.contains(&b'"') {
        b'"'
    } else {
        b'\''
    }
}

/// `repr(bytes)`: `b'...'`, with `\\`, the quote, `\t`, `\n`, `\r` escaped
/// and other bytes outside 0x20..0x7e as `\xNN`.
fn repr_bytes(s: &[u8]) -> String {
    let q = quote_for(s);
    let mut out = format!("b{}", q as char);
    for &c in s {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            _ if c == q => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(c as char),
            _ => out.push_str(&format!("\\x{c:02x}")),
        }
    }
    out.push(q as char);
    out
}

/// `repr(str)` of a file-system string as Python decodes it (UTF-8, with
/// undecodable bytes as the surrogates `\udcNN`). Control characters are
/// escaped; other non-ASCII characters are printed as they are.
fn repr_str(s: &[u8]) -> String {
    let q = quote_for(s);
    let mut out = String::from(q as char);
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                _ if c == q as char => {
                    out.push('\\');
                    out.push(c);
                }
                '\0'..='\x1f' | '\x7f'..='\u{a0}' => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                _ => out.push(c),
            }
        }
        for &b in chunk.invalid() {
            out.push_str(&format!("\\udc{b:02x}"));
        }
    }
    out.push(q as char);
    out
}
