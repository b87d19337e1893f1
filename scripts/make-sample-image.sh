#!/usr/bin/env bash
# make-sample-image.sh - build the small multi-arch OCI image layout in
# sample/image/ that ocimount's docs and tests use as a realistic fixture.
#
# Each platform image is busybox-static from Debian (one .deb per
# architecture), built layer by layer with umoci:
#   layer 1  tiny rootfs: /bin/busybox + applet symlinks, a hardlink, /etc files
#   layer 2  umoci repack of changes: whiteout, replaced file, new dir,
#            a directory deleted and recreated (umoci writes per-entry whiteouts)
#   layer 3  umoci raw add-layer of a hand-made tar with an opaque directory
#            (.wh..wh..opq), which umoci repack never emits itself
# The per-platform manifests are then put behind a nested image index:
#   index.json -(ref "latest")-> image index blob -> one manifest per platform
#
# Usage: scripts/make-sample-image.sh            (needs root: dpkg, chown)
# Env:   PLATFORMS          default "linux/amd64 linux/arm64/v8 linux/arm/v7"
#        SOURCE_DATE_EPOCH  fixed timestamp for files/history (default 2025-01-01)
#        BUSYBOX_VERSION    pin the Debian version (default: apt's candidate)
#        OUT_DIR            default <repo>/sample
set -euo pipefail
umask 022   # modes in the layers must not depend on the caller

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out_dir=${OUT_DIR:-$repo_root/sample}
image_dir=$out_dir/image
PLATFORMS=${PLATFORMS:-"linux/amd64 linux/arm64/v8 linux/arm/v7"}
# A fixed epoch keeps tar mtimes, config/history dates and hence digests
# stable between rebuilds (2025-01-01T00:00:00Z).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1735689600}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
pkg=busybox-static

MT_INDEX=application/vnd.oci.image.index.v1+json
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (dpkg --add-architecture, and umoci unpack/repack must keep uid/gid)"

# OCI platform -> Debian architecture of the .deb to use.
deb_arch_of() {
    case $1 in
        linux/amd64)               echo amd64 ;;
        linux/arm64 | linux/arm64/v8) echo arm64 ;;
        linux/arm/v7)              echo armhf ;;
        *) die "unsupported platform $1" ;;
    esac
}

# --- tools -----------------------------------------------------------------
need=()
command -v umoci >/dev/null || need+=(umoci)
command -v jq >/dev/null || need+=(jq)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/ocimount-sample.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout=$work/oci            # scratch umoci layout holding every build step
mkdir -p "$work/debs"
# Let apt's unprivileged _apt user write the downloads (avoids its warning).
chmod 0755 "$work"
chown _apt "$work/debs" 2>/dev/null || true

# --- fetch the .debs ---------------------------------------------------------
# Foreign architectures must be known to dpkg before apt will list them.
native=$(dpkg --print-architecture)
added=0
specs=()
for p in $PLATFORMS; do
    a=$(deb_arch_of "$p")
    if [[ $a != "$native" ]] && ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        log "dpkg --add-architecture $a"
        dpkg --add-architecture "$a"
        added=1
    fi
    specs+=("$pkg:$a${BUSYBOX_VERSION:+=$BUSYBOX_VERSION}")
done
download() { (cd "$work/debs" && apt-get download "${specs[@]}"); }
if ((added)) || ! download; then
    # A partial update failure (e.g. one mirror index mid-sync) must not stop
    # us: the download below fails loudly if busybox-static is really missing.
    apt-get update || log "warning: apt-get update reported errors, trying anyway"
    download
fi

deb_for() { ls "$work"/debs/"${pkg}"_*_"$1".deb; }
version=$(dpkg-deb -f "$(deb_for "$(deb_arch_of "${PLATFORMS%% *}")")" Version)
for p in $PLATFORMS; do
    v=$(dpkg-deb -f "$(deb_for "$(deb_arch_of "$p")")" Version)
    [[ $v == "$version" ]] || die "version skew: $pkg $v for $p vs $version"
done
log "using $pkg $version"

# Set every mtime in a tree to the fixed epoch (-h: the link, not its target).
pin_mtimes() { find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +; }

