#!/usr/bin/env bash
# Benchmark ocimount against its peers on one realistic image, in one run on
# this machine, and write bench/results/<host>-<date>.{md,json,svg}.
#
#   scripts/bench.sh [--size large|small|tiny] [--reps N] [--cache-dir DIR]
#                    [--out DIR] [--name NAME] [--nrand N] [--timeout S]
#                    [--max-time S] [--bin PATH] [--commit TEXT] [--files N]
#                    [--fleet-nodes N]
#
#   --size      large (default): ~540 MB of tar in 10 layers; small: ~75 MB in
#               3 layers, for quick runs; tiny: ~8 MB (the CI smoke run)
#   --reps      repetitions of every measure, medians reported (default 5;
#               3 for large)
#   --cache-dir where the images and Debian rootfs tarballs are cached
#               (default target/bench-images; built once, see
#               scripts/bench/build-image.sh)
#   --out       results directory (default bench/results)
#   --name      results base name (default HOST-YYYY-MM-DD)
#   --nrand     random 4 KiB reads per measure (default 1000)
#   --timeout   bound on any one step, seconds (default 1800)
#   --max-time  bound on the whole measurement, seconds (default 14400)
#   --bin       an ocimount binary to measure instead of building one
#   --commit    what that binary was built from, for the report (default:
#               `git describe --always --dirty` of this checkout)
#   --files     files in the many-files image (default 1000000; 10000 for tiny)
#   --fleet-nodes  nodes behind the pull-through mirror (default 8; 0: none)
#
# Peers, all on the same image: zcat/zstdcat of every layer (the limit),
# umoci unpack and the extracted directory, ratarmount (PyPI, in a venv under
# target/bench-venv; it mounts the layer blobs as a union with no whiteouts),
# fuse-overlayfs and kernel overlayfs over the layers extracted with tar.
# Registry rows (scripts/bench/registry.py): the gzip image served by
# Debian's docker-registry on 127.0.0.1; `skopeo copy` then a mount, against
# ocimount reading docker:// lazily, with and without a published index; the
# same image made eStargz and zstd:chunked by their real producers
# (scripts/make-lazy-images.sh, once, kept beside the image) and read through
# their tables of contents; and, through links paced to 1 Gbit/s and
# 100 Mbit/s (scripts/bench/link.py: a veth pair into a network namespace,
# paced by tc tbf, with a second registry inside), the first file with neither against
# `skopeo copy`.
# Scale rows (scripts/bench/scale.py): an image of --files files (mounts,
# find, daemon RSS, against umoci unpack); `ocimount run` with --prefetch
# none, all and recorded; mount + read everything with and without the fill.
# Fleet rows (scripts/bench/fleet.py): a second docker-registry as a
# pull-through cache of an upstream holding the gzip image, named as the
# mirror by a registries.conf; --fleet-nodes nodes with empty caches read the
# first file through it in two waves (node 1, then the rest at once), for
# three fleets: the index artifact published beforehand, node 1 mounting with
# --publish-index, and neither. Bytes the upstream and the mirror served,
# each node's time.
# Needs root (drop_caches, mount, mknod) and /dev/fuse. It is a benchmark,
# not a test: nothing here fails for being slow.
set -euo pipefail
CALLER=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

size=large reps='' cache_dir=target/bench-images out=bench/results name='' nrand=1000
step_timeout=1800 max_time=14400 bin='' commit='' files='' fleet_nodes=8
usage() { sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
  case $1 in
    --size) size=${2:?}; shift ;;
    --reps) reps=${2:?}; shift ;;
    --cache-dir) cache_dir=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --name) name=${2:?}; shift ;;
    --nrand) nrand=${2:?}; shift ;;
    --timeout) step_timeout=${2:?}; shift ;;
    --max-time) max_time=${2:?}; shift ;;
    --bin) bin=${2:?}; shift ;;
    --commit) commit=${2:?}; shift ;;
    --files) files=${2:?}; shift ;;
    --fleet-nodes) fleet_nodes=${2:?}; shift ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
  shift
done
case $size in large | small | tiny) ;; *) echo "--size: large, small or tiny" >&2; exit 2 ;; esac
# Paths given on the command line are the caller's; the defaults are the repo's.
for v in cache_dir out bin; do
  [[ -z ${!v} || ${!v} == /* || ${!v} == target/bench-images || ${!v} == bench/results ]] || printf -v "$v" '%s' "$CALLER/${!v}"
done
[[ -n $reps ]] || { [[ $size == large ]] && reps=3 || reps=5; }
[[ -n $files ]] || { [[ $size == tiny ]] && files=10000 || files=1000000; }
[[ $EUID -eq 0 ]] || { echo "$0 needs root (drop_caches, mount, mknod)" >&2; exit 1; }
[[ -e /dev/fuse ]] || { echo "$0 needs /dev/fuse" >&2; exit 1; }
for tool in umoci skopeo docker-registry mmdebstrap fuse-overlayfs fusermount3 zstd zcat tar python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
log() { printf '[bench.sh] %s\n' "$*" >&2; }

if [[ -z $bin ]]; then
  log "cargo build --release"
  timeout 3600 cargo build --release --locked -q
  bin=$REPO/target/release/ocimount
fi

log "image: $size (cached in $cache_dir)"
timeout 3600 scripts/bench/build-image.sh "$size" "$cache_dir"

venv=$REPO/target/bench-venv
RATARMOUNT_VERSION=1.3.0
have=$("$venv/bin/ratarmount" --version 2>/dev/null | head -n1 || true)
if [[ $have != "ratarmount $RATARMOUNT_VERSION" ]]; then
  log "ratarmount $RATARMOUNT_VERSION from PyPI into $venv"
  timeout 300 python3 -m venv "$venv"
  timeout 1200 "$venv/bin/pip" install -q --disable-pip-version-check "ratarmount==$RATARMOUNT_VERSION"
fi

mkdir -p "$REPO/target"
work=$(mktemp -d "$REPO/target/bench-work.XXXXXX")   # a disk, not a tmpfs
cleanup() {
  local m
  # Everything mounted under the work dir, deepest first, whatever state it is in.
  while read -r m; do
    umount "$m" 2>/dev/null || fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v w="$work/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r)
  rm -rf "$work"
}
trap cleanup EXIT

args=(run --bin "$bin" --image "$cache_dir/$size" --work "$work" --out "$out" --reps "$reps"
  --ratarmount "$venv/bin/ratarmount" --nrand "$nrand" --timeout "$step_timeout"
  --files "$files" --images-cache "$cache_dir" --fleet-nodes "$fleet_nodes")
[[ -n $name ]] && args+=(--name "$name")
[[ -n $commit ]] && args+=(--commit "$commit")
log "measuring: $reps repetitions (bounded to ${max_time}s)"
# In the background, so that a signal to this script stops it at once: the
# runner unmounts what it mounted on SIGTERM, then the EXIT trap sweeps.
timeout -k 120 "$max_time" python3 scripts/bench/run.py "${args[@]}" >"$work/report" &
runner=$!
stop() { kill -TERM "$runner" 2>/dev/null || true; wait "$runner" || true; exit "$1"; }
trap 'stop 130' INT
trap 'stop 143' TERM
wait "$runner"
md=$(<"$work/report")
log "wrote ${md%.md}.{md,json,svg}"
cat "$md"
