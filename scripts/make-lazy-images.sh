#!/usr/bin/env bash
# make-lazy-images.sh - convert an OCI image layout into the two lazily
# pullable layer formats, with their real producers, offline:
#
#   OUTDIR/estargz       eStargz, built by stargz-snapshotter's estargz package
#                        (tests/tools/estargz-build, Go, from Debian's
#                        golang-github-containerd-stargz-snapshotter-dev)
#   OUTDIR/zstd-chunked  zstd:chunked, written by
#                        `skopeo copy --dest-compress-format zstd:chunked`
#
# Both are single-manifest OCI layouts tagged TAG. The formats are described
# in tests/tools/LAZY_FORMATS.md; tests/tools/lazy-inspect.py checks them.
#
# Usage: scripts/make-lazy-images.sh SRC_LAYOUT[:TAG] OUTDIR
#   e.g. scripts/make-lazy-images.sh sample/image:latest /tmp/lazy
#
# TAG defaults to the ref name of SRC's only index.json entry. If TAG names
# an image index (e.g. sample/image), one platform is taken: PLATFORM, or the
# host's.
#
# Env:
#   PLATFORM             os/arch[/variant] to take from a multi-platform image
#                        (default: the host's, as skopeo and Go see it)
#   ESTARGZ_CHUNK_SIZE   eStargz chunk size in bytes (default 262144, so that
#                        files over 256 KiB get "chunk" entries; 0 = the
#                        library's 4 MiB)
#   ESTARGZ_PRIORITIZE   comma-separated files to put first in each layer that
#                        has them, followed by .prefetch.landmark (default
#                        "/bin/busybox,/etc/motd"; layers with none of them get
#                        .no.prefetch.landmark; set empty for no prioritizing)
#   ESTARGZ_PARTS        parts estargz.Build splits each layer into (its
#                        GOMAXPROCS; default 4, fixed so the bytes do not
#                        depend on the machine's CPU count)
#   ESTARGZ_BUILD_CACHE  where the Go tool is built (default OUTDIR/.cache)
#   ZSTD_FIX_DIFF_IDS    1 (default): if a zstd:chunked layer does not
#                        decompress to its config diff_id (skopeo 1.9.3 drops
#                        the tar's trailing record padding; see LAZY_FORMATS.md),
#                        rewrite the config's diff_ids, so the image is
#                        self-consistent. 0: keep skopeo's output untouched.
#   VERIFY               1 (default): run tests/tools/lazy-inspect.py on both
#   STEP_TIMEOUT         seconds allowed for each step (default 600)
#
# Needs: go (golang-go), golang-github-containerd-stargz-snapshotter-dev,
# skopeo, zstd, python3 (scripts/install-deps.sh installs them).
set -euo pipefail
umask 022

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tool_src=$repo_root/tests/tools/estargz-build
inspect=$repo_root/tests/tools/lazy-inspect.py
gopath=/usr/share/gocode
STEP_TIMEOUT=${STEP_TIMEOUT:-600}
ESTARGZ_CHUNK_SIZE=${ESTARGZ_CHUNK_SIZE:-262144}
ESTARGZ_PRIORITIZE=${ESTARGZ_PRIORITIZE-/bin/busybox,/etc/motd}
ESTARGZ_PARTS=${ESTARGZ_PARTS:-4}
ZSTD_FIX_DIFF_IDS=${ZSTD_FIX_DIFF_IDS:-1}
VERIFY=${VERIFY:-1}
PLATFORM=${PLATFORM:-}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'make-lazy-images: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

