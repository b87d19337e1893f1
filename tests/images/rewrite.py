#!/usr/bin/env python3
"""Layout surgery for tests/images/build.sh (stdlib only).

umoci writes single-stream gzip layers with OCI media types. The tests also
need the same layers in other encodings and manifest formats, which no
installed tool produces, so this script rewrites blobs and manifests:

  rewrite.py variant SRC DST KIND    KIND: plain | gzip-multimember |
                                           zstd-multiframe | docker
  rewrite.py opaque SRC              append a hand-made layer with opaque
                                     whiteouts (umoci never emits them)
  rewrite.py multiarch SRC DST       SRC has tags amd64/arm64; DST gets an
                                     image index (+ attestation manifest)
  rewrite.py verify LAYOUT...        check every blob's digest/size and that
                                     each layer decompresses to its diff_id
  rewrite.py whiteouts LAYOUT [MAX]  list .wh. entries per layer
  rewrite.py corpus OUTDIR           write OUTDIR/corpus.json

Uncompressed layer tars and configs never change, so config diff_ids stay
valid; only layer descriptors, manifests and index.json are rewritten.
"""
import concurrent.futures
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

# ~1 MiB of tar input per gzip member / zstd frame. Deliberately not a
# multiple of 512 so frame boundaries also fall inside tar headers.
CHUNK = 1_000_000
FIXED_TIME = 1700000000


# ---------------------------------------------------------------- layouts

def blob_path(layout, digest):
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def read_blob(layout, digest):
    with open(blob_path(layout, digest), "rb") as f:
        return f.read()


def read_json(layout, digest):
    return json.loads(read_blob(layout, digest))


def init_layout(layout):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def put_blob(layout, data):
    """Store bytes as a blob; returns (digest, size)."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = blob_path(layout, digest)
    if not os.path.exists(path):
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.rename(path + ".part", path)
    return digest, len(data)


def put_json(layout, obj):
    return put_blob(layout, json.dumps(obj, indent=2).encode() + b"\n")


def link_blob(src_layout, dst_layout, digest):
    """Share an unchanged blob between layouts (hardlink, copy as fallback)."""
    src, dst = blob_path(src_layout, digest), blob_path(dst_layout, digest)
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def write_index(layout, descriptors):
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": descriptors}, f, indent=2)
        f.write("\n")


def tagged(layout, tag="latest"):
    """The index.json descriptor carrying ref.name == tag."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    hits = [d for d in index["manifests"]
            if d.get("annotations", {}).get(REF_NAME) == tag]
    if len(hits) != 1:
        sys.exit(f"{layout}: expected one manifest tagged {tag}, got {len(hits)}")
    return hits[0]


def descriptor(media_type, digest, size, **extra):
    d = {"mediaType": media_type, "digest": digest, "size": size}
    d.update(extra)
    return d


# ---------------------------------------------------------------- compression

def run(cmd, data):
    return subprocess.run(cmd, input=data, stdout=subprocess.PIPE,
                          check=True).stdout


def decompress(media_type, data):
    """Decompress with the CLI tools: an independent check on our framing."""
    if media_type.endswith("+zstd") or media_type.endswith(".zstd"):
        return run(["zstd", "-q", "-d", "-c"], data)
    if media_type.endswith("gzip"):
        return run(["pigz", "-d", "-c"], data)
    return data


def compress_chunks(tool, tar):
    pieces = [tar[i:i + CHUNK] for i in range(0, len(tar), CHUNK)]
    cmd = {"gzip": ["gzip", "-n", "-6", "-c"], "zstd": ["zstd", "-q", "-3", "-c"]}[tool]
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(pool.map(lambda p: run(cmd, p), pieces))


def skippable_frame(nibble, payload=b""):
    # zstd skippable frame: magic 0x184D2A50..5F, LE u32 size, payload.
    return struct.pack("<II", 0x184D2A50 | nibble, len(payload)) + payload


# ---------------------------------------------------------------- commands

