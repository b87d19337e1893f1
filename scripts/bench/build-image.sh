#!/usr/bin/env bash
# Build the benchmark image with real producers, once, and cache it:
#
#   scripts/bench/build-image.sh SIZE CACHEDIR      SIZE: large | small | tiny
#
# Produces CACHEDIR/SIZE/gzip and CACHEDIR/SIZE/zstd (OCI layouts, tag
# "latest") and CACHEDIR/SIZE/image.json (what the image is). Nothing is done
# when CACHEDIR/SIZE/.complete holds this script's stamp.
#
#   large  ~540 MB of tar in 10 layers: Debian bookworm minbase (mmdebstrap),
#          three package-install layers (the files dpkg lists for the packages
#          a second mmdebstrap with python3, curl, gcc, make, libc6-dev adds,
#          then the whole of that rootfs for what maintainer scripts wrote),
#          a 48 MiB file made of real binaries, 10,000 small files,
#          deletions (docs, man pages, locales, a quarter of the small files),
#          a copied tree, churn, and a last small layer.
#   small  ~75 MB in 3 layers: minbase without /usr/share, perl and gconv;
#          an 8 MiB file and 2,000 small files; deletions and churn.
#   tiny   ~8 MB in 3 layers (the CI smoke run): /etc and /usr/sbin of
#          minbase; a 1 MiB file and 200 small files; deletions and churn.
#
# Layers are made by umoci (repack of a bundle diff), gzip-compressed by
# umoci; the zstd variant is skopeo's recompression of the same layers.
# The Debian rootfs tarballs are cached: minbase at target/debian-minbase.tar
# (the test corpus's; $OCIMOUNT_ROOTFS_CACHE overrides it, as there), the
# larger one in CACHEDIR. Needs root.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 large|small|tiny CACHEDIR" >&2; exit 2; }
SIZE=$1
CACHE=$(realpath -m "$2")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
case $SIZE in large | small | tiny) ;; *) echo "unknown size: $SIZE" >&2; exit 2 ;; esac
OUT=$CACHE/$SIZE
STAMP=$(cat "$HERE/build-image.sh" "$HERE/image.py" | sha256sum | cut -c1-32)
MIRROR=${OCIMOUNT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
MORE_PACKAGES=python3,perl,curl,ca-certificates,gcc,make,libc6-dev
START=$SECONDS
log() { printf '[bench-image %4ds] %s\n' $((SECONDS - START)) "$*" >&2; }
complete() { [[ -f $OUT/.complete && $(<"$OUT/.complete") == "$STAMP" ]]; }

complete && exit 0
[[ $EUID -eq 0 ]] || { echo "$0 must run as root (mknod, chown, umoci)" >&2; exit 1; }
mkdir -p "$CACHE"
exec 9>"$CACHE/.$SIZE.lock"
flock 9
complete && exit 0

# ------------------------------------------------------- Debian rootfs tars
# rootfs_tar PATH [mmdebstrap options]: PATH, built once under a lock. The
# minbase one is the test corpus's (tests/images/build.sh: same path, lock
# and command), so the two never download Debian twice.
rootfs_tar() {
  local tar=$1
  shift
  if [[ ! -s $tar ]]; then
    mkdir -p "$(dirname "$tar")"
    exec 8>"$tar.lock"
    flock 8
    if [[ ! -s $tar ]]; then
      log "mmdebstrap --variant=minbase $* $SUITE -> $tar"
      # stdin from /dev/null: mmdebstrap reads sources.list from a non-tty stdin
      mmdebstrap --quiet --format=tar --variant=minbase "$@" "$SUITE" "$tar.part" "$MIRROR" </dev/null
      mv "$tar.part" "$tar"
    fi
    exec 8>&-
  fi
}
MINBASE=$(realpath -m "${OCIMOUNT_ROOTFS_CACHE:-$REPO/target/debian-minbase.tar}")
rootfs_tar "$MINBASE"
MORE=
if [[ $SIZE == large ]]; then
  MORE=$CACHE/debian-more-$(echo "$MORE_PACKAGES" | sha256sum | cut -c1-8).tar
  rootfs_tar "$MORE" --include="$MORE_PACKAGES"
fi

TMP=$OUT.tmp
rm -rf "$TMP"
mkdir -p "$TMP/work"
W=$TMP/work
G=$TMP/gzip
B=$W/bundle
R=$B/rootfs
case $(dpkg --print-architecture) in
  amd64) ARCH=amd64 ;; arm64) ARCH=arm64 ;; armhf) ARCH=arm ;; i386) ARCH=386 ;;
  *) ARCH=$(dpkg --print-architecture) ;;
esac
LAYERS=()
repack() {
  umoci repack --refresh-bundle --history.created_by "bench image: $1" --image "$G:latest" "$B"
  LAYERS+=("$1")
  log "layer ${#LAYERS[@]}: $1"
}
untar() { tar -xpf "$1" -C "$R" --numeric-owner --xattrs --xattrs-include='*' "${@:2}"; }

