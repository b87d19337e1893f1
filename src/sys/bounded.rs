//! Untrusted bodies read into memory that follows what arrives, not what
//! was promised: a body that claims 512 MiB and sends 10 KB costs about
//! 10 KB (64 KiB at first). The buffer grows by at most a chunk past what
//! has arrived (64 KiB, or a quarter of what arrived once that is more, so
//! copying stays linear), never past the limit (plus the one byte that
//! tells "exactly the limit" from "more"), and every growth is a
//! `try_reserve_exact`: a failed allocation (an armv7 process has 3 GiB of
//! address space) is an error the caller can act on, never an abort.

use std::collections::TryReserveError;
use std::fmt;
use std::io::{self, Read};

/// The smallest step the buffer grows by.
pub const CHUNK: usize = 64 << 10;

/// What one `read` call asks for: a stack buffer's worth, so that no read
/// depends on how much room the buffer has.
const READ_SIZE: usize = 16 << 10;

/// How a buffer grows by `additional` bytes: [`try_reserve_exact`] but in
/// tests, which put a failing allocator in its place.
pub type Reserve = fn(&mut Vec<u8>, usize) -> Result<(), TryReserveError>;

/// The allocator's own answer (`Vec::try_reserve_exact`).
pub fn try_reserve_exact(buf: &mut Vec<u8>, additional: usize) -> Result<(), TryReserveError> {
    buf.try_reserve_exact(additional)
}

/// Why a bounded read stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// More than `limit` bytes arrived (the read stops at `limit + 1`).
    TooLarge { limit: u64 },
    /// The buffer, holding `len` bytes, could not grow by `additional`.
    NoMemory {
        len: usize,
        additional: usize,
        source: TryReserveError,
    },
    /// The reader failed.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::TooLarge { limit } => write!(f, "more than the {limit}-byte limit"),
            ReadError::NoMemory {
                len,
                additional,
                source,
            } => write!(
                f,
                "out of memory: holding {len} bytes, {additional} more could not be allocated \
                 ({source})"
            ),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// All of `reader`, at most `limit` bytes, in a buffer that grows with what
/// arrives.
pub fn read(reader: impl Read, limit: u64) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    read_into(reader, limit, &mut buf, try_reserve_exact)?;
    Ok(buf)
}

/// [`read`] appending to `buf` (which keeps what arrived, on an error too)
/// and growing it with `reserve`.
pub fn read_into(
    mut reader: impl Read,
    limit: u64,
    buf: &mut Vec<u8>,
    reserve: Reserve,
) -> Result<(), ReadError> {
    // One byte past the limit tells "exactly the limit" from "more".
    let end = limit.saturating_add(1);
    let mut scratch = [0u8; READ_SIZE];
    loop {
        let len = buf.len();
        if len as u64 > limit {
            return Err(ReadError::TooLarge { limit });
        }
        let left = end - len as u64;
        let want = usize::try_from(left).map_or(READ_SIZE, |left| left.min(READ_SIZE));
        let n = match reader.read(&mut scratch[..want]) {
            Ok(0) => return Ok(()),
            Ok(n) => n.min(want),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ReadError::Io(e)),
        };
        if buf.capacity() - len < n {
            // A chunk past what arrived, never past the end.
            let step = CHUNK.max(len / 4).max(n);
            let additional = usize::try_from(left).map_or(step, |left| left.min(step));
            reserve(buf, additional).map_err(|source| ReadError::NoMemory {
                len,
                additional,
                source,
            })?;
            if buf.capacity() - len < n {
                // A reserve that reports success must have made room.
                return Err(ReadError::NoMemory {
                    len,
                    additional,
                    source: capacity_overflow(),
                });
            }
        }
        buf.extend_from_slice(&scratch[..n]);
    }
}

/// A `TryReserveError` to report a reservation that made no room.
fn capacity_overflow() -> TryReserveError {
    match Vec::<u8>::new().try_reserve_exact(usize::MAX) {
        Err(e) => e,
        Ok(()) => unreachable!("usize::MAX bytes cannot be reserved"),
    }
}

/// A small file read whole, or why not.
pub enum FileRead {
    Missing,
    TooLarge,
    Bytes(Vec<u8>),
}