umoci init --layout "$layout"

# --- one platform ------------------------------------------------------------
build_platform() {
    local platform=$1 os arch variant deb_arch tag debroot b r
    IFS=/ read -r os arch variant <<<"$platform"
    deb_arch=$(deb_arch_of "$platform")
    tag=$arch${variant:+-$variant}
    debroot=$work/deb-$deb_arch
    dpkg-deb -x "$(deb_for "$deb_arch")" "$debroot"
    log "building $platform (tag $tag, $pkg:$deb_arch)"

    umoci new --image "$layout:$tag"

    # Layer 1: the base rootfs.
    b=$work/bundle-$tag-1
    umoci unpack --image "$layout:$tag" "$b" >/dev/null
    r=$b/rootfs
    install -d -m 0755 "$r"/{bin,sbin,etc,usr/bin,usr/sbin,var,srv,data} \
        "$r"/usr/share/doc/$pkg "$r"/opt/replaced-dir/sub "$r"/usr/share/ocimount-sample/data
    install -d -m 0700 "$r/root"
    install -d -m 1777 "$r/tmp"
    install -d -m 0750 -o 1000 -g 1000 "$r/home/app"
    chown 1000:1000 "$r/data"
    install -m 0755 "$debroot/bin/busybox" "$r/bin/busybox"
    # Ship the Debian copyright file with the GPL binary.
    install -m 0644 "$debroot/usr/share/doc/$pkg/copyright" "$r/usr/share/doc/$pkg/copyright"
    # Relative symlinks for the usual applets ...
    for applet in sh ash ls cat echo cp mv rm mkdir rmdir ln pwd true false \
        id uname head tail grep sed wc sleep find stat sha256sum readlink test; do
        ln -s busybox "$r/bin/$applet"
    done
    # ... an absolute symlink, and a hardlink (umoci writes a tar link entry).
    ln -s /bin/busybox "$r/usr/bin/whoami"
    ln "$r/bin/busybox" "$r/usr/bin/env"
    cat >"$r/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:ocimount sample user:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$r/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
    cat >"$r/etc/os-release" <<EOF
NAME="ocimount sample"
ID=ocimount-sample
VERSION_ID=1
PRETTY_NAME="ocimount sample ($platform, Debian $pkg $version)"
OCIMOUNT_SAMPLE_PLATFORM=$platform
EOF
    echo "$platform" >"$r/etc/ocimount-sample-platform"
    echo "motd from layer 1 ($platform)" >"$r/etc/motd"
    echo "this file exists only in layer 1; layer 2 whites it out" >"$r/etc/layer1-only.txt"
    echo "old x (layer 1)" >"$r/opt/replaced-dir/x.txt"
    echo "old y (layer 1)" >"$r/opt/replaced-dir/sub/y.txt"
    echo "a (layer 1, hidden by the opaque dir in layer 3)" >"$r/usr/share/ocimount-sample/data/a.txt"
    echo "b (layer 1, hidden by the opaque dir in layer 3)" >"$r/usr/share/ocimount-sample/data/b.txt"
    : >"$r/etc/empty-file"
    pin_mtimes "$r"
    umoci repack --image "$layout:$tag" --history.created "$created" \
        --history.created_by "layer 1: busybox-static $version ($deb_arch) rootfs" "$b"

    # Layer 2: changes made in an unpacked copy; umoci diffs them into a layer.
    b=$work/bundle-$tag-2
    umoci unpack --image "$layout:$tag" "$b" >/dev/null
    r=$b/rootfs
    rm "$r/etc/layer1-only.txt"                              # -> etc/.wh.layer1-only.txt
    echo "motd from layer 2 ($platform)" >"$r/etc/motd"      # replaced file
    install -d -m 0755 -o 1000 -g 1000 "$r/srv/app" "$r/srv/app/static" # new dirs + files
    echo "hello from layer 2 ($platform)" >"$r/srv/app/hello.txt"
    echo "<p>ocimount sample</p>" >"$r/srv/app/static/index.html"
    chown 1000:1000 "$r/srv/app/hello.txt" "$r/srv/app/static/index.html"
    rm -r "$r/opt/replaced-dir"                              # dir deleted ...
    install -d -m 0755 "$r/opt/replaced-dir"                 # ... and recreated
    echo "new z (layer 2)" >"$r/opt/replaced-dir/z.txt"
    pin_mtimes "$r"
    umoci repack --image "$layout:$tag" --history.created "$created" \
        --history.created_by "layer 2: whiteout, replace /etc/motd, add /srv/app, recreate /opt/replaced-dir" "$b"

    # Layer 3: opaque directory. umoci repack only emits per-entry whiteouts,
    # so write the tar ourselves (ustar, sorted, root-owned, fixed mtime) and
    # append it verbatim.
    local l3=$work/layer3-$tag
    install -d -m 0755 "$l3/usr/share/ocimount-sample/data"
    : >"$l3/usr/share/ocimount-sample/data/.wh..wh..opq"
    echo "c (layer 3, the only entry left in the opaque dir)" >"$l3/usr/share/ocimount-sample/data/c.txt"
    tar -C "$l3" --format=ustar --sort=name --owner=0 --group=0 --numeric-owner \
        --mtime="@$SOURCE_DATE_EPOCH" -cf "$l3.tar" usr
    umoci raw add-layer --image "$layout:$tag" --history.created "$created" \
        --history.created_by "layer 3: opaque /usr/share/ocimount-sample/data" "$l3.tar"

    # Image config: done last so Volumes don't mask paths during repack.
    umoci config --image "$layout:$tag" \
        --os "$os" --architecture "$arch" \
        --created "$created" --author "ocimount scripts/make-sample-image.sh" \
        --config.entrypoint /bin/sh --config.entrypoint=-c \
        --config.cmd 'cat /etc/motd /etc/ocimount-sample-platform' \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --config.env "OCIMOUNT_SAMPLE_PLATFORM=$platform" \
        --config.workingdir /srv/app \
        --config.user app \
        --config.exposedports 8080/tcp \
        --config.volume /data \
        --config.label "org.opencontainers.image.title=ocimount sample" \
        --config.label "org.opencontainers.image.description=busybox-static test image for ocimount ($platform)" \
        --config.label "org.opencontainers.image.licenses=GPL-2.0-only" \
        --config.label "org.opencontainers.image.version=$version" \
        --history.created "$created" --history.created_by "umoci config (entrypoint, cmd, env, user, labels, ports, volume)"
}