umoci init --layout "$G"
umoci new --image "$G:latest"
umoci config --image "$G:latest" --no-history --architecture "$ARCH" --os linux --config.cmd /bin/bash
umoci unpack --image "$G:latest" "$B" >/dev/null

case $SIZE in
  large) LARGE_MIB=48 SMALL_FILES=10000 ;;
  small) LARGE_MIB=8 SMALL_FILES=2000 ;;
  tiny) LARGE_MIB=1 SMALL_FILES=200 ;;
esac

# ---- base
case $SIZE in
  large) untar "$MINBASE" ;;
  small) untar "$MINBASE" --exclude=./usr/share --exclude='./usr/lib/*/perl*' \
           --exclude='./usr/lib/*/libperl*' --exclude='./usr/lib/*/gconv' ;;
  tiny) untar "$MINBASE" ./etc ./usr/sbin ;;
esac
case $SIZE in
  large) repack "debian $SUITE minbase" ;;
  small) repack "debian $SUITE minbase without /usr/share, perl, gconv" ;;
  tiny) repack "debian $SUITE minbase /etc and /usr/sbin" ;;
esac

# ---- package installs (large): the files of each group of new packages,
# then the whole second rootfs for dpkg's database and maintainer scripts.
if [[ -n $MORE ]]; then
  python3 "$HERE/image.py" pkgsplit "$MORE" "$MINBASE" 3 "$W/pkgs"
  for i in 1 2 3; do
    untar "$MORE" --no-recursion -T "$W/pkgs/group$i.list"
    if ((i == 3)); then untar "$MORE"; fi
    repack "apt-get install $(cut -d' ' -f1-4 "$W/pkgs/group$i.pkgs" | tr -d '\n') …"
  done
fi

# ---- data: a large file, many small files
mkdir -p "$R/opt/bench"
python3 "$HERE/image.py" large "$R" "$R/opt/bench/large.bin" "$LARGE_MIB"
if [[ $SIZE == large ]]; then repack "a ${LARGE_MIB} MiB file"; fi
python3 "$HERE/image.py" small "$R" "$R/srv/small" "$SMALL_FILES"
if [[ $SIZE == large ]]; then repack "$SMALL_FILES small files"; else repack "a ${LARGE_MIB} MiB file and $SMALL_FILES small files"; fi

# ---- deletions (whiteouts over lower layers)
rm -rf "$R/usr/share/doc" "$R/usr/share/man" "$R/usr/share/locale" "$R/usr/share/info" \
  "$R/usr/include" "$R/var/cache/apt" "$R/var/lib/apt/lists" "$R/etc/cron.daily"
find "$R/srv/small" -name 'f*[048].txt' -delete
rm -rf "$R/srv/small/d001"
if [[ $SIZE == large ]]; then repack "deletions"; fi

# ---- a copied tree (large), churn, final touches
if [[ $SIZE == large ]]; then
  mkdir -p "$R/opt/app/lib"
  cp -a "$R/usr/lib/python3.11" "$R/opt/app/lib/"
  repack "copy of the python stdlib"
fi
find "$R/srv/small" -name 'f*7.txt' -exec sh -c 'for f; do echo changed >>"$f"; done' sh {} +
mkdir -p "$R/srv/small/d001"; echo recreated >"$R/srv/small/d001/new.txt"
echo "bench ALL=(ALL) ALL" >"$R/etc/bench.conf"; chmod 0640 "$R/etc/bench.conf"
echo "# bench" >>"$R/etc/bash.bashrc"
chmod 0700 "$R/srv/small/d000"
if [[ $SIZE == large ]]; then
  repack "churn"
  echo "last layer" >"$R/etc/bench-release"
  repack "final"
else
  repack "deletions and churn"
fi
rm -rf "$B"

log "zstd variant (skopeo)"
skopeo --insecure-policy copy -q --dest-compress-format zstd "oci:$G:latest" "oci:$TMP/zstd:latest"

python3 - "$TMP" "$SIZE" "${LAYERS[@]}" <<'EOF'
import json, os, sys
root, size, names = sys.argv[1], sys.argv[2], sys.argv[3:]
info = {"size": size, "layers": []}
for fmt in ("gzip", "zstd"):
    lay = os.path.join(root, fmt)
    def blob(d): return os.path.join(lay, "blobs", "sha256", d.split(":")[1])
    idx = json.load(open(os.path.join(lay, "index.json")))
    man = json.load(open(blob(idx["manifests"][0]["digest"])))
    info[fmt + "_bytes"] = sum(l["size"] for l in man["layers"])
    if fmt == "gzip":
        for name, l in zip(names, man["layers"]):
            info["layers"].append({"created_by": name, "gzip_bytes": l["size"]})
json.dump(info, open(os.path.join(root, "image.json"), "w"), indent=1)
EOF
rm -rf "$W"
echo "$STAMP" >"$TMP/.complete"
if [[ -e $OUT ]]; then mv "$OUT" "$OUT.old.$$"; fi
mv "$TMP" "$OUT"
rm -rf "$OUT.old.$$"
log "done: $OUT (${#LAYERS[@]} layers)"
