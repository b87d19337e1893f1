#!/usr/bin/env python3
"""lazy-inspect.py - check and describe eStargz and zstd:chunked layers.

Usage: lazy-inspect.py [-v] [--ignore-diff-id] LAYOUT[:TAG]

Reads the image manifest that LAYOUT/index.json names (the entry tagged TAG,
or the only entry; a nested image index must hold one manifest), and for
every layer that is eStargz (annotation containerd.io/snapshot/stargz/toc.digest)
or zstd:chunked (annotation *.zstd-chunked.manifest-position) checks, from the
blob's bytes alone, everything tests/tools/LAZY_FORMATS.md states:

  eStargz: the 51-byte footer and the TOC offset in it, the TOC tar entry
  (stargz.index.json) and its sha256 against the annotation, that every TOC
  `offset` is the start of a gzip member whose decompressed bytes begin with
  that chunk's data at the chunk's position in the tar stream, the
  chunk/file digests, the landmark entries, and the DiffID / uncompressed size.

  zstd:chunked: the 48-byte footer (a skippable frame) against the
  manifest-position annotation, the manifest-checksum (sha256 of the
  zstd-compressed TOC), that every `offset`/`endOffset` is a zstd frame
  boundary and the frames in between decompress to exactly the file's (or
  chunk's) bytes, the digests, and the DiffID of the whole stream.

Exit status 0 when every check passes, 1 otherwise. -v prints every TOC entry
and every compressed member/frame. --ignore-diff-id reports a zstd:chunked
layer that does not decompress to its config diff_id without failing (skopeo
1.9.3 drops a tar's trailing record padding; see LAZY_FORMATS.md). Needs only Python 3; zstd frames are
decompressed with the `zstandard` module when present (Debian:
python3-zstandard), else with the `zstd` command.
"""

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import zlib

try:
    import zstandard  # type: ignore
except ImportError:  # pragma: no cover - depends on the host
    zstandard = None

ESGZ_TOC_ANN = "containerd.io/snapshot/stargz/toc.digest"
ESGZ_USIZE_ANN = "io.containers.estargz.uncompressed-size"
ZC_PREFIXES = ("io.github.containers.zstd-chunked.", "io.containers.zstd-chunked.")

failures = []
verbose = False
ignore_diff_id = False


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("  FAIL: " + msg)
    return cond


def say(msg=""):
    print(msg)


def vsay(msg):
    if verbose:
        print(msg)


