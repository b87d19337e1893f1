#!/usr/bin/env bash
# The test command: formatting, lints, then every test. Tests that mount
# need root and /dev/fuse (CI has both); they build their real images with
# umoci from a Debian rootfs on first use and cache them in target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-deps.sh tests
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --release --locked --all-targets -- --test-threads="${TEST_THREADS:-2}"
