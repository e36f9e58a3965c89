#!/usr/bin/env bash
# The measurements of one short GPU session, as two steps (docs/gpu.md holds what they gave):
#
#   bash benchmarks/gpu_session.sh check     # ~3 min: a tiny benchmark on CUDA (smoke test), the throughput table
#                                            # (fp32 / tf32 / bf16 at batch 100 and 1,000, with the plain CapsNet),
#                                            # capsnet-paper trained in fp32 and in bf16 (15 epochs, seed 0)
#   bash benchmarks/gpu_session.sh profile   # ≤ 8 min: `capsrobust benchmark --profile gpu` into reports/gpu-mnist-5k
#   bash benchmarks/gpu_session.sh short     # the fp32/bf16 training check, then the profile until DEADLINE seconds
#   bash benchmarks/gpu_session.sh mnist     # full MNIST: the gpu-mnist profile, then cnn-small-at-mnist (issue 17)
#   bash benchmarks/gpu_session.sh routing   # full MNIST: the gpu-routing profile until BUDGET (issue 20); resumable
#
# Run from the project's root on a machine with a GPU and no network, with the wheels of ../shared/gpu/wheels.sh in
# .whl/ (ART, Foolbox, mlxtend and their needs). Results go to $OUT (default /tmp/capsrobust-gpu): logs, JSON, and
# a tarball of the report and the benchmark's tables (the adversarials stay behind). BUDGET (seconds, default 470)
# stops the profile with Ctrl-C semantics, so its finished cells are kept and the same command resumes it.
set -uo pipefail
step=${1:?usage: gpu_session.sh check|profile}
out=${OUT:-/tmp/capsrobust-gpu}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/capsrobust-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/capsrobust-site:$PWD"
fi
export PYTHONUNBUFFERED=1
capsrobust() { python3 -c 'from capsrobust.cli import main; main()' "$@"; }
# on_full_mnist PROFILE BENCHMARK_DIR SECONDS: a benchmark profile on .data/mnist, stopped (resumably) after SECONDS,
# its log in $out/PROFILE.log; $started is the step's start.
on_full_mnist() {
  timeout -s INT "$3" python3 -c 'from capsrobust.cli import main; main()' benchmark --profile "$1" \
    --data-dir .data/mnist --device cuda --out "$2" --no-progress > "$out/$1.log" 2>&1
  echo "$1 exit $? after $(( $(date +%s) - started )) s"; tail -8 "$out/$1.log"
}
# pack TARBALL "REPORT..." BENCHMARK_DIR...: the reports and each benchmark's tables, detection and run summaries
# into $out (the weights and adversarials stay behind: they do not fit what a call carries back).
pack() {
  local tarball=$1 reports=$2 dir
  shift 2
  local files=()
  for dir in "$@"; do
    files+=("$dir/benchmark.json" "$dir"/sweep/{sweep.json,results.csv,checks.csv,examples.csv} "$dir/sweep/detection"
            "$dir"/runs/*/{run.json,metrics.csv,best.json})
  done
  # shellcheck disable=SC2086  # REPORT may be a glob
  tar -czf "$out/$tarball" $reports "${files[@]}" 2>/dev/null
  ls -la "$out"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1

case "$step" in
  check)
    started=$(date +%s)
    { time capsrobust benchmark --profile tiny --device cuda --out /tmp/tiny-cuda --report /tmp/tiny-report \
        --no-progress; } > "$out/tiny.log" 2>&1 || { echo "tiny benchmark on CUDA failed"; tail -30 "$out/tiny.log"; }
    python3 benchmarks/throughput.py --device cuda --precision fp32 tf32 bf16 --batch-sizes 100 1000 \
      --recipes capsnet-paper cnn-small cnn-recon cnn-baseline --plain --json "$out/throughput.json" \
      > "$out/throughput.md" 2>&1 || { echo "throughput failed"; tail -30 "$out/throughput.md"; }
    for precision in fp32 bf16; do
      run=/tmp/precision-$precision
      { time capsrobust train models/capsnet-paper.toml --data mnist-5k --out "$run" --seed 0 --device cuda \
          --precision "$precision" --no-progress; } > "$out/train-$precision.log" 2>&1
      capsrobust evaluate "$run" --data mnist-5k --device cuda --json > "$out/evaluate-$precision.json" 2>&1
      cp "$run/metrics.csv" "$out/metrics-$precision.csv"
    done
    echo "check took $(( $(date +%s) - started )) s"
    cat "$out/throughput.md"; tail -3 "$out"/train-*.log; cat "$out"/evaluate-*.json | head -c 600
    ;;
  profile)
    started=$(date +%s)
    timeout -s INT "${BUDGET:-470}" python3 -c 'from capsrobust.cli import main; main()' benchmark --profile gpu \
      --device cuda --out runs/benchmark/gpu-mnist-5k --no-progress > "$out/profile.log" 2>&1
    status=$?
    echo "benchmark exit $status after $(( $(date +%s) - started )) s"
    if [ ! -f reports/gpu-mnist-5k/report.md ] && [ -f runs/benchmark/gpu-mnist-5k/sweep/results.csv ]; then
      # stopped inside the sweep: a report of the cells that finished, marked as such by its own tables
      capsrobust report runs/benchmark/gpu-mnist-5k/sweep --out reports/gpu-mnist-5k-partial >> "$out/profile.log" 2>&1
    fi
    tail -20 "$out/profile.log"
    pack gpu-profile.tgz "reports/gpu-mnist-5k*" runs/benchmark/gpu-mnist-5k
    ;;
  short)
    # What fits in five minutes of device time: the bf16-vs-fp32 accuracy check, then as much of the gpu profile as
    # BUDGET allows (its stage times and per-cell costs; the same command resumes it on a later machine).
    started=$(date +%s)
    for precision in fp32 bf16; do
      run=/tmp/precision-$precision
      timeout 55 python3 -c 'from capsrobust.cli import main; main()' train models/capsnet-paper.toml --data mnist-5k \
        --out "$run" --seed 0 --device cuda --precision "$precision" --no-progress > "$out/train-$precision.log" 2>&1
      capsrobust evaluate "$run" --data mnist-5k --device cuda --json > "$out/evaluate-$precision.json" 2>&1
      cp "$run/metrics.csv" "$out/metrics-$precision.csv" 2>/dev/null
      echo "$precision: $(( $(date +%s) - started )) s"; tail -2 "$out/train-$precision.log"
    done
    BUDGET=$(( ${DEADLINE:-270} - ($(date +%s) - started) )) bash "$0" profile
    ;;
  mnist)
    # Issue 17's GPU run, in its order: the full-MNIST gpu profile (4 models × 3 seeds, the mnist cascade on 1,000
    # digits) within BUDGET seconds (default 470), then Madry's cnn-small-at on full MNIST (40-step PGD, 20 epochs)
    # and its leaderboard suite until DEADLINE (default 540). Needs .data/mnist (../shared/gpu/README.md).
    started=$(date +%s)
    on_full_mnist gpu-mnist runs/benchmark/gpu-mnist "${BUDGET:-470}"
    left=$(( ${DEADLINE:-540} - ($(date +%s) - started) ))
    if [ "$left" -gt 30 ]; then
      on_full_mnist mnist-robust runs/benchmark/robust-mnist "$left"
    fi
    pack gpu-mnist.tgz "reports/gpu-mnist reports/robust-mnist" runs/benchmark/gpu-mnist runs/benchmark/robust-mnist
    ;;
  routing)
    # Issue 20's GPU version: the routing variants and their CNNs, 3 seeds, full MNIST, the routing cascade on 1,000
    # digits. Not yet timed on a GPU and likely longer than one session. BUDGET stops it with its finished runs and
    # cells kept on that machine only (24 runs' weights exceed what a call carries back), so the first session
    # brings back the per-run training times and the cells that finished, to size the profile for the next.
    started=$(date +%s)
    on_full_mnist gpu-routing runs/benchmark/gpu-routing "${BUDGET:-470}"
    pack gpu-routing.tgz reports/gpu-routing-mnist runs/benchmark/gpu-routing
    ;;
  *) echo "unknown step $step: use check, profile, short, mnist or routing"; exit 2 ;;
esac