[[ $# -eq 2 ]] || usage
src_arg=$1 out_dir=$2

# SRC[:TAG] - the tag is what follows the last ':' if that holds no '/'.
src=$src_arg tag=
if [[ $src_arg == *:* && ${src_arg##*:} != */* ]]; then
    src=${src_arg%:*} tag=${src_arg##*:}
fi
[[ -f $src/index.json && -f $src/oci-layout ]] || die "$src is not an OCI image layout (no index.json / oci-layout)"
src=$(cd "$src" && pwd)

for cmd in go skopeo python3 zstd timeout; do
    command -v "$cmd" >/dev/null || die "'$cmd' not found; run scripts/install-deps.sh (Debian packages: golang-go skopeo python3 zstd coreutils)"
done
[[ -d $gopath/src/github.com/containerd/stargz-snapshotter/estargz ]] ||
    die "$gopath/src/github.com/containerd/stargz-snapshotter/estargz is missing; apt-get install golang-github-containerd-stargz-snapshotter-dev"

if [[ -z $tag ]]; then
    tag=$(python3 - "$src/index.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))["manifests"]
names = [d.get("annotations", {}).get("org.opencontainers.image.ref.name", "") for d in m]
print(names[0] if len(m) == 1 else "")
EOF
)
    [[ -n $tag ]] || die "$src/index.json does not have exactly one tagged entry; give SRC_LAYOUT:TAG"
fi

mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
cache=${ESTARGZ_BUILD_CACHE:-$out_dir/.cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

# --- build the eStargz tool (offline, GOPATH mode against Debian's sources) ---
tool=$cache/estargz-build
if [[ ! -x $tool || $tool_src/main.go -nt $tool ]]; then
    log "building $tool ($(go version | cut -d' ' -f3), stargz-snapshotter $(dpkg-query -W -f='${Version}' golang-github-containerd-stargz-snapshotter-dev 2>/dev/null || echo '?'))"
    (cd "$tool_src" && GO111MODULE=off GOPATH=$gopath GOFLAGS= GOCACHE=$cache/go-build \
        timeout "$STEP_TIMEOUT" go build -o "$tool.tmp" .) || die "building tests/tools/estargz-build failed"
    mv "$tool.tmp" "$tool"
fi

# Outputs are made in a scratch directory and moved into place at the end.
work=$(mktemp -d "$out_dir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# --- eStargz ------------------------------------------------------------------
log "eStargz: $src:$tag -> $out_dir/estargz:$tag (chunk size $ESTARGZ_CHUNK_SIZE, prioritize '${ESTARGZ_PRIORITIZE}')"
args=(-ref "$tag" -chunk-size "$ESTARGZ_CHUNK_SIZE" -parts "$ESTARGZ_PARTS")
[[ -n $PLATFORM ]] && args+=(-platform "$PLATFORM")
[[ -n $ESTARGZ_PRIORITIZE ]] && args+=(-prioritize "$ESTARGZ_PRIORITIZE")
timeout "$STEP_TIMEOUT" "$tool" "${args[@]}" "$src" "$work/estargz" || die "estargz-build failed (or timed out after ${STEP_TIMEOUT}s)"

# --- zstd:chunked -------------------------------------------------------------
skopeo_args=()
if [[ -n $PLATFORM ]]; then
    IFS=/ read -r p_os p_arch p_variant <<<"$PLATFORM"
    [[ -n $p_os && -n $p_arch ]] || die "PLATFORM must be os/arch[/variant], not '$PLATFORM'"
    skopeo_args+=(--override-os "$p_os" --override-arch "$p_arch")
    [[ -n ${p_variant:-} ]] && skopeo_args+=(--override-variant "$p_variant")
fi
log "zstd:chunked: $(skopeo --version): $src:$tag -> $out_dir/zstd-chunked:$tag"
timeout "$STEP_TIMEOUT" skopeo "${skopeo_args[@]}" copy -q --dest-compress-format zstd:chunked \
    "oci:$src:$tag" "oci:$work/zstd-chunked:$tag" ||
    die "skopeo copy --dest-compress-format zstd:chunked failed (or timed out); skopeo >= 1.6 (containers/image with zstd:chunked) is needed"

python3 - "$work/zstd-chunked" "$tag" "$ZSTD_FIX_DIFF_IDS" <<'EOF'
# Check that skopeo wrote zstd:chunked layers, and optionally make the
# config's diff_ids match what the layers decompress to.
import hashlib, json, os, subprocess, sys
layout, tag, fix = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
REF = "org.opencontainers.image.ref.name"
def blob(d): return os.path.join(layout, "blobs", *d.split(":", 1))
def put(obj):
    b = json.dumps(obj, separators=(",", ":")).encode()
    d = "sha256:" + hashlib.sha256(b).hexdigest()
    open(blob(d), "wb").write(b)
    return d, len(b)
idx = json.load(open(os.path.join(layout, "index.json")))
ents = [e for e in idx["manifests"] if e.get("annotations", {}).get(REF) == tag]
if len(ents) != 1:
    sys.exit(f"make-lazy-images: error: skopeo's output has {len(ents)} manifests tagged {tag}")
ent = ents[0]
man = json.load(open(blob(ent["digest"])))
for i, l in enumerate(man["layers"]):
    a = l.get("annotations", {})
    if not (l["mediaType"].endswith("+zstd") and any(k.endswith(".zstd-chunked.manifest-position") for k in a)):
        sys.exit(f"make-lazy-images: error: layer {i} ({l['mediaType']}) has no zstd-chunked annotations: "
                 "this skopeo does not write zstd:chunked")
cfg = json.load(open(blob(man["config"]["digest"])))
bad = []
for i, l in enumerate(man["layers"]):
    h = hashlib.sha256()
    p = subprocess.Popen(["zstd", "-dcq", blob(l["digest"])], stdout=subprocess.PIPE)
    for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
        h.update(chunk)
    if p.wait() != 0:
        sys.exit(f"make-lazy-images: error: zstd -d failed on layer {i}")
    got = "sha256:" + h.hexdigest()
    if got != cfg["rootfs"]["diff_ids"][i]:
        bad.append(i)
        print(f"make-lazy-images: zstd:chunked layer {i} decompresses to {got}, the config says "
              f"{cfg['rootfs']['diff_ids'][i]} (skopeo dropped trailing tar padding)", file=sys.stderr)
        cfg["rootfs"]["diff_ids"][i] = got
if bad and fix:
    old_cfg, old_man = man["config"]["digest"], ent["digest"]
    man["config"]["digest"], man["config"]["size"] = put(cfg)
    ent["digest"], ent["size"] = put(man)
    json.dump(idx, open(os.path.join(layout, "index.json"), "w"))
    for d in (old_cfg, old_man):
        os.remove(blob(d))
    print(f"make-lazy-images: rewrote the config's diff_ids for layers {bad} (ZSTD_FIX_DIFF_IDS=0 keeps them)", file=sys.stderr)
EOF

# --- verify and move into place ----------------------------------------------------
if [[ $VERIFY == 1 ]]; then
    for f in estargz zstd-chunked; do
        log "checking $f with tests/tools/lazy-inspect.py"
        flags=()
        [[ $f == zstd-chunked && $ZSTD_FIX_DIFF_IDS != 1 ]] && flags+=(--ignore-diff-id)
        out=$(timeout "$STEP_TIMEOUT" python3 "$inspect" "${flags[@]}" "$work/$f:$tag" 2>&1) ||
            { printf '%s\n' "$out" >&2; die "lazy-inspect.py found problems in the $f layout"; }
    done
fi
for f in estargz zstd-chunked; do
    rm -rf "${out_dir:?}/$f"
    mv "$work/$f" "$out_dir/$f"
done
log "done: $out_dir/estargz:$tag and $out_dir/zstd-chunked:$tag"
