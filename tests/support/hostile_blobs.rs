//! A registry that lies about one layer blob, for tests/span_digests.rs
//! (and its CRC-32 forger for tests/stored_tree.rs):
//! a CRC-32 forger, a tar member locator, and [`HostileProxy`], an HTTP
//! relay in front of a real registry that serves a forged version of one
//! blob (same length, same CRC-32 over every span that holds the change).
//!
//! Only std. Included with `#[path]` by the tests that use it (it is not
//! part of `support`, so the other test binaries do not build it).
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

// ---------------------------------------------------------------------------
// CRC-32 and its forgery

/// The reflected CRC-32 polynomial of zlib, gzip, PNG (and flate2's `Crc`).
const POLY: u32 = 0xEDB8_8320;

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// The CRC register after `data`, from `state`, with no pre- or
/// post-inversion: linear in (state, data) over GF(2).
fn crc32_register(mut state: u32, data: &[u8]) -> u32 {
    for &b in data {
        state = CRC_TABLE[((state ^ b as u32) & 0xff) as usize] ^ (state >> 8);
    }
    state
}

/// CRC-32 as zlib's `crc32(0, data, len)` computes it.
pub fn crc32(data: &[u8]) -> u32 {
    !crc32_register(!0, data)
}

/// Replace `buf[pos..pos + replacement.len()]` with `replacement` and
/// change the 4 bytes right after it so that the CRC-32 of every range of
/// `buf` that holds all of `pos..pos + replacement.len() + 4` is what it
/// was. Returns the range of bytes changed (replacement and fix).
///
/// Why it works: CRC-32 is affine, so for two messages of the same length
/// `crc(M) ^ crc(M') = R(0, M ^ M')`, where `R(s, d)` is the bare register
/// ([`crc32_register`]) after `d` from state `s`. The difference is zero
/// outside the window, and zero bytes leave a zero register as it is, so
/// the CRCs of a range that holds the window agree exactly when
/// `R(0, window difference) = 0`, wherever the range starts or ends. Let
/// `s = R(0, delta)` for the replacement's difference `delta`. Feeding 4
/// bytes `e` from state `s` gives `R(0, e ^ le(s))` (the register's bytes
/// are XORed into the next 4 input bytes, least significant first, and
/// then shifted out), and over 4 bytes `R(0, ·)` is a bijection of GF(2)^32
/// that maps only 0 to 0: so the fix's difference must be `e = le(s)`.
/// This is the 32 × 32 linear system of the fix, solved in closed form.
pub fn forge_crc32(buf: &mut [u8], pos: usize, replacement: &[u8]) -> std::ops::Range<usize> {
    let end = pos + replacement.len();
    assert!(
        end + 4 <= buf.len(),
        "the replacement and its 4-byte fix must fit in the buffer"
    );
    let delta: Vec<u8> = buf[pos..end]
        .iter()
        .zip(replacement)
        .map(|(a, b)| a ^ b)
        .collect();
    let s = crc32_register(0, &delta);
    buf[pos..end].copy_from_slice(replacement);
    for (b, e) in buf[end..end + 4].iter_mut().zip(s.to_le_bytes()) {
        *b ^= e;
    }
    pos..end + 4
}

// ---------------------------------------------------------------------------
// Tar

/// A member of a tar file, where its data lies in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    /// As named in the archive, without a leading `./` or `/`.
    pub name: String,
    /// The type flag (`b'0'` or 0 for a regular file).
    pub kind: u8,
    pub data_offset: u64,
    pub size: u64,
}

fn tar_number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian, the first byte's top bit a flag.
        let mut n: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(b as u64))
                .ok_or_else(|| io::Error::other("tar number too large"))?;
        }
        return Ok(n);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| io::Error::other(format!("bad tar number {text:?}")))
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn clean_name(name: &str) -> String {
    let mut name = name;
    while let Some(rest) = name.strip_prefix("./").or_else(|| name.strip_prefix('/')) {
        name = rest;
    }
    name.trim_end_matches('/').to_string()
}

/// The `path` of a pax extended header's records, if it has one.
fn pax_path(records: &[u8]) -> Option<String> {
    let mut rest = records;
    let mut path = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[len..];
    }
    path
}

