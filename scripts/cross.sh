#!/usr/bin/env bash
# Cross builds for ARM, and the test suite under qemu-user (docs/arm.md).
#
#   scripts/cross.sh setup [TARGET...]          Debian cross linkers + qemu-user-static,
#                                               rustup targets, qemu in binfmt_misc
#   scripts/cross.sh build TARGET [CARGO ARGS]  cargo build --release --target ...
#   scripts/cross.sh test TARGET                clippy (unless SKIP_CLIPPY=1), then the
#                                               test suite under qemu-user
#
# TARGET is aarch64 (aarch64-unknown-linux-gnu, 64-bit Raspberry Pi OS) or
# armv7 (armv7-unknown-linux-gnueabihf, 32-bit Raspberry Pi OS); setup with
# none sets up both. Linkers and qemu runners are in .cargo/config.toml, so
# after setup plain `cargo build/test --target ...` works too.
#
# The tests start ARM programs themselves (ocimount, its mount daemon), so
# qemu must be registered with binfmt_misc; setup does that (root) with
# Debian's own qemu-user-static rules when nothing has. Mount tests need
# root and /dev/fuse, as on x86-64.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
log() { printf '[cross.sh] %s\n' "$*" >&2; }
die() { printf '[cross.sh] error: %s\n' "$*" >&2; exit 1; }

# TARGET -> rust triple, Debian packages, qemu binfmt name, sysroot.
triple() {
  case $1 in
    aarch64 | aarch64-unknown-linux-gnu) echo aarch64-unknown-linux-gnu ;;
    armv7 | armv7-unknown-linux-gnueabihf) echo armv7-unknown-linux-gnueabihf ;;
    *) die "unknown target '$1' (aarch64 or armv7)" ;;
  esac
}
packages() {
  case $1 in
    aarch64-*) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armv7-*) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
  esac
}
qemu_name() { case $1 in aarch64-*) echo aarch64 ;; armv7-*) echo arm ;; esac; }

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq || log "warning: apt-get update reported errors; installing from what it fetched"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Register qemu-NAME with binfmt_misc from Debian's rule file, unless it is
# registered already (systemd-binfmt or binfmt-support may have done it).
register_binfmt() {
  local name=$1 dir=/proc/sys/fs/binfmt_misc
  [[ -e $dir/qemu-$name ]] && return 0
  if [[ ! -e $dir/register ]]; then
    as_root mount -t binfmt_misc binfmt_misc "$dir" ||
      die "cannot mount binfmt_misc at $dir: the tests cannot start ARM programs"
  fi
  local rule=/usr/lib/binfmt.d/qemu-$name.conf
  [[ -r $rule ]] || die "$rule is missing (is qemu-user-static installed?)"
  log "registering qemu-$name with binfmt_misc"
  as_root sh -c "cat '$rule' > $dir/register"
}

setup() {
  local targets=("$@") t pkgs=(qemu-user-static)
  ((${#targets[@]})) || targets=(aarch64 armv7)
  for t in "${targets[@]}"; do
    t=$(triple "$t")
    # shellcheck disable=SC2207
    pkgs+=($(packages "$t"))
  done
  install_packages "${pkgs[@]}"
  for t in "${targets[@]}"; do
    t=$(triple "$t")
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    register_binfmt "$(qemu_name "$t")"
  done
}

build() {
  local t
  t=$(triple "$1")
  shift
  cargo build --release --locked --target "$t" "$@"
  log "built target/$t/release/ocimount"
}

# The emulated run: clippy for the target, then the test suite under
# qemu-user: unit tests, union and fixture suites, bad input, the ARM tests
# (platform choice, the FUSE clone fallback, a layer over 4 GiB, a cache
# shared with the x86-64 build) and the corpus suites (FUSE mounts and
# export against umoci). Left out: bench_smoke (the benchmark harness and
# its x86-64 peers) and bundle (runc/crun running the image: under
# binfmt_misc its processes see qemu in /proc/1/cmdline, and a rootless
# container cannot reach the ARM loader).
#
# To keep CI within its time (each qemu suite costs minutes), each target
# runs what it alone can show: aarch64 the whole suite but the layer over
# 4 GiB, a 32-bit concern that the x86-64 suite runs natively for 64 bits;
# armv7 the 32-bit concerns (unit tests, the union, fixtures, bad input
# and tests/arm.rs with its layer over 4 GiB, mounted through FUSE) but
# not the corpus mounts and exports, which run the same code as on aarch64.
suite() {
  case $1 in
    aarch64-*)
      SUITE=(--lib --test union_cases --test public_fixtures --test bad_input --test arm
        --test mount --test export_vs_umoci)
      SKIP=(--skip a_layer_over_4_gib_indexes_mounts_and_reads_right)
      ;;
    armv7-*)
      SUITE=(--lib --test union_cases --test public_fixtures --test bad_input --test arm)
      SKIP=()
      ;;
  esac
}

run_tests() {
  local t start
  t=$(triple "$1")
  setup "$1"
  [[ $EUID -eq 0 && -c /dev/fuse ]] || die "the mount tests need root and /dev/fuse"
  start=$(date +%s)
  # SKIP_CLIPPY=1: CI lints the 32-bit target only; aarch64 compiles the
  # code x86-64's clippy already saw, but for two lines of platform choice.
  if [[ ${SKIP_CLIPPY:-0} != 1 ]]; then
    cargo clippy --all-targets --locked --target "$t" -- -D warnings
  fi
  # The x86-64 build shares a cache with the ARM one in tests/arm.rs. Built
  # as the test build builds it (dev-dependencies' features unified), so
  # that after scripts/test.sh nothing is compiled again: `cargo build`
  # would rebuild clap and ocimount with other features (53 s in CI).
  cargo test --release --locked --no-run --test arm
  export OCIMOUNT_OTHER_BIN=$PWD/target/release/ocimount OCIMOUNT_EMULATED=1
  local cargo_test=(cargo test --release --locked --target "$t")
  suite "$t"
  "${cargo_test[@]}" --no-run "${SUITE[@]}"
  log "$t: built in $(($(date +%s) - start)) s; testing under qemu-$(qemu_name "$t")"
  "${cargo_test[@]}" "${SUITE[@]}" -- --test-threads="${TEST_THREADS:-2}" "${SKIP[@]}"
  # The cross-build index test, ignored where there is no other build.
  "${cargo_test[@]}" --test arm -- --ignored --test-threads="${TEST_THREADS:-2}"
  log "$t: all passed in $(($(date +%s) - start)) s"
}

(($#)) || usage
command=$1
shift
case $command in
  setup) setup "$@" ;;
  build) (($#)) || usage; build "$@" ;;
  test) (($# == 1)) || usage; run_tests "$1" ;;
  -h | --help) usage ;;
  *) usage ;;
esac
