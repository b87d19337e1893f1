#!/usr/bin/env bash
# Install ocimount: the binary, the mount(8) helper (so `mount -t
# fuse.ocimount` and /etc/fstab work), shell completions and man pages.
#   scripts/install.sh                 # build if needed, install under /usr/local (helper in /sbin)
#   PREFIX=/usr DESTDIR=/tmp/pkg scripts/install.sh   # for packaging
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SBINDIR=${SBINDIR:-/sbin}   # where mount(8) looks for helpers
bin=${OCIMOUNT_BIN:-target/release/ocimount}
[[ -x $bin ]] || cargo build --release --locked
root="$DESTDIR$PREFIX"
install -Dm755 "$bin" "$root/bin/ocimount"
# mount(8) runs mount.fuse.ocimount IMAGE DIR -o OPTIONS; the binary knows
# the name and translates. The link names the installed path (no DESTDIR).
mkdir -p "$DESTDIR$SBINDIR"
ln -sfn "$PREFIX/bin/ocimount" "$DESTDIR$SBINDIR/mount.fuse.ocimount"
gen=("$bin" generate)
install -d "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
  "$root/share/fish/vendor_completions.d" "$root/share/man/man1"
"${gen[@]}" completions bash >"$root/share/bash-completion/completions/ocimount"
"${gen[@]}" completions zsh >"$root/share/zsh/site-functions/_ocimount"
"${gen[@]}" completions fish >"$root/share/fish/vendor_completions.d/ocimount.fish"
"${gen[@]}" man "$root/share/man/man1"
echo "installed ocimount in $root (helper: $DESTDIR$SBINDIR/mount.fuse.ocimount)"