/// Read the file at `path` whole if it holds at most `limit` bytes; a
/// missing file is [`FileRead::Missing`], a longer one [`FileRead::TooLarge`]
/// (read no further than `limit + 1` bytes).
pub fn read_file(path: &std::path::Path, limit: u64) -> io::Result<FileRead> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileRead::Missing),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok(if bytes.len() as u64 > limit {
        FileRead::TooLarge
    } else {
        FileRead::Bytes(bytes)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes of a repeating pattern, in reads of at most `piece`.
    struct Yields {
        left: u64,
        piece: usize,
        at: u64,
    }

    impl Yields {
        fn new(len: u64, piece: usize) -> Yields {
            Yields {
                left: len,
                piece,
                at: 0,
            }
        }
    }

    impl Read for Yields {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = (buf.len().min(self.piece) as u64).min(self.left) as usize;
            for b in &mut buf[..n] {
                *b = (self.at % 251) as u8;
                self.at += 1;
            }
            self.left -= n as u64;
            Ok(n)
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_body_under_a_huge_limit_costs_what_arrived() {
        let mut buf = Vec::new();
        read_into(
            Yields::new(10_000, 1500),
            512 * MIB,
            &mut buf,
            try_reserve_exact,
        )
        .unwrap();
        assert_eq!(buf.len(), 10_000);
        assert!(buf.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        assert!(
            buf.capacity() < MIB as usize,
            "10 KB under a 512 MiB limit took a {}-byte buffer",
            buf.capacity()
        );
    }

    #[test]
    fn the_buffer_follows_what_arrived() {
        for len in [0, 1, 65_535, 65_536, 65_537, 3 * MIB + 17, 20 * MIB] {
            let mut buf = Vec::new();
            read_into(
                Yields::new(len, 9000),
                512 * MIB,
                &mut buf,
                try_reserve_exact,
            )
            .unwrap();
            assert_eq!(buf.len() as u64, len);
            let bound = len + len / 4 + CHUNK as u64;
            assert!(
                buf.capacity() as u64 <= bound,
                "{len} bytes took a {}-byte buffer",
                buf.capacity()
            );
        }
    }

    #[test]
    fn exactly_the_limit_is_read_and_one_byte_more_is_refused() {
        let limit = 200_000;
        let buf = read(Yields::new(limit, 7000), limit).unwrap();
        assert_eq!(buf.len() as u64, limit);
        assert!(buf.capacity() as u64 <= limit + 1);

        let mut buf = Vec::new();
        let e = read_into(
            Yields::new(limit + 1, 7000),
            limit,
            &mut buf,
            try_reserve_exact,
        )
        .unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 200_000 }), "{e:?}");
        assert_eq!(e.to_string(), "more than the 200000-byte limit");
        // The read stopped one byte past the limit, in no more memory.
        assert_eq!(buf.len() as u64, limit + 1);
        assert!(buf.capacity() as u64 <= limit + 1);
    }

    #[test]
    fn an_endless_body_is_refused_at_the_limit() {
        let e = read(io::repeat(b'x'), 3 * MIB).unwrap_err();
        assert!(
            e.to_string().contains("more than the 3145728-byte limit"),
            "{e}"
        );
    }

    #[test]
    fn a_failing_reader_is_an_io_error() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
            }
        }
        let e = read(Broken, MIB).unwrap_err();
        assert!(matches!(e, ReadError::Io(_)), "{e:?}");
    }

    /// An allocator whose memory runs out at 1 MiB (as an armv7
    /// process's address space runs out, past a few hundred MiB).
    fn out_past_a_mib(buf: &mut Vec<u8>, additional: usize) -> Result<(), TryReserveError> {
        if buf.len() + additional > MIB as usize {
            // A real refusal: more than isize::MAX bytes.
            return Vec::<u8>::new().try_reserve_exact(usize::MAX);
        }
        buf.try_reserve_exact(additional)
    }

    #[test]
    fn a_failed_allocation_is_an_error_not_an_abort() {
        let mut buf = Vec::new();
        let e = read_into(
            Yields::new(8 * MIB, 16_000),
            512 * MIB,
            &mut buf,
            out_past_a_mib,
        )
        .unwrap_err();
        let ReadError::NoMemory { len, .. } = &e else {
            panic!("{e:?}");
        };
        assert!(*len <= MIB as usize && *len == buf.len(), "{e:?}");
        let said = e.to_string();
        assert!(said.starts_with("out of memory: holding "), "{said}");
        assert!(said.contains("memory allocation failed"), "{said}");
    }

    /// The allocator itself refusing (no address space holds isize::MAX
    /// bytes): the production reservation returns the refusal.
    #[test]
    fn the_allocator_s_refusal_is_returned() {
        let mut buf = vec![1u8; 10];
        assert!(try_reserve_exact(&mut buf, isize::MAX as usize).is_err());
        assert!(try_reserve_exact(&mut buf, usize::MAX).is_err());
        assert_eq!(buf, vec![1u8; 10]);
    }

    /// A reserve that claims success without room is caught, not trusted.
    #[test]
    fn a_reserve_that_makes_no_room_is_an_error() {
        fn liar(_: &mut Vec<u8>, _: usize) -> Result<(), TryReserveError> {
            Ok(())
        }
        let mut buf = Vec::new();
        let e = read_into(Yields::new(100, 100), MIB, &mut buf, liar).unwrap_err();
        assert!(matches!(e, ReadError::NoMemory { len: 0, .. }), "{e:?}");
    }
}
