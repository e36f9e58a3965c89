#!/usr/bin/env bash
# Ray against local on the cpu-standard suite (docs/ray.md): trains the three tiny recipes into run folders named
# after the suite's models, then times the same sweep (n = 100) with local at 1 thread, Ray (2 actors × 1 thread)
# and local at torch's default threads, twice each, interleaved; prints wall time and load at each start.
#
#   bash benchmarks/ray_speedup.sh [WORKDIR]
set -euo pipefail
B=${1:-/tmp/raywork/bench}
C=${CAPSROBUST:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/capsrobust}
rm -rf "$B" && mkdir -p "$B/runs"
for pair in capsnet-tiny:capsnet-paper cnn-tiny:cnn-small cnn-recon-tiny:cnn-recon; do
  "$C" train "${pair%%:*}" --device cpu --no-progress --out "$B/runs/${pair##*:}" > /dev/null
done
run() {  # TAG EXTRA-SWEEP-ARGS... (environment from the caller)
  local tag=$1 load start end
  shift
  load=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  "$C" sweep "$B/runs/capsnet-paper" "$B/runs/cnn-small" "$B/runs/cnn-recon" --suite cpu-standard --n 100 \
    --device cpu --no-progress --out "$B/out-$tag" "$@" > /dev/null 2>&1
  end=$(date +%s.%N)
  printf '%s load=%s seconds=%.1f\n' "$tag" "$load" "$(echo "$end - $start" | bc)"
}
for round in a b; do
  OMP_NUM_THREADS=1 run "local1-$round"
  run "ray-$round" --executor ray
  run "local2-$round"
done
