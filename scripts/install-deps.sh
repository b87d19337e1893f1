#!/usr/bin/env bash
# Install the Debian packages ocimount needs, by what they are for.
# Idempotent. Usage: install-deps.sh [main] [tests] [bench] (default: all)
#   main   what `ocimount mount` needs on a host (scripts/setup.sh)
#   tests  what scripts/test.sh needs: the reference unpacker, the real image
#          builders, runtimes, a real registry and the lazy-format producers
#   bench  scripts/bench.sh's peers and its VM set-up (vagrant)
set -euo pipefail
groups=("$@")
((${#groups[@]})) || groups=(main tests bench)
packages=()
for group in "${groups[@]}"; do
  case "$group" in
    main) packages+=(fuse3) ;;
    tests)
      packages+=(umoci skopeo mmdebstrap runc crun podman zstd pigz attr python3 tar gzip)
      # the registry tests: a real distribution registry, its htpasswd and TLS
      # material, and the token server's JWT signing
      packages+=(docker-registry curl openssl apache2-utils python3-cryptography)
      # scripts/make-lazy-images.sh: eStargz layers are built by tests/tools/estargz-build
      # against stargz-snapshotter's own estargz Go package (GOPATH mode, offline);
      # zstd:chunked comes from skopeo. python3-zstandard lets
      # tests/tools/lazy-inspect.py decompress zstd frames in-process.
      packages+=(golang-go golang-github-containerd-stargz-snapshotter-dev python3-zstandard)
      # the bench smoke test runs the peers and `vagrant validate`
      packages+=(fuse-overlayfs python3-venv vagrant vagrant-libvirt)
      ;;
    bench) packages+=(fuse-overlayfs python3-venv vagrant vagrant-libvirt zstd pigz umoci) ;;
    *)
      echo "install-deps.sh: unknown group '$group' (main, tests, bench)" >&2
      exit 2
      ;;
  esac
done
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