/// Every member of the tar at `path` (ustar, GNU long names, pax paths),
/// in archive order, read header by header without reading the data.
pub fn tar_members(path: &Path) -> io::Result<Vec<TarMember>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut members = Vec::new();
    let mut offset = 0u64;
    let mut long_name: Option<String> = None;
    let mut header = [0u8; 512];
    while offset + 512 <= len {
        file.read_exact_at(&mut header, offset)?;
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let size = tar_number(&header[124..136])?;
        let kind = header[156];
        let data_offset = offset + 512;
        let next = data_offset + size.div_ceil(512) * 512;
        let read_data = || -> io::Result<Vec<u8>> {
            if size > 1 << 20 {
                return Err(io::Error::other("tar extension header too large"));
            }
            let mut data = vec![0u8; size as usize];
            file.read_exact_at(&mut data, data_offset)?;
            Ok(data)
        };
        match kind {
            b'L' => long_name = Some(c_string(&read_data()?)),
            b'x' => {
                if let Some(p) = pax_path(&read_data()?) {
                    long_name = Some(p);
                }
            }
            b'g' => {}
            _ => {
                let name = match long_name.take() {
                    Some(n) => n,
                    None => {
                        let name = c_string(&header[0..100]);
                        let prefix = c_string(&header[345..500]);
                        if &header[257..263] == b"ustar\0" && !prefix.is_empty() {
                            format!("{prefix}/{name}")
                        } else {
                            name
                        }
                    }
                };
                members.push(TarMember {
                    name: clean_name(&name),
                    kind,
                    data_offset,
                    size,
                });
            }
        }
        offset = next;
    }
    Ok(members)
}

// ---------------------------------------------------------------------------
// The hostile proxy

/// How to lie about one blob: `forged` instead of `original` at `offset`.
#[derive(Clone, Debug)]
pub struct BlobForgery {
    /// `sha256:HEX`.
    pub digest: String,
    pub offset: u64,
    pub original: Vec<u8>,
    pub forged: Vec<u8>,
}

impl BlobForgery {
    fn end(&self) -> u64 {
        self.offset + self.forged.len() as u64
    }
}

/// Whether a [`HostileProxy`] lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForgeMode {
    /// Relay everything as it is.
    Honest,
    /// Relay the next `n` GETs of the blob as they are (the first is the
    /// full, digest-checked indexing pass), then forge every later one.
    ForgeAfter(u64),
}

/// One GET of the forged blob that the proxy relayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobGet {
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// The registry's status (200, 206…).
    pub status: u16,
    /// Whether the proxy was to forge this answer.
    pub forged: bool,
}

/// Bound on every read and write of a proxied socket.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 64 * 1024;

struct Shared {
    upstream_port: u16,
    forgery: BlobForgery,
    /// The mode, and how many GETs of the blob it has seen.
    mode: Mutex<(ForgeMode, u64)>,
    stop: AtomicBool,
    gets: Mutex<Vec<BlobGet>>,
    forged_bytes: AtomicU64,
    open: Mutex<Vec<(u64, TcpStream)>>,
    next_id: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// Count a GET of the blob; whether to forge it.
    fn decide(&self) -> bool {
        let mut mode = self.mode.lock().unwrap();
        let seen = mode.1;
        mode.1 += 1;
        match mode.0 {
            ForgeMode::Honest => false,
            ForgeMode::ForgeAfter(n) => seen >= n,
        }
    }

