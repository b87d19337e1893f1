#!/usr/bin/env bash
# The quick measurement: scripts/bench.sh on the small image (3 layers),
# 3 repetitions. Extra arguments go to scripts/bench.sh (see its header).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/bench.sh" --size small --reps 3 "$@"