def sha256(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def blob_path(layout, digest):
    alg, _, hexpart = digest.partition(":")
    return os.path.join(layout, "blobs", alg, hexpart)


def read_json_blob(layout, desc):
    with open(blob_path(layout, desc["digest"]), "rb") as f:
        return json.loads(f.read())


def resolve(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        idx = json.load(f)
    cands = idx["manifests"]
    if tag:
        cands = [d for d in cands if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
    if len(cands) != 1:
        sys.exit(f"lazy-inspect: {layout}: {len(cands)} index.json entries match tag {tag!r}")
    desc = cands[0]
    doc = read_json_blob(layout, desc)
    while "manifests" in doc:  # nested index
        if len(doc["manifests"]) != 1:
            sys.exit("lazy-inspect: nested index with several manifests; give a single-manifest layout")
        desc = doc["manifests"][0]
        doc = read_json_blob(layout, desc)
    return desc, doc


# --------------------------------------------------------------------------
# eStargz


def gzip_members(blob):
    """Yield (start, compressed_len, uncompressed_bytes) for each gzip member."""
    off = 0
    while off < len(blob):
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(blob[off:])
        out += d.flush()
        if not d.eof:
            raise ValueError(f"truncated gzip member at {off}")
        used = len(blob) - off - len(d.unused_data)
        yield off, used, out
        off += used


def parse_estargz_footer(footer):
    """Return the TOC offset from the 51-byte eStargz footer, checking every byte."""
    check(len(footer) == 51, "footer is not 51 bytes")
    check(footer[0:4] == b"\x1f\x8b\x08\x04", f"footer gzip ID/CM/FLG {footer[0:4].hex()} != 1f8b0804 (FLG=FEXTRA)")
    check(footer[4:10] == b"\x00\x00\x00\x00\x00\xff", f"footer MTIME/XFL/OS {footer[4:10].hex()} != 0000000000ff")
    xlen = struct.unpack_from("<H", footer, 10)[0]
    check(xlen == 26, f"footer XLEN {xlen} != 26")
    check(footer[12:14] == b"SG", f"footer subfield id {footer[12:14]!r} != b'SG'")
    slen = struct.unpack_from("<H", footer, 14)[0]
    check(slen == 22, f"footer subfield length {slen} != 22")
    check(footer[32:38] == b"STARGZ", f"footer magic {footer[32:38]!r} != b'STARGZ'")
    check(footer[38:43] == b"\x01\x00\x00\xff\xff", f"footer deflate {footer[38:43].hex()} != 010000ffff (final empty stored block)")
    check(footer[43:51] == b"\x00" * 8, "footer CRC32/ISIZE are not zero")
    return int(footer[16:32].decode("ascii"), 16)


def inspect_estargz(layout, layer, diff_id):
    blob = open(blob_path(layout, layer["digest"]), "rb").read()
    ann = layer.get("annotations", {})
    say(f"  eStargz blob {len(blob)} bytes")
    toc_off = parse_estargz_footer(blob[-51:])
    say(f"  footer: last 51 bytes, TOC offset {toc_off} (0x{toc_off:x}) = {blob[-51 + 16:-51 + 32].decode()!r}")

    members = list(gzip_members(blob))
    starts = {}
    uoff = 0
    for i, (s, n, out) in enumerate(members):
        starts[s] = (i, uoff, out)
        vsay(f"    member {i:3d}: blob [{s}, {s + n}) {n:7d} bytes -> tar [{uoff}, {uoff + len(out)}) {len(out)} bytes")
        uoff += len(out)
    say(f"  {len(members)} gzip members; the last two are the TOC member and the footer")
    check(toc_off in starts, "TOC offset is not a gzip member start")
    check(members[-1][0] == len(blob) - 51 and members[-1][2] == b"", "last member is not the empty 51-byte footer")
    ti, toc_uoff, toc_member = starts[toc_off]
    check(ti == len(members) - 2, "TOC member is not the one before the footer")
    hdr = tarfile.TarInfo.frombuf(toc_member[:512], "utf-8", "surrogateescape")
    check(hdr.name == "stargz.index.json", f"TOC tar entry is {hdr.name!r}")
    toc_json = toc_member[512:512 + hdr.size]
    pad = (-hdr.size) % 512
    check(len(toc_member) == 512 + hdr.size + pad + 1024, "TOC member is not header + JSON + padding + 1024-byte end-of-archive")
    check(toc_member[512 + hdr.size:] == b"\x00" * (pad + 1024), "TOC member tail is not zeros")
    say(f"  TOC member: blob [{toc_off}, {len(blob) - 51}) gzip {len(blob) - 51 - toc_off} bytes; tar header "
        f"'stargz.index.json' size {hdr.size} mode {hdr.mode:o} mtime {hdr.mtime} type {hdr.type!r}; "
        f"+{pad} padding +1024 end-of-archive zeros")
    tdig = sha256(toc_json)
    check(tdig == ann.get(ESGZ_TOC_ANN), f"sha256(TOC JSON) {tdig} != annotation {ann.get(ESGZ_TOC_ANN)}")
    say(f"  TOC digest = sha256(uncompressed TOC JSON bytes) = {tdig}: matches annotation")
    toc = json.loads(toc_json)
    say(f"  TOC top-level keys {sorted(toc)}; version {toc['version']}; {len(toc['entries'])} entries; "
        f"JSON is json.MarshalIndent with tab indent: {toc_json[:3]!r}")

    full = b"".join(m[2] for m in members)
    check(sha256(full) == diff_id, f"sha256(decompressed) {sha256(full)} != diff_id {diff_id}")
    check(str(len(full)) == ann.get(ESGZ_USIZE_ANN), f"decompressed size {len(full)} != annotation {ann.get(ESGZ_USIZE_ANN)}")
    say(f"  decompressed stream: {len(full)} bytes = {ESGZ_USIZE_ANN}; sha256 = config diff_id")

    # The tar stream: data offset of each regular file.
    tf = tarfile.open(fileobj=io.BytesIO(full), mode="r:")
    data_off = {}
    names = []
    for m in tf.getmembers():
        names.append(m.name)
        if m.isreg():
            data_off[m.name] = m.offset_data
        vsay(f"    tar @{m.offset:8d} {m.name!r} type {m.type!r} size {m.size} data @{m.offset_data}")

    keys = {}
    files = {}
    for e in toc["entries"]:
        for k in e:
            keys.setdefault(e["type"], set()).add(k)
        vsay("    " + json.dumps(e))
        if e["type"] == "reg":
            files[e["name"]] = {"entry": e, "chunks": [e] if e.get("size", 0) > 0 else []}
        elif e["type"] == "chunk":
            files[e["name"]]["chunks"].append(e)
    for t, ks in sorted(keys.items()):
        say(f"  fields seen on {t!r} entries: {sorted(ks)}")

    nchunked = 0
    tail = [0]
    for name, f in files.items():
        e, chunks = f["entry"], f["chunks"]
        size = e.get("size", 0)
        if not chunks:
            check("offset" not in e, f"{name}: empty file has an offset")
            check(e.get("digest") == sha256(b""), f"{name}: empty file digest")
            continue
        if len(chunks) > 1:
            nchunked += 1
        content = b""
        for i, c in enumerate(chunks):
            coff = c.get("chunkOffset", 0)
            csize = c.get("chunkSize", 0) or (size - coff)
            check(coff == len(content), f"{name}: chunk {i} chunkOffset {coff} != {len(content)}")
            if not check(c["offset"] in starts, f"{name}: chunk {i} offset {c['offset']} is not a gzip member start"):
                continue
            mi, mu, out = starts[c["offset"]]
            data = out[:csize]
            check(len(data) == csize, f"{name}: chunk {i} member holds {len(out)} < {csize} bytes")
            if i < len(chunks) - 1:
                check(len(out) == csize, f"{name}: chunk {i} member holds {len(out)} bytes, not exactly chunkSize {csize}")
            else:
                # The last chunk's member goes on: tar padding, then the
                # headers of the following entries up to the next payload.
                pad = (-size) % 512
                check(len(out) >= csize + pad and out[csize:csize + pad] == b"\x00" * pad,
                      f"{name}: last chunk member does not hold chunk + {pad} zero padding")
                tail[0] += len(out) - csize - pad
            check(mu == data_off.get(name, -1) + coff, f"{name}: chunk {i} member starts at tar offset {mu}, data is at {data_off.get(name, -1) + coff}")
            check(c.get("chunkDigest") == sha256(data), f"{name}: chunk {i} chunkDigest mismatch")
            content += data
        check(len(content) == size, f"{name}: chunks cover {len(content)} of {size} bytes")
        check(e.get("digest") == sha256(content), f"{name}: digest mismatch")
    say(f"  {len(files)} regular files checked ({nchunked} split into chunks): every offset is a member start, "
        "a non-last chunk's member is exactly the chunk; the last chunk's member is chunk + tar padding + "
        f"the following headers ({tail[0]} bytes of such headers in all), digests match")

    lm = [e for e in toc["entries"] if e["name"] in (".prefetch.landmark", ".no.prefetch.landmark")]
    for e in lm:
        mi, mu, out = starts[e["offset"]]
        check(out[:1] == b"\x0f", f"{e['name']}: content {out[:1]!r} != b'\\x0f'")
        pos = toc["entries"].index(e)
        say(f"  landmark {e['name']!r}: TOC entry #{pos}, 1 byte 0x0f, tar position #{names.index(e['name'])}; entry {json.dumps(e)}")
    check(len(lm) == 1, f"{len(lm)} landmark entries")
    check("stargz.index.json" == names[-1], "stargz.index.json is not the last tar entry")
    return toc


# --------------------------------------------------------------------------
# zstd:chunked


def zstd_frames(blob):
    """Yield (kind, start, length) for each zstd or skippable frame."""
    off = 0
    while off < len(blob):
        magic = struct.unpack_from("<I", blob, off)[0]
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            size = struct.unpack_from("<I", blob, off + 4)[0]
            yield "skippable", off, 8 + size
            off += 8 + size
            continue
        if magic != 0xFD2FB528:
            raise ValueError(f"no zstd frame magic at {off}: {magic:#x}")
        fhd = blob[off + 4]
        single = (fhd >> 5) & 1
        hlen = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + ((1 if single else 0), 2, 4, 8)[fhd >> 6]
        q = off + hlen
        while True:
            bh = int.from_bytes(blob[q:q + 3], "little")
            btype, bsize = (bh >> 1) & 3, bh >> 3
            q += 3 + (1 if btype == 1 else bsize)
            if bh & 1:
                break
        if (fhd >> 2) & 1:
            q += 4  # content checksum
        yield "zstd", off, q - off
        off = q


def zstd_decompress(data):
    if zstandard is not None:
        d = zstandard.ZstdDecompressor()
        out = []
        r = d.stream_reader(io.BytesIO(data), read_across_frames=True)
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            out.append(chunk)
        return b"".join(out)
    return subprocess.run(["zstd", "-dcq"], input=data, stdout=subprocess.PIPE, check=True).stdout


def zc_ann(ann, key):
    for p in ZC_PREFIXES:
        if p + key in ann:
            return p + key, ann[p + key]
    return None, None


def inspect_zstd_chunked(layout, layer, diff_id):
    blob = open(blob_path(layout, layer["digest"]), "rb").read()
    ann = layer.get("annotations", {})
    say(f"  zstd:chunked blob {len(blob)} bytes")
    for k, v in sorted(ann.items()):
        say(f"  annotation {k} = {v}")
    pos_key, pos = zc_ann(ann, "manifest-position")
    sum_key, msum = zc_ann(ann, "manifest-checksum")
    ts_key, tspos = zc_ann(ann, "tarsplit-position")
    foot = blob[-48:]
    check(foot[0:4] == b"\x50\x2a\x4d\x18", f"footer skippable magic {foot[0:4].hex()}")
    check(struct.unpack_from("<I", foot, 4)[0] == 40, "footer skippable frame size != 40")
    check(foot[40:48] == b"GnUlInUx", f"footer magic {foot[40:48]!r}")
    f_off, f_len, f_ulen, f_type = struct.unpack_from("<QQQQ", foot, 8)
    say(f"  footer: last 48 bytes = skippable frame 50 2a 4d 18, size 28 00 00 00, then LE u64 offset {f_off}, "
        f"length {f_len}, uncompressed length {f_ulen}, type {f_type}, magic 'GnUlInUx'")
    off, ln, uln, typ = (int(x) for x in pos.split(":"))
    check((off, ln, uln, typ) == (f_off, f_len, f_ulen, f_type), f"annotation {pos} != footer")
    check(blob[off - 8:off - 4] == b"\x50\x2a\x4d\x18" and struct.unpack_from("<I", blob, off - 4)[0] == ln,
          "TOC is not the payload of a skippable frame starting 8 bytes before offset")
    check(off + ln == len(blob) - 48, "TOC skippable frame does not end where the footer begins")
    comp = blob[off:off + ln]
    check(sha256(comp) == msum, f"sha256(compressed TOC) {sha256(comp)} != manifest-checksum {msum}")
    say(f"  manifest-checksum = sha256 of the {ln} compressed TOC bytes blob[{off}, {off + ln}): matches")
    check(comp[:4] == b"\x28\xb5\x2f\xfd", "compressed TOC is not a zstd frame")
    toc_json = zstd_decompress(comp)
    check(len(toc_json) == uln, f"TOC decompresses to {len(toc_json)} != {uln}")
    say(f"  TOC: one zstd frame inside skippable frame [{off - 8}, {off + ln}); decompresses to {len(toc_json)} "
        f"bytes of compact JSON: {toc_json[:60]!r}...")
    toc = json.loads(toc_json)
    say(f"  TOC top-level keys {sorted(toc)}; version {toc['version']}; {len(toc['entries'])} entries")
    if ts_key:
        say(f"  tarsplit-position {tspos} (not checked)")
    else:
        say("  no tarsplit annotation (this producer has none)")

    frames = list(zstd_frames(blob))
    fstart = {}
    uoff = 0
    data_frames = []
    for i, (kind, s, n) in enumerate(frames):
        out = zstd_decompress(blob[s:s + n]) if kind == "zstd" else b""
        fstart[s] = (i, uoff)
        data_frames.append(out)
        vsay(f"    frame {i:3d} {kind:9s} blob [{s}, {s + n}) {n:7d} bytes -> tar [{uoff}, {uoff + len(out)}) {len(out)} bytes")
        uoff += len(out)
    fstart[len(blob)] = (len(frames), uoff)
    nsk = sum(1 for f in frames if f[0] == "skippable")
    say(f"  {len(frames)} frames: {len(frames) - nsk} zstd frames + {nsk} skippable (TOC, footer)")
    full = b"".join(data_frames)
    if not ignore_diff_id:
        check(sha256(full) == diff_id, f"sha256(decompressed) {sha256(full)} != config diff_id {diff_id}")
    say(f"  decompressed stream: {len(full)} bytes, sha256 {sha256(full)} "
        f"({'=' if sha256(full) == diff_id else '!='} config diff_id {diff_id})")

    tf = tarfile.open(fileobj=io.BytesIO(full), mode="r:")
    data_off = {}
    for m in tf.getmembers():
        if m.isreg():
            data_off[m.name] = m.offset_data
        vsay(f"    tar @{m.offset:8d} {m.name!r} type {m.type!r} size {m.size} data @{m.offset_data}")
    end_tar = tf.offset
    say(f"  tar entries end at {end_tar}; the stream then holds {len(full) - end_tar} bytes (end-of-archive zeros)")

    keys = {}
    files = {}
    for e in toc["entries"]:
        for k in e:
            keys.setdefault(e["type"], set()).add(k)
        vsay("    " + json.dumps(e))
        if e["type"] == "reg":
            files[e["name"]] = {"entry": e, "chunks": [e] if e.get("size", 0) > 0 else []}
        elif e["type"] == "chunk":
            files[e["name"]]["chunks"].append(e)
    for t, ks in sorted(keys.items()):
        say(f"  fields seen on {t!r} entries: {sorted(ks)}")

    def frames_between(a, b):
        return b"".join(data_frames[fstart[a][0]:fstart[b][0]])

    nchunked = 0
    for name, f in files.items():
        e, chunks = f["entry"], f["chunks"]
        size = e.get("size", 0)
        if not chunks:
            check(e.get("offset", 0) == 0 and e.get("endOffset", 0) == 0, f"{name}: empty file has offsets")
            continue
        if not check(e["offset"] in fstart and e["endOffset"] in fstart, f"{name}: offset/endOffset not frame boundaries"):
            continue
        content = frames_between(e["offset"], e["endOffset"])
        check(len(content) == size, f"{name}: frames [offset, endOffset) hold {len(content)} != size {size}")
        check(e.get("digest") == sha256(content), f"{name}: digest mismatch")
        check(fstart[e["offset"]][1] == data_off.get(name), f"{name}: first payload frame is at tar offset {fstart[e['offset']][1]}, data at {data_off.get(name)}")
        if len(chunks) > 1:
            nchunked += 1
            for i, c in enumerate(chunks):
                end = chunks[i + 1]["offset"] if i + 1 < len(chunks) else e["endOffset"]
                if not check(c["offset"] in fstart and end in fstart, f"{name}: chunk {i} bounds not frame boundaries"):
                    continue
                data = frames_between(c["offset"], end)
                check(len(data) == c.get("chunkSize"), f"{name}: chunk {i} holds {len(data)} != chunkSize {c.get('chunkSize')}")
                check(content[c.get("chunkOffset", 0):c.get("chunkOffset", 0) + len(data)] == data, f"{name}: chunk {i} not at chunkOffset")
                check(c.get("chunkDigest") == sha256(data), f"{name}: chunk {i} chunkDigest mismatch")
                if c.get("chunkType") == "zeros":
                    check(data == b"\x00" * len(data), f"{name}: zeros chunk {i} is not zeros")
    say(f"  {len(files)} regular files checked ({nchunked} split into chunks): offset/endOffset are frame "
        "boundaries and the frames between hold exactly the file (or chunk) bytes")
    return toc


def main():
    global verbose, ignore_diff_id
    args = sys.argv[1:]
    while args and args[0].startswith("-"):
        if args[0] == "-v":
            verbose = True
        elif args[0] == "--ignore-diff-id":
            ignore_diff_id = True
        else:
            sys.exit(__doc__)
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    layout, _, tag = args[0].partition(":")
    desc, man = resolve(layout, tag)
    cfg = read_json_blob(layout, man["config"])
    diff_ids = cfg["rootfs"]["diff_ids"]
    say(f"{layout}: manifest {desc['digest']} ({len(man['layers'])} layers)")
    for i, layer in enumerate(man["layers"]):
        ann = layer.get("annotations", {})
        say(f"layer {i}: {layer['mediaType']} {layer['digest']} size {layer['size']}")
        p = blob_path(layout, layer["digest"])
        check(os.path.getsize(p) == layer["size"], "blob size != descriptor size")
        check(sha256(open(p, "rb").read()) == layer["digest"], "blob digest mismatch")
        if ESGZ_TOC_ANN in ann:
            inspect_estargz(layout, layer, diff_ids[i])
        elif zc_ann(ann, "manifest-position")[0]:
            inspect_zstd_chunked(layout, layer, diff_ids[i])
        else:
            say("  not a lazy-pullable layer (no eStargz/zstd:chunked annotations)")
    if failures:
        say(f"\n{len(failures)} check(s) FAILED")
        sys.exit(1)
    say("\nall checks passed")


if __name__ == "__main__":
    main()