    fn track(&self, stream: &TcpStream) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let clone = stream.try_clone().ok()?;
        self.open.lock().unwrap().push((id, clone));
        Some(id)
    }

    fn untrack(&self, id: Option<u64>) {
        self.open.lock().unwrap().retain(|(i, _)| Some(*i) != id);
    }

    fn sever_all(&self) {
        for (_, s) in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// An HTTP/1.1 relay on 127.0.0.1 in front of a plain-HTTP registry, one
/// thread and one upstream connection per request (`Connection: close` both
/// ways). GETs of `/v2/NAME/blobs/DIGEST` for the forgery's digest are
/// answered with the registry's own status and headers (200, or 206 with
/// its Content-Range: the same length) and its body with the forged bytes
/// laid over the original ones where the range covers them; everything
/// else passes as it is. Stops, cutting open connections, on drop.
pub struct HostileProxy {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl HostileProxy {
    pub fn start(upstream_port: u16, forgery: BlobForgery, mode: ForgeMode) -> HostileProxy {
        assert_eq!(forgery.original.len(), forgery.forged.len());
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream_port,
            forgery,
            mode: Mutex::new((mode, 0)),
            stop: AtomicBool::new(false),
            gets: Mutex::new(Vec::new()),
            forged_bytes: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("hostile-proxy-{port}"))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("proxy thread");
        HostileProxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Switch modes; the count of GETs starts again from 0.
    pub fn set_mode(&self, mode: ForgeMode) {
        *self.shared.mode.lock().unwrap() = (mode, 0);
    }

    /// The GETs of the forged blob relayed so far.
    pub fn blob_gets(&self) -> Vec<BlobGet> {
        self.shared.gets.lock().unwrap().clone()
    }

    /// Bytes of the forged window that went out to clients.
    pub fn forged_bytes_served(&self) -> u64 {
        self.shared.forged_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.shared.sever_all();
        let workers: Vec<_> = self.shared.workers.lock().unwrap().drain(..).collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let id = shared.track(&stream);
                let worker_shared = Arc::clone(&shared);
                let handle = std::thread::spawn(move || {
                    let _ = serve(&stream, &worker_shared);
                    let _ = stream.shutdown(Shutdown::Both);
                    worker_shared.untrack(id);
                });
                let mut workers = shared.workers.lock().unwrap();
                workers.retain(|w| !w.is_finished());
                workers.push(handle);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A head's lines (without CRLF) and its raw bytes, blank line included.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<(Vec<String>, Vec<u8>)>> {
    let mut raw = Vec::new();
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = r
            .by_ref()
            .take(MAX_HEAD as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        raw.extend_from_slice(&line);
        if raw.len() > MAX_HEAD {
            return Err(io::Error::other("head too long"));
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if text.is_empty() {
            return Ok(Some((lines, raw)));
        }
        lines.push(text);
    }
}

fn header<'a>(lines: &'a [String], name: &str) -> Option<&'a str> {
    lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn serve(client: &TcpStream, shared: &Shared) -> io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    // ocimount with --tls-verify=false tries HTTPS first: a TLS
    // ClientHello is not HTTP, and closing makes it fall back.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 0 || !first[0].is_ascii_uppercase() {
        return Ok(());
    }
    let mut from_client = BufReader::new(client.try_clone()?);
    let Some((request, _)) = read_head(&mut from_client)? else {
        return Ok(());
    };
    let mut parts = request[0].split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("");
    let blob_get = (method == "GET"
        && path.starts_with("/v2/")
        && path.ends_with(&format!("/blobs/{}", shared.forgery.digest)))
    .then(|| header(&request, "Range").map(str::to_string));

    let mut head = format!("{}\r\n", request[0]);
    for line in &request[1..] {
        let name = line.split(':').next().unwrap_or("").trim();
        if ["connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        head += line;
        head += "\r\n";
    }
    head += "Connection: close\r\n\r\n";

    let addr: SocketAddr = ([127, 0, 0, 1], shared.upstream_port).into();
    let upstream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let upstream_id = shared.track(&upstream);
    let result = (|| {
        upstream.set_read_timeout(Some(IO_TIMEOUT))?;
        upstream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut to_upstream = upstream.try_clone()?;
        to_upstream.write_all(head.as_bytes())?;
        // The request body (uploads), as it comes: what the reader holds
        // past the head, then the socket, until the exchange ends.
        to_upstream.write_all(from_client.buffer())?;
        let mut client_rest = from_client.into_inner();
        let pump = std::thread::spawn(move || {
            let _ = io::copy(&mut client_rest, &mut to_upstream);
        });
        let relayed = relay_response(&upstream, client, shared, blob_get);
        let _ = upstream.shutdown(Shutdown::Both);
        let _ = client.shutdown(Shutdown::Both);
        let _ = pump.join();
        relayed
    })();
    shared.untrack(upstream_id);
    result
}

/// Relay the registry's answer; `blob_get` is Some(the request's Range)
/// for a GET of the forged blob.
fn relay_response(
    upstream: &TcpStream,
    client: &TcpStream,
    shared: &Shared,
    blob_get: Option<Option<String>>,
) -> io::Result<()> {
    let mut from_upstream = BufReader::new(upstream.try_clone()?);
    let mut to_client = client.try_clone()?;
    let Some(range) = blob_get else {
        io::copy(&mut from_upstream, &mut to_client)?;
        return to_client.flush();
    };
    let forge = shared.decide();
    let (response, raw) = read_head(&mut from_upstream)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let status: u16 = response[0]
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    shared.gets.lock().unwrap().push(BlobGet {
        range,
        status,
        forged: forge,
    });
    // Where the body starts in the blob.
    let start = match status {
        200 => Some(0),
        206 => header(&response, "Content-Range")
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.trim().parse::<u64>().ok()),
        _ => None,
    };
    let chunked = header(&response, "Transfer-Encoding").is_some_and(|v| v.contains("chunked"));
    to_client.write_all(&raw)?;
    let (true, Some(mut at)) = (forge, start) else {
        io::copy(&mut from_upstream, &mut to_client)?;
        return to_client.flush();
    };
    if chunked {
        // The body's offsets are not the blob's: cut it rather than lie
        // about the wrong bytes.
        eprintln!("hostile proxy: a chunked blob body cannot be forged; cutting it");
        return Err(io::Error::other("chunked blob body"));
    }
    let forgery = &shared.forgery;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from_upstream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let end = at + n as u64;
        let from = at.max(forgery.offset);
        let to = end.min(forgery.end());
        if from < to {
            for pos in from..to {
                buf[(pos - at) as usize] = forgery.forged[(pos - forgery.offset) as usize];
            }
            shared.forged_bytes.fetch_add(to - from, Ordering::SeqCst);
        }
        to_client.write_all(&buf[..n])?;
        at = end;
    }
    to_client.flush()
}
