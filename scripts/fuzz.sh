#!/usr/bin/env bash
# Run the cargo-fuzz targets in fuzz/ for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets: tar_index, gzip_spans, index_format, json_layout, tree_format,
# toc_json (default: all),
# 60 seconds each unless told. Runs up to $FUZZ_JOBS targets at once (default:
# the number of cores). The corpus grows in fuzz/corpus/TARGET (not
# committed), seeded from fuzz/seeds/TARGET. A crash stops the run with
# exit 1; keep its input under fuzz/regressions/TARGET/ (tests/hostile.rs
# replays every file there) and fix it.
#
# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them. cargo-fuzz itself is installed from crates.io if
# missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(tar_index gzip_spans index_format json_layout tree_format toc_json)
jobs=${FUZZ_JOBS:-$(nproc)}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz build -O

max_len() {
  case $1 in
    tar_index) echo 65536 ;;
    gzip_spans) echo 4096 ;;
    *) echo 8192 ;;
  esac
}

run_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  cargo fuzz run -O "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    >"fuzz/artifacts/$t/log" 2>&1
}

status=0
pids=()
names=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  names+=("$t")
  while (($(jobs -rp | wc -l) >= jobs)); do sleep 1; done
done
for i in "${!pids[@]}"; do
  t=${names[$i]}
  if wait "${pids[$i]}"; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "fuzz/artifacts/$t/log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz $t: ${seconds}s, $runs runs, no crash"
  else
    status=1
    echo "fuzz $t: FAILED; its log ends:" >&2
    tail -n 40 "fuzz/artifacts/$t/log" >&2
    ls "fuzz/artifacts/$t"/crash-* "fuzz/artifacts/$t"/timeout-* "fuzz/artifacts/$t"/oom-* 2>/dev/null >&2 || true
  fi
done
exit $status
