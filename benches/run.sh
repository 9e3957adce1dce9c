#!/usr/bin/env bash
# Side-by-side benchmark: direct vs Switchyard vs Pingora vs nginx vs HAProxy.
#
#   benches/run.sh                 full run, about 8 minutes on 2 cores
#   benches/run.sh --quick         about 2½ minutes
#   benches/run.sh --workloads 6   only saturation against the static backend
#   benches/run.sh --help          every option (rounds, windows, targets, ...)
#
# Raises the open-file limit for the held-stream workload, then runs the
# Rust harness in benches/compare/ through cargo bench, which also builds
# the switchyard binary it starts (optimised, from the current source).
# The table goes to stdout and to benches/results/latest.md.
# All traffic stays on 127.0.0.1. See benches/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

# Workload 4 holds thousands of streams: two descriptors each in the
# harness and in the proxy. Raise the soft limit as far as the hard one goes.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for tool in nginx haproxy; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        echo "run.sh: $tool not installed; it will be skipped (apt-get install -y nginx-light haproxy)" >&2
done

SWITCHYARD_BENCH_CMD="benches/run.sh${*:+ $*}" exec cargo bench --bench compare -- "$@"