for p in $PLATFORMS; do build_platform "$p"; done

# --- assemble the final layout ------------------------------------------------
# Copy only the blobs the final manifests reach (the scratch layout also holds
# every intermediate manifest/config), then write the nested index ourselves.
stage=$work/final
mkdir -p "$stage/blobs/sha256"
blob() { echo "$layout/blobs/sha256/${1#sha256:}"; }
copy_blob() { install -m 0644 "$(blob "$1")" "$stage/blobs/sha256/${1#sha256:}"; }
# Store a file as a blob; print its descriptor fields "digest size".
put_blob() {
    local d s
    d=sha256:$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    install -m 0644 "$1" "$stage/blobs/sha256/${d#sha256:}"
    echo "$d $s"
}

descs=()
for p in $PLATFORMS; do
    IFS=/ read -r os arch variant <<<"$p"
    tag=$arch${variant:+-$variant}
    mdesc=$(jq -c --arg t "$tag" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t)' "$layout/index.json")
    mdig=$(jq -r .digest <<<"$mdesc")
    copy_blob "$mdig"
    for d in $(jq -r '.config.digest, .layers[].digest' "$(blob "$mdig")"); do copy_blob "$d"; done
    descs+=("$(jq -c --arg mt "$MT_MANIFEST" --arg os "$os" --arg arch "$arch" --arg v "$variant" \
        '{mediaType: $mt, digest, size, platform: ({architecture: $arch, os: $os} + (if $v == "" then {} else {variant: $v} end))}' <<<"$mdesc")")
done

printf '%s\n' "${descs[@]}" | jq -s --arg mt "$MT_INDEX" --arg c "$created" '{
    schemaVersion: 2,
    mediaType: $mt,
    manifests: .,
    annotations: {"org.opencontainers.image.title": "ocimount sample", "org.opencontainers.image.created": $c}
}' >"$work/nested-index.json"
read -r idig isize < <(put_blob "$work/nested-index.json")