def cmd_variant(src, dst, kind):
    init_layout(dst)
    top = tagged(src)
    manifest = read_json(src, top["digest"])
    config = read_json(src, manifest["config"]["digest"])
    diff_ids = config["rootfs"]["diff_ids"]
    assert len(diff_ids) == len(manifest["layers"])
    link_blob(src, dst, manifest["config"]["digest"])

    layers = []
    for i, (layer, diff_id) in enumerate(zip(manifest["layers"], diff_ids)):
        if kind == "docker":
            # Same gzip bytes, only the media type changes.
            link_blob(src, dst, layer["digest"])
            layers.append(descriptor(DOCKER_LAYER_GZIP, layer["digest"], layer["size"]))
            continue
        tar = decompress(layer["mediaType"], read_blob(src, layer["digest"]))
        if "sha256:" + hashlib.sha256(tar).hexdigest() != diff_id:
            sys.exit(f"{src}: layer {i} does not match diff_id {diff_id}")
        if kind == "plain":
            blob, mt = tar, OCI_LAYER
        elif kind == "gzip-multimember":
            parts = compress_chunks("gzip", tar)
            if i == 2 and len(parts) > 1:
                # An empty gzip member mid-stream: legal, and easy to mishandle.
                parts.insert(1, run(["gzip", "-n", "-c"], b""))
            blob, mt = b"".join(parts), OCI_LAYER + "+gzip"
        elif kind == "zstd-multiframe":
            parts = compress_chunks("zstd", tar)
            if i == 1:
                # Empty skippable frame first, then an empty regular frame.
                parts[0:0] = [skippable_frame(0x0), run(["zstd", "-q", "-c"], b"")]
            if i == 2 and len(parts) > 1:
                # A skippable frame with a payload between two data frames.
                parts.insert(1, skippable_frame(0xF, b"ocimount-skippable-test"))
            blob, mt = b"".join(parts), OCI_LAYER + "+zstd"
        else:
            sys.exit(f"unknown variant kind {kind}")
        digest, size = put_blob(dst, blob)
        layers.append(descriptor(mt, digest, size))

    if kind == "docker":
        new = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
               "config": descriptor(DOCKER_CONFIG, manifest["config"]["digest"],
                                    manifest["config"]["size"]),
               "layers": layers}
        top_mt = DOCKER_MANIFEST
    else:
        new = dict(manifest, layers=layers)
        top_mt = OCI_MANIFEST
    digest, size = put_json(dst, new)
    write_index(dst, [descriptor(top_mt, digest, size,
                                 annotations={REF_NAME: "latest"})])


def tar_entry(tf, name, kind="file", data=b"", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.uid, ti.gid, ti.mode = FIXED_TIME, 0, 0, mode
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, 0o755
        tf.addfile(ti)
    else:
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))


