#!/usr/bin/env bash
# Build the OCI image-layout corpus for ocimount's integration tests, with
# umoci unpacks as the reference ("oracle") trees.
#
#   tests/images/build.sh OUTDIR
#
# Produces OUTDIR/layouts/NAME (OCI layouts, tag "latest"), OUTDIR/ref/NAME
# (expected rootfs) + OUTDIR/ref/NAME.config.json, and OUTDIR/corpus.json.
# Cached: does nothing if OUTDIR/.complete holds this script's version stamp.
# The Debian rootfs tarball is cached apart from OUTDIR (OUTDIR/../
# debian-minbase.tar or $OCIMOUNT_ROOTFS_CACHE) so script edits never
# re-download Debian. Needs root (mknod, chown, umoci unpack as root).
# Set OCIMOUNT_CORPUS_SELFCHECK=1 to also unpack debian-plain, -gzip-multimember
# and (via skopeo) -zstd with umoci and treecmp them against the gzip
# reference (adds ~1 min; off by default). OCIMOUNT_TREECMP overrides the
# path of treecmp.py (default: shared/tools beside the repository).
set -euo pipefail

[[ $# -eq 1 ]] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$(realpath -m "$1")
REWRITE=(python3 "$HERE/rewrite.py")
STAMP=$(cat "$HERE/build.sh" "$HERE/rewrite.py" | sha256sum | cut -c1-32)
ROOTFS_TAR=$(realpath -m "${OCIMOUNT_ROOTFS_CACHE:-$(dirname "$OUT")/debian-minbase.tar}")
TREECMP=${OCIMOUNT_TREECMP:-$HERE/../../../shared/tools/treecmp.py}
MIRROR=${OCIMOUNT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
T=@1700000000                          # fixed mtime for everything we create
HIST=2023-11-14T22:13:20Z              # same instant, for history entries
START=$SECONDS

log() { printf '[images %3ds] %s\n' $((SECONDS - START)) "$*" >&2; }
complete() { [[ -f $OUT/.complete && $(<"$OUT/.complete") == "$STAMP" ]]; }

complete && exit 0                     # fast path: no lock needed
mkdir -p "$(dirname "$OUT")"
exec 9>"$OUT.lock"
flock 9                                # parallel test processes build once
complete && exit 0                     # built by whoever held the lock

# ---------------------------------------------------------------- tools
declare -A PKG=([umoci]=umoci [skopeo]=skopeo [mmdebstrap]=mmdebstrap
                [zstd]=zstd [pigz]=pigz [gzip]=gzip [setfattr]=attr)
missing=()
for tool in "${!PKG[@]}"; do command -v "$tool" >/dev/null || missing+=("${PKG[$tool]}"); done
if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || { echo "missing packages: ${missing[*]}" >&2; exit 1; }
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
[[ $EUID -eq 0 ]] || { echo "$0 must run as root (mknod, chown)" >&2; exit 1; }

# ---------------------------------------------------------------- rootfs
# Downloaded once; its own lock because several OUTDIRs may share it.
if [[ ! -s $ROOTFS_TAR ]]; then
  mkdir -p "$(dirname "$ROOTFS_TAR")"
  exec 8>"$ROOTFS_TAR.lock"
  flock 8
  if [[ ! -s $ROOTFS_TAR ]]; then
    log "mmdebstrap minbase bookworm -> $ROOTFS_TAR"
    # stdin from /dev/null: mmdebstrap reads sources.list from a non-tty stdin
    mmdebstrap --quiet --format=tar --variant=minbase bookworm "$ROOTFS_TAR.part" "$MIRROR" </dev/null
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  fi
  exec 8>&-
  log "rootfs ready"
fi

TMP=$OUT.tmp
rm -rf "$TMP"                          # leftover of a crashed build
mkdir -p "$TMP/layouts" "$TMP/ref" "$TMP/work"
W=$TMP/work

# Unpack LAYOUT:TAG with umoci and keep rootfs as ref/NAME (+ config.json).
make_ref() {
  local image=$1 name=$2
  umoci unpack --image "$image" "$W/ref-$name" >/dev/null
  mv "$W/ref-$name/rootfs" "$TMP/ref/$name"
  mv "$W/ref-$name/config.json" "$TMP/ref/$name.config.json"
  rm -rf "$W/ref-$name"
}

# =============================================================== debian-gzip
G=$TMP/layouts/debian-gzip
B=$W/bundle
R=$B/rootfs
C=$R/corpus
repack() {                             # one umoci layer from the bundle diff
  # Everything changed since the mark (files and the dirs holding them) gets
  # the fixed mtime, so a rebuild from the same rootfs gives the same digests.
  find "$R" -newer "$W/mark" -exec touch -h -d "$T" {} +
  umoci repack --refresh-bundle --history.created "$HIST" \
    --history.created_by "build.sh: $1" --image "$G:latest" "$B"
  log "layer: $1"
}
stamp() { find "$@" -exec touch -h -d "$T" {} +; }   # stable mtimes

umoci init --layout "$G"
umoci new --image "$G:latest"
umoci config --image "$G:latest" --no-history --created "$HIST" \
  --architecture amd64 --os linux --config.cmd /bin/bash
umoci unpack --image "$G:latest" "$B" >/dev/null

# Layer 0: the Debian rootfs as is (includes /dev nodes from mmdebstrap).
touch "$W/mark"
tar -xpf "$ROOTFS_TAR" -C "$R" --numeric-owner --xattrs --xattrs-include='*'
repack "debian bookworm minbase"

# Layer 1: one of every kind of entry, plus things later layers change.
mkdir -p "$C"/{del/tree/a/b/c,recreate/sub,swap/dir2file/inner,links/sub,xattr/dir,modes,special,owner/dir,names,symlinks,meta,empty-dir}
echo file1 >"$C/del/file1"; echo file2 >"$C/del/file2"
for d in "" a a/b a/b/c; do echo "in $d" >"$C/del/tree/$d/f"; done
echo old-a >"$C/recreate/a"; echo old-b >"$C/recreate/b"; echo old-c >"$C/recreate/sub/c"
echo inner >"$C/swap/dir2file/inner/f"; echo g >"$C/swap/dir2file/g"
echo was-a-file >"$C/swap/file2dir"
echo was-a-file >"$C/swap/file2symlink"
ln -s ../links/orig "$C/swap/symlink2file"
# hardlinks inside one layer, across directories
echo shared-content >"$C/links/orig"
ln "$C/links/orig" "$C/links/orig.hl1"
ln "$C/links/orig" "$C/links/sub/orig.hl2"
echo trio >"$C/links/trio1"; ln "$C/links/trio1" "$C/links/trio2"; ln "$C/links/trio1" "$C/links/sub/trio3"
echo lower-target >"$C/links/lower-target"       # gets an upper-layer link
# user.* xattrs (other namespaces need privileges an unprivileged FUSE lacks;
# no empty values: umoci drops them, PAX cannot carry them)
echo x >"$C/xattr/file"
setfattr -n user.mime -v text/plain "$C/xattr/file"
setfattr -n user.binary -v 0x00ff7f80 "$C/xattr/file"
setfattr -n user.long -v "$(printf 'v%.0s' {1..1000})" "$C/xattr/file"
setfattr -n user.dir -v "on a directory" "$C/xattr/dir"
echo strip-me >"$C/xattr/strip-later"; setfattr -n user.gone -v soon "$C/xattr/strip-later"
# special mode bits
for m in 4755 2755 6755 0000 0123 0777; do echo "$m" >"$C/modes/file-$m"; chmod "$m" "$C/modes/file-$m"; done
mkdir "$C/modes/dir-1777" "$C/modes/dir-2775" "$C/modes/dir-0700"
chmod 1777 "$C/modes/dir-1777"; chmod 2775 "$C/modes/dir-2775"; chmod 0700 "$C/modes/dir-0700"
# special files
mkfifo "$C/special/fifo"
mknod "$C/special/null" c 1 3
mknod "$C/special/loop0" b 7 0
# odd owners (dir, file, symlink)
echo owned >"$C/owner/file"; chown 1234:5678 "$C/owner/file"
chown 4321:8765 "$C/owner/dir"
ln -s file "$C/owner/link"; chown -h 1111:2222 "$C/owner/link"
# long paths and names
n255=$(printf 'N%.0s' {1..255}); n254=$(printf 'M%.0s' {1..254})
echo 255 >"$C/names/$n255"; echo 254 >"$C/names/$n254"
deep="$C/names/deep/$(printf 'd%.0s' {1..60})/$(printf 'e%.0s' {1..60})/$(printf 'f%.0s' {1..60})"
mkdir -p "$deep"; echo deep >"$deep/$n254"                     # path > 500 bytes
ln "$deep/$n254" "$C/links/to-long-path"                      # long hardlink target
ln -s "$(printf 'x%.0s' {1..200})/target" "$C/symlinks/long-target"
# awkward but legal names
echo latin1 >"$C/names/"$'caf\xe9-latin1'                     # not UTF-8
echo latin1b >"$C/names/"$'na\xefve-latin1'                   # deleted later
echo utf8 >"$C/names/ünïcødé-名前"
echo nl >"$C/names/"$'new\nline'
echo bs >"$C/names/back\\slash"
echo sp >"$C/names/sp ace #%"
echo notwh >"$C/names/.whistle"                               # ".wh" but no dot
echo dots >"$C/names/..."
: >"$C/empty"
# symlinks: loops, dangling, absolute, directory link
ln -s loop-b "$C/symlinks/loop-a"; ln -s loop-a "$C/symlinks/loop-b"
ln -s self "$C/symlinks/self"
ln -s /nonexistent/target "$C/symlinks/dangling"
ln -s /etc/os-release "$C/symlinks/absolute"
ln -s ../links "$C/symlinks/dir-link"
ln -s target-changes-later "$C/symlinks/retarget"
# metadata-only changes later
for f in chmod-me chown-me xattr-me; do echo "$f" >"$C/meta/$f"; done
repack "every entry type"

# Layer 2: bulk data.
mkdir -p "$C/big" "$C/many"
python3 - "$C/big" <<'EOF'
import random, sys
# 20 MiB incompressible but reproducible; 30 MiB very compressible.
open(sys.argv[1] + "/random.bin", "wb").write(random.Random(42).randbytes(20 << 20))
line = b"ocimount compressible test line, the same again and again.\n"
with open(sys.argv[1] + "/compressible.txt", "wb") as f:
    f.write((line * ((30 << 20) // len(line) + 1))[:30 << 20])
open(sys.argv[1] + "/shrinks.txt", "wb").write(line * 20000)   # replaced later
EOF
for i in $(seq -w 0 1999); do echo "small file $i" >"$C/many/f$i"; done
repack "bulk data"

# Layer 3: deletions (whiteouts), re-creations, type swaps, metadata-only.
rm "$C/del/file1"
rm -r "$C/del/tree"                                  # whole directory
rm -r "$R/usr/share/doc"                             # directory from layer 0
rm "$R/etc/motd"
rm "$C/names/$n255"                                  # whiteout name > 255 bytes
rm "$C/names/"$'na\xefve-latin1'                     # non-UTF-8 whiteout
rm "$C/links/orig.hl1"                               # other links stay
rm -r "$C/recreate"; mkdir -p "$C/recreate/sub2"     # delete + recreate dir
echo new-a >"$C/recreate/a"; echo new-d >"$C/recreate/sub2/d"
rm -r "$R/etc/apt/apt.conf.d"; mkdir "$R/etc/apt/apt.conf.d"
echo 'APT::Install-Recommends "false";' >"$R/etc/apt/apt.conf.d/99ocimount"
rm -r "$C/swap/dir2file"; echo now-a-file >"$C/swap/dir2file"
rm "$C/swap/file2dir"; mkdir "$C/swap/file2dir"; echo inside >"$C/swap/file2dir/f"
rm "$C/swap/file2symlink"; ln -s ../links/orig "$C/swap/file2symlink"
rm "$C/swap/symlink2file"; echo now-a-file >"$C/swap/symlink2file"
ln "$C/links/lower-target" "$C/links/upper-link"     # new link, lower file
chmod 0600 "$C/meta/chmod-me"                        # only metadata changes
chmod 0640 "$R/etc/debian_version"
chown 42:43 "$C/meta/chown-me"
setfattr -n user.added -v later "$C/meta/xattr-me"
repack "whiteouts and swaps"

# Layer 4: re-add over whiteouts, churn in the big directory.
echo "tree is a file now" >"$C/del/tree"             # was a dir, whited out
mkdir "$R/usr/share/doc"; echo fresh >"$R/usr/share/doc/README"  # lower stays hidden
for i in $(seq -w 0 4 1999); do rm "$C/many/f$i"; done          # 500 whiteouts
for i in $(seq -w 1 100 1999); do echo "changed $i" >"$C/many/f$i"; done
echo "small now" >"$C/big/shrinks.txt"             # content-only change
ln -sfn new-target "$C/symlinks/retarget"
chmod 0750 "$C/xattr/dir"                            # dir metadata, children stay
repack "re-add and churn"

# Layer 5: small final touches.
setfattr -x user.gone "$C/xattr/strip-later"
echo "last layer" >"$C/final"
rm "$C/links/sub/orig.hl2"
repack "final"
rm -rf "$B"

log "reference unpack of debian-gzip"
make_ref "$G:latest" debian-gzip

# ================================================ re-encodings of debian-gzip
log "debian-zstd (skopeo)"
skopeo --insecure-policy copy -q --dest-compress-format zstd \
  "oci:$G:latest" "oci:$TMP/layouts/debian-zstd:latest"
for kind in zstd-multiframe gzip-multimember plain docker; do
  name=debian-$kind
  log "$name (rewrite.py)"
  "${REWRITE[@]}" variant "$G" "$TMP/layouts/$name" "$kind"
done

# ===================================================== tiny images (multiarch)
# Tiny rootfs shared by both arches; the top layer differs by /platform.
M=$W/multi
umoci init --layout "$M"
for arch in amd64 arm64; do
  umoci new --image "$M:$arch"
  umoci config --image "$M:$arch" --no-history --created "$HIST" \
    --architecture "$arch" --os linux --config.cmd /bin/hello
  umoci unpack --image "$M:$arch" "$W/mb" >/dev/null
  r=$W/mb/rootfs
  mkdir -p "$r"/{bin,etc,data}
  printf '#!/bin/sh\necho hello\n' >"$r/bin/hello"; chmod 755 "$r/bin/hello"
  echo tiny >"$r/etc/hostname"; echo "to be removed" >"$r/data/old"
  stamp "$r"
  umoci repack --refresh-bundle --history.created "$HIST" --image "$M:$arch" "$W/mb"
  echo "linux/$arch" >"$r/platform"; rm "$r/data/old"
  stamp "$r"
  umoci repack --history.created "$HIST" --image "$M:$arch" "$W/mb"
  rm -rf "$W/mb"
  make_ref "$M:$arch" "multiarch-$arch"
done
log "multiarch"
"${REWRITE[@]}" multiarch "$M" "$TMP/layouts/multiarch"

# ====================================== tiny-opaque: opaque whiteouts on top
O=$TMP/layouts/tiny-opaque
umoci init --layout "$O"
umoci new --image "$O:latest"
umoci config --image "$O:latest" --no-history --created "$HIST" --architecture amd64 --os linux
umoci unpack --image "$O:latest" "$W/ob" >/dev/null
r=$W/ob/rootfs
mkdir -p "$r"/{o/sub,p/q,keep}
echo a >"$r/o/a"; echo c >"$r/o/sub/c"; echo q >"$r/p/q/f"; echo k >"$r/keep/x"
stamp "$r"
umoci repack --history.created "$HIST" --image "$O:latest" "$W/ob"
rm -rf "$W/ob"
"${REWRITE[@]}" opaque "$O"
make_ref "$O:latest" tiny-opaque
log "tiny-opaque"

# ================================================================ checks
# Every blob matches its digest, every layer decompresses to its diff_id.
"${REWRITE[@]}" verify "$TMP"/layouts/* >&2
if [[ ${OCIMOUNT_CORPUS_SELFCHECK:-0} == 1 ]]; then
  # umoci 0.4.7 reads neither zstd nor Docker media types: debian-zstd goes
  # through skopeo back to gzip first; debian-docker shares gzip's blobs.
  skopeo --insecure-policy copy -q --dest-compress-format gzip \
    "oci:$TMP/layouts/debian-zstd:latest" "oci:$W/zstd-as-gzip:latest"
  for image in "$TMP/layouts/debian-plain" "$TMP/layouts/debian-gzip-multimember" "$W/zstd-as-gzip"; do
    log "selfcheck: $image"
    umoci unpack --image "$image:latest" "$W/check" >/dev/null
    python3 "$TREECMP" "$TMP/ref/debian-gzip" "$W/check/rootfs" >&2
    rm -rf "$W/check"
  done
fi
rm -rf "$W"
"${REWRITE[@]}" corpus "$TMP"

echo "$STAMP" >"$TMP/.complete"
# Swap in the new tree; an old one (other stamp) is removed after the rename.
if [[ -e $OUT ]]; then mv "$OUT" "$OUT.old.$$"; fi
mv "$TMP" "$OUT"
rm -rf "$OUT.old.$$"
log "done: $OUT"
