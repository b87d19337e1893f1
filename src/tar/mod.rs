//! Reading tar headers from a layer's uncompressed stream, with our own
//! strict, bounded handling of PAX and GNU extension headers.
//!
//! The `tar` crate buffers whole extension headers before anyone can look at
//! their size, so a gzip bomb declaring a 4 GiB PAX header or GNU long name
//! is read into memory. Here every extension header is refused above
//! `MAX_EXTENSION_BYTES` before a byte of it is read, PAX records are parsed
//! strictly, and entry data is skipped by streaming. Where formats disagree
//! we read as Go's `archive/tar` does, since that is what Docker and
//! containerd use on the same layers.

pub mod entry;
mod header;
mod path;
mod pax;
mod reader;

pub use path::{normalize_path, DotDot};
pub use reader::TarReader;

const BLOCK: u64 = 512;

pub use crate::limits::{MAX_EXTENSION_BYTES, MAX_PATH_BYTES};

/// Why a layer's tar stream was refused, with the entry it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarError {
    /// The entry's raw name, when the failure belongs to one.
    pub path: Option<Vec<u8>>,
    pub reason: String,
}

impl TarError {
    fn stream(reason: impl Into<String>) -> TarError {
        TarError {
            path: None,
            reason: reason.into(),
        }
    }

    fn entry(path: &[u8], reason: impl Into<String>) -> TarError {
        TarError {
            path: Some(path.to_vec()),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::header::parse_numeric;
    use super::pax::{parse_pax, parse_pax_time};
    use super::*;

    #[test]
    fn paths_are_normalised() {
        let n = |p: &[u8]| normalize_path(p, DotDot::Reject);
        assert_eq!(n(b"./etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(n(b"/usr//bin/./sh").unwrap(), b"usr/bin/sh");
        assert_eq!(n(b"etc/").unwrap(), b"etc");
        assert_eq!(n(b"./").unwrap(), b"");
        assert_eq!(n(b"a/../../etc").unwrap_err(), "the path contains '..'");
        assert_eq!(n(b"a\0b").unwrap_err(), "the name contains a NUL byte");
        let deep = b"abc/".repeat(1100);
        assert_eq!(
            n(&deep).unwrap_err(),
            "the path is 4399 bytes long (limit 4095)"
        );
    }

    #[test]
    fn hardlink_targets_clamp_dotdot_at_the_root() {
        let n = |p: &[u8]| normalize_path(p, DotDot::ClampAtRoot).unwrap();
        assert_eq!(n(b"../../../../etc/passwd"), b"etc/passwd");
        assert_eq!(n(b"/a/b/../c"), b"a/c");
    }

    #[test]
    fn pax_times_keep_their_fraction() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1700000000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1700000000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"1.123456789123"), Some((1, 123_456_789)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"12x"), None);
        assert_eq!(parse_pax_time(b"+12"), None);
        assert_eq!(parse_pax_time(b"-"), None);
        assert_eq!(parse_pax_time(b"99999999999999999999"), None);
    }

    #[test]
    fn numeric_fields_read_as_go_reads_them() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  644 \0"), Some(0o644));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\x0016\0"), Some(0o16));
        assert_eq!(parse_numeric(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"12 34\0"), None);
        assert_eq!(parse_numeric(b"9\0"), None);
        // Base-256: 2^33 and -1.
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]),
            Some(1 << 33)
        );
        assert_eq!(parse_numeric(&[0xff; 12]), Some(-1));
        // Does not fit in 63 bits.
        assert_eq!(
            parse_numeric(&[0x80, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
    }

    #[test]
    fn pax_records_are_parsed_strictly() {
        let p = parse_pax(b"16 path=a/b/c.d\n13 size=2048\n10 uid=10\n").unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/b/c.d"[..]));
        assert_eq!((p.size, p.uid), (Some(2048), Some(10)));
        // The last of two records wins; an empty value changes nothing.
        let p = parse_pax(b"10 size=3\n10 size=4\n8 size=\n").unwrap();
        assert_eq!(p.size, Some(4));
        for bad in [
            &b"13 path=name"[..],
            b"4 x=",
            b"9 path=a\n\n",
            b"99 path=a\n",
            b"x path=a\n",
            b"7 =abc\n",
            b"8 abcde\n",
            b"14 size=-1234\n",
            b"10 uid=-1\n",
            b"22 uid=99999999999999\n",
            b"12 path=a\0b\n",
            b"26 GNU.sparse.map=0,1,2,3\n",
        ] {
            assert!(
                parse_pax(bad).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