jq -n --arg mt "$MT_INDEX" --arg d "$idig" --argjson s "$isize" '{
    schemaVersion: 2,
    mediaType: $mt,
    manifests: [{mediaType: $mt, digest: $d, size: $s,
                 annotations: {"org.opencontainers.image.ref.name": "latest"}}]
}' >"$stage/index.json"
printf '{"imageLayoutVersion":"1.0.0"}\n' >"$stage/oci-layout"

# --- self-check: every blob's name is the sha256 of its bytes ------------------
(cd "$stage/blobs/sha256" && for f in *; do echo "$f  $f"; done | sha256sum --quiet -c -) \
    || die "blob digest mismatch"

# --- self-check: each platform unpacks with the expected merged view ------------
# umoci 0.4.7 can't pick a platform out of a nested index ("tag is ambiguous"),
# so give each manifest its own one-entry layout (blobs hardlinked) and unpack.
for desc in "${descs[@]}"; do
    p=$(jq -r '[.platform.os, .platform.architecture, .platform.variant // empty] | join("/")' <<<"$desc")
    mdig=$(jq -r .digest <<<"$desc")
    v=$work/verify-${p//\//-}
    mkdir -p "$v/blobs/sha256"
    cp "$stage/oci-layout" "$v/"
    for d in "$mdig" $(jq -r '.config.digest, .layers[].digest' "$stage/blobs/sha256/${mdig#sha256:}"); do
        ln "$stage/blobs/sha256/${d#sha256:}" "$v/blobs/sha256/"
    done
    jq '{schemaVersion: 2, manifests: [. + {annotations: {"org.opencontainers.image.ref.name": "latest"}}]}' \
        <<<"$desc" >"$v/index.json"
    umoci unpack --image "$v:latest" "$v.bundle" >/dev/null
    r=$v.bundle/rootfs
    [[ $(cat "$r/etc/ocimount-sample-platform") == "$p" ]] || die "$p: wrong platform file"
    [[ ! -e $r/etc/layer1-only.txt ]] || die "$p: whiteout not applied"
    [[ $(ls -A "$r/opt/replaced-dir") == z.txt ]] || die "$p: replaced dir wrong"
    [[ $(ls -A "$r/usr/share/ocimount-sample/data") == c.txt ]] || die "$p: opaque dir not applied"
    [[ $(stat -c %i "$r/bin/busybox") == $(stat -c %i "$r/usr/bin/env") ]] || die "$p: hardlink lost"
    log "verified $p: $mdig unpacks as expected"
done

mkdir -p "$out_dir"
rm -rf "$image_dir"
mv "$stage" "$image_dir"
chmod 0755 "$image_dir" "$image_dir/blobs" "$image_dir/blobs/sha256"

# --- README -----------------------------------------------------------------------
{
    src=$(dpkg-deb -f "$(deb_for "$(deb_arch_of "${PLATFORMS%% *}")")" Source) # "busybox (1:1.35.0-4+deb12u1)"
    src_ver=${src#*(}; src_ver=${src_ver%)}
    cat <<EOF
# ocimount sample image

\`image/\` is a small multi-platform OCI image layout used to try and test
ocimount. It is generated by \`scripts/make-sample-image.sh\`; do not edit it
by hand.

## Layout

\`index.json\` has one entry, tagged \`latest\`, of media type
\`$MT_INDEX\`. It points at a nested image index blob
(\`$idig\`) that lists one image manifest per platform:

| platform | manifest digest |
| --- | --- |
EOF
    for d in "${descs[@]}"; do
        jq -r '"| " + ([.platform.os, .platform.architecture, .platform.variant // empty] | join("/")) + " | `" + .digest + "` |"' <<<"$d"
    done
    cat <<EOF

Every platform image has three gzip layers (umoci-built) and a config with
the right \`os\`/\`architecture\`, Entrypoint \`["/bin/sh","-c"]\`, Cmd
\`["cat /etc/motd /etc/ocimount-sample-platform"]\`, Env (\`PATH\`,
\`OCIMOUNT_SAMPLE_PLATFORM\`), WorkingDir \`/srv/app\`, User \`app\`, port
\`8080/tcp\`, volume \`/data\` and the label
\`org.opencontainers.image.title=ocimount sample\`.

1. **Base rootfs** (\`umoci repack\`): \`/bin/busybox\`; relative symlinks
   \`/bin/{sh,ls,cat,...} -> busybox\`; absolute symlink
   \`/usr/bin/whoami -> /bin/busybox\`; hardlink \`/usr/bin/env\` = \`/bin/busybox\`;
   \`/etc/{passwd,group}\` (root, app 1000, nobody 65534); \`/etc/os-release\`;
   \`/etc/ocimount-sample-platform\` (contains e.g. \`linux/arm64/v8\`);
   \`/etc/motd\`; \`/etc/layer1-only.txt\`; \`/etc/empty-file\`;
   \`/opt/replaced-dir/{x.txt,sub/y.txt}\`;
   \`/usr/share/ocimount-sample/data/{a,b}.txt\`; \`/home/app\` (1000:1000,
   0750), \`/root\` (0700), \`/tmp\` (1777), \`/data\` (1000:1000); the Debian
   copyright file in \`/usr/share/doc/busybox-static/\`.
2. **Changes** (\`umoci repack\`): whiteout \`etc/.wh.layer1-only.txt\`;
   new \`/etc/motd\`; new \`/srv/app/hello.txt\` and
   \`/srv/app/static/index.html\` (1000:1000); \`/opt/replaced-dir\` deleted
   and recreated, which umoci writes as per-entry whiteouts
   (\`.wh.x.txt\`, \`.wh.sub\`) plus the new \`z.txt\`.
3. **Opaque directory** (hand-made ustar added with \`umoci raw add-layer\`):
   \`usr/share/ocimount-sample/data/.wh..wh..opq\` and \`c.txt\`, so the merged
   directory holds only \`c.txt\`.

Worth knowing when testing against it:

- Layer 3 is byte-identical for every platform, so it is one blob shared by
  all manifests.
- The platform \`variant\` is only in the index; the image configs carry
  \`os\` and \`architecture\` but no \`variant\` (\`umoci config\` has no option
  for it).
- umoci 0.4.7 writes image manifests without the optional \`mediaType\` field.
- \`umoci unpack --image sample/image:latest\` fails with "tag is ambiguous"
  because umoci 0.4.7 cannot choose a platform from a nested index; skopeo
  can (\`skopeo inspect --override-arch arm64 oci:sample/image:latest\`).

All file mtimes and history/config dates are fixed to $created
(\`SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH\`).

## Where the content comes from, and licences

The binaries come unmodified from Debian 12 (bookworm) packages:

| package | version | Debian architecture | .deb sha256 |
| --- | --- | --- | --- |
EOF
    for p in $PLATFORMS; do
        a=$(deb_arch_of "$p")
        f=$(deb_for "$a")
        echo "| $pkg | $(dpkg-deb -f "$f" Version) | $a | \`$(sha256sum "$f" | cut -d' ' -f1)\` |"
    done
    cat <<EOF

BusyBox is licensed under the GNU General Public License version 2
(GPL-2.0-only). The Debian copyright file is included in each image at
\`/usr/share/doc/busybox-static/copyright\`. The corresponding source is the
Debian source package \`$src\`, available from the Debian archive, e.g. with
\`apt-get source ${src%% *}=$src_ver\`.

The small text files (\`/etc/passwd\`, \`/etc/motd\`, ...) are written by the
script and belong to this project.

## Rebuilding

    sudo scripts/make-sample-image.sh

It needs root, Debian's package archive, \`umoci\` and \`jq\` (installed with
apt-get if missing), and adds the foreign dpkg architectures it needs.
\`PLATFORMS="linux/amd64 linux/arm64/v8"\` builds a subset. With the same
Debian package versions the output is byte-for-byte identical.
EOF
} >"$out_dir/README.md"

log "wrote $image_dir ($(du -sh "$image_dir" | cut -f1)), nested index $idig"