def cmd_opaque(layout):
    """Append a layer with opaque whiteouts, which umoci 0.4.7 never writes.

    The oracle is still umoci: its unpacker does apply .wh..wh..opq.
    Entry order is deliberately awkward: new content is written before
    the opaque marker of its own directory.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tar_entry(tf, "o", "dir")
        tar_entry(tf, "o/new", data=b"added next to the opaque marker\n")
        tar_entry(tf, "o/.wh..wh..opq", mode=0)
        tar_entry(tf, "p", "dir")
        tar_entry(tf, "p/.wh..wh..opq", mode=0)      # p becomes empty
        tar_entry(tf, "n", "dir")
        tar_entry(tf, "n/.wh..wh..opq", mode=0)      # opaque with nothing below
        tar_entry(tf, "n/file", data=b"n\n")
    tar = buf.getvalue()
    top = tagged(layout)
    manifest = read_json(layout, top["digest"])
    config = read_json(layout, manifest["config"]["digest"])
    config["rootfs"]["diff_ids"].append("sha256:" + hashlib.sha256(tar).hexdigest())
    config.setdefault("history", []).append(
        {"created": "2023-11-14T22:13:20Z", "created_by": "rewrite.py opaque (hand-made layer)"})
    ldigest, lsize = put_blob(layout, gzip.compress(tar, mtime=0))
    cdigest, csize = put_json(layout, config)
    manifest["config"] = descriptor(manifest["config"]["mediaType"], cdigest, csize)
    manifest["layers"].append(descriptor(OCI_LAYER + "+gzip", ldigest, lsize))
    mdigest, msize = put_json(layout, manifest)
    write_index(layout, [descriptor(OCI_MANIFEST, mdigest, msize,
                                    annotations={REF_NAME: "latest"})])


def cmd_multiarch(src, dst):
    init_layout(dst)
    entries = []
    platforms = {"amd64": {"architecture": "amd64", "os": "linux"},
                 "arm64": {"architecture": "arm64", "os": "linux", "variant": "v8"}}
    for tag, platform in platforms.items():
        top = tagged(src, tag)
        manifest = read_json(src, top["digest"])
        for d in [top, manifest["config"]] + manifest["layers"]:
            link_blob(src, dst, d["digest"])
        entries.append(descriptor(OCI_MANIFEST, top["digest"], top["size"],
                                  platform=platform))

    # BuildKit-style attestation manifest: platform unknown/unknown, an
    # in-toto layer, annotations pointing at the image it describes.
    statement = {"_type": "https://in-toto.io/Statement/v0.1",
                 "predicateType": "https://spdx.dev/Document",
                 "subject": [{"name": "multiarch",
                              "digest": {"sha256": entries[0]["digest"][7:]}}],
                 "predicate": {"spdxVersion": "SPDX-2.3", "name": "ocimount-test"}}
    ldigest, lsize = put_json(dst, statement)
    cdigest, csize = put_json(dst, {
        "architecture": "unknown", "os": "unknown", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ldigest]}})
    adigest, asize = put_json(dst, {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, cdigest, csize),
        "layers": [descriptor("application/vnd.in-toto+json", ldigest, lsize,
                              annotations={"in-toto.io/predicate-type":
                                           statement["predicateType"]})]})
    entries.append(descriptor(
        OCI_MANIFEST, adigest, asize,
        annotations={"vnd.docker.reference.digest": entries[0]["digest"],
                     "vnd.docker.reference.type": "attestation-manifest"},
        platform={"architecture": "unknown", "os": "unknown"}))

    idigest, isize = put_json(dst, {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                    "manifests": entries})
    write_index(dst, [descriptor(OCI_INDEX, idigest, isize,
                                 annotations={REF_NAME: "latest"})])


def walk_manifests(layout, desc):
    """Yield (descriptor, manifest) for every image manifest below desc."""
    obj = read_json(layout, desc["digest"])
    if desc["mediaType"] == OCI_INDEX:
        for child in obj["manifests"]:
            yield from walk_manifests(layout, child)
    else:
        yield desc, obj


def check_blob(layout, desc):
    path = blob_path(layout, desc["digest"])
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if size != desc["size"] or "sha256:" + h.hexdigest() != desc["digest"]:
        sys.exit(f"{layout}: blob {desc['digest']} is corrupt (size {size})")


def cmd_verify(layouts):
    for layout in layouts:
        with open(os.path.join(layout, "index.json")) as f:
            index = json.load(f)
        nblobs = 0
        for top in index["manifests"]:
            check_blob(layout, top)
            nblobs += 1
            if top["mediaType"] == OCI_INDEX:
                for child in read_json(layout, top["digest"])["manifests"]:
                    check_blob(layout, child)
            for desc, manifest in walk_manifests(layout, top):
                check_blob(layout, manifest["config"])
                config = read_json(layout, manifest["config"]["digest"])
                for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
                    check_blob(layout, layer)
                    nblobs += 2
                    if "in-toto" in layer["mediaType"]:
                        continue
                    tar = decompress(layer["mediaType"], read_blob(layout, layer["digest"]))
                    if "sha256:" + hashlib.sha256(tar).hexdigest() != diff_id:
                        sys.exit(f"{layout}: {layer['digest']} does not decompress to {diff_id}")
        print(f"verify: {os.path.basename(layout)}: ok ({nblobs} blob checks)")


def cmd_whiteouts(layout, limit=20):
    for _, manifest in walk_manifests(layout, tagged(layout)):
        for i, layer in enumerate(manifest["layers"]):
            if "in-toto" in layer["mediaType"]:
                continue
            tar = decompress(layer["mediaType"], read_blob(layout, layer["digest"]))
            names = [m.name for m in tarfile.open(fileobj=io.BytesIO(tar))]
            wh = [n for n in names if os.path.basename(n).startswith(".wh.")]
            print(f"layer {i} {layer['digest'][7:19]} entries={len(names)} whiteouts={len(wh)}")
            for n in wh[:limit]:
                print("   ", n.encode("utf-8", "surrogateescape")[:120])
            if len(wh) > limit:
                print(f"    ... {len(wh) - limit} more")


def cmd_corpus(out):
    """corpus.json; every path in it is relative to OUTDIR."""
    def image(name, ref, compression, note=None):
        layout = f"layouts/{name}"
        full = os.path.join(out, layout)
        images = list(walk_manifests(full, tagged(full)))
        entry = {"name": name, "layout": layout, "ref": ref,
                 "ref_config": ref and ref + ".config.json",
                 "layers": len(images[0][1]["layers"]), "compression": compression}
        if note:
            entry["note"] = note
        return entry, images

    gz = "ref/debian-gzip"
    corpus = [image(*args)[0] for args in [
        ("debian-gzip", gz, "gzip", "built with umoci; the reference for all debian-*"),
        ("debian-zstd", gz, "zstd", "recompressed by skopeo (one frame per layer)"),
        ("debian-zstd-multiframe", gz, "zstd-multiframe",
         "~1 MB of tar per frame; layer 1 starts with an empty skippable frame and "
         "an empty frame, layer 2 has a skippable frame with a payload"),
        ("debian-gzip-multimember", gz, "gzip-multimember",
         "~1 MB of tar per member; layer 2 has an empty member"),
        ("debian-plain", gz, "none", None),
        ("debian-docker", gz, "gzip",
         "Docker v2 schema 2 media types; same blobs as debian-gzip"),
        ("tiny-opaque", "ref/tiny-opaque", "gzip",
         "last layer hand-made (python tarfile) with opaque whiteouts"),
    ]]
    multi, images = image("multiarch", None, "gzip",
                          "index.json -> image index: linux/amd64, linux/arm64/v8 and "
                          "an unknown/unknown attestation manifest")
    multi["platforms"] = []
    for desc, manifest in images:
        p = desc["platform"]
        if p["os"] == "unknown":
            continue
        ref = f"ref/multiarch-{p['architecture']}"
        multi["platforms"].append({
            "platform": "/".join(filter(None, (p["os"], p["architecture"], p.get("variant")))),
            "ref": ref, "ref_config": ref + ".config.json",
            "layers": len(manifest["layers"])})
    corpus.append(multi)

    for e in corpus:
        for path in [e["layout"], e["ref"], e["ref_config"]] + \
                [p[k] for p in e.get("platforms", []) for k in ("ref", "ref_config")]:
            if path and not os.path.exists(os.path.join(out, path)):
                sys.exit(f"corpus: {path} missing")
    with open(os.path.join(out, "corpus.json"), "w") as f:
        json.dump(corpus, f, indent=2)
        f.write("\n")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    {"variant": lambda: cmd_variant(*args),
     "opaque": lambda: cmd_opaque(*args),
     "multiarch": lambda: cmd_multiarch(*args),
     "verify": lambda: cmd_verify(args),
     "whiteouts": lambda: cmd_whiteouts(args[0], *map(int, args[1:])),
     "corpus": lambda: cmd_corpus(*args)}[cmd]()


if __name__ == "__main__":
    main(sys.argv)
