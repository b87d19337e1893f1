#!/usr/bin/env bash
# Install the Debian packages ocimount's tests and tools need. Idempotent.
set -euo pipefail
packages=(fuse3 umoci skopeo mmdebstrap runc crun podman zstd pigz attr python3 tar gzip)
# scripts/bench.sh and its smoke test: the peers, the ratarmount venv, `vagrant validate`
packages+=(fuse-overlayfs python3-venv vagrant vagrant-libvirt)
# the registry tests: a real distribution registry, its htpasswd and TLS
# material, and the token server's JWT signing
packages+=(docker-registry curl openssl apache2-utils python3-cryptography)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $EUID -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq || echo "warning: apt-get update reported errors; installing from what it fetched" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
