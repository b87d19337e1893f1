//! Every bound ocimount puts on what an image can make it do, in one place.
//! Images come from strangers: each limit keeps a hostile header, document
//! or index from costing unbounded memory, time or disk, and each one has a
//! bad-input test that crosses it (named in the comment).

/// PAX (`x`, `g`) and GNU long name/link (`L`, `K`) headers larger than
/// this are refused before they are read, as Go's `archive/tar` does: real
/// ones are a few hundred bytes. (hostile: `gzip_bomb_pax_header_of_4_gib_is_refused_unread`)
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// Paths and link targets longer than Linux's `PATH_MAX` cannot be created
/// by any runtime; refusing them also keeps listings of deep trees linear.
/// (hostile: `paths_and_link_targets_over_path_max_are_refused`)
pub const MAX_PATH_BYTES: usize = 4095;

/// One path component, as Linux's `NAME_MAX`; a whiteout may carry its
/// 4-byte `.wh.` prefix on top.
pub const MAX_NAME_BYTES: usize = 255;

/// One extended attribute's value, as Linux's `XATTR_SIZE_MAX`: no file
/// system can hold a larger one, and the merged tree keeps every value in
/// memory. (hostile: `an_xattr_value_over_64_kib_is_refused`)
pub const MAX_XATTR_VALUE_BYTES: usize = 64 << 10;

/// The uncompressed bytes of one span: decoded whole into memory to check
/// its CRC before serving, so the bound on a read's memory. A zstd frame or
/// a deflate block whose output goes past it is written to the cache's data
/// file during indexing instead, as `Materialized` spans of `FIXED_SPAN`.
/// (hostile: `gzip_single_block_of_512_mib_is_read_in_bounded_memory`;
/// index load: `an_index_with_an_oversized_span_is_rebuilt`)
pub const MAX_SPAN_BYTES: u64 = 4 << 20;

/// JSON documents (index, manifest, config) larger than this are refused
/// before they are read: real ones are kilobytes.
/// (hostile: `huge_json_sizes_are_refused_before_reading`)
pub const MAX_JSON_BYTES: u64 = 8 << 20;

/// A mount daemon's log file: past this it is rotated to `NAME.1` (the
/// previous `.1` goes), so a mount serving a busy container for weeks
/// holds at most twice this on disk (`sys::rotating_log` tests).
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// A layer index published to a registry (`index push`) larger than this
/// is not fetched; the layer gets a full pass instead. An index is about
/// 100 bytes per entry: this is several million entries. A smaller layer
/// gets a smaller bound: 64 MiB plus 8 times its compressed size. The
/// bound is never allocated ahead: the packed body and its decompression
/// grow with what arrives (`sys::bounded`), and a failed allocation is a
/// full pass too, not an abort. (`index_artifact` tests: a body that
/// claims 512 MiB and sends 10 KB, a zstd bomb, running out of memory)
pub const MAX_PUBLISHED_INDEX_BYTES: u64 = 512 << 20;

/// Nested indexes followed from the top one. (public_fixtures: the index loop)
pub const MAX_INDEX_DEPTH: usize = 8;

/// Symlinks followed while resolving one path, as Linux's `MAXSYMLINKS`.
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Path components a layer may walk while it is merged: a fixed allowance
/// plus so many per entry. Real layers need a few per entry; a crafted one
/// (thousands of deep entries behind 40-hop symlink chains) would otherwise
/// take hours. (hostile: the symlink walk bombs)
pub const WALK_STEPS_BASE: u64 = 4 << 20;
pub const WALK_STEPS_PER_ENTRY: u64 = 128;

/// Members of one image archive: far more than any real archive holds.
pub const MAX_ARCHIVE_MEMBERS: usize = 1 << 20;

/// A table of contents (eStargz, zstd:chunked) larger than this, compressed
/// or as JSON, is not read: the layer is indexed by a full pass instead.
/// 64 MiB holds the TOC of a layer of some 200 000 files.
pub const MAX_TOC_JSON_BYTES: u64 = 64 << 20;
