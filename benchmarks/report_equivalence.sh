#!/usr/bin/env bash
# Does this checkout write the same report as another commit? Runs the tiny benchmark profile once with this
# checkout (seconds to minutes on a CPU), rebuilds its report with OLD's code and with this checkout's, and diffs the
# two directories. Used for issue 11's refactor: only provenance (the git commit) may differ, plus what the issue
# changed on purpose (one ROC figure per report).
#
#   bash benchmarks/report_equivalence.sh 1b3172c [WORKDIR]
set -euo pipefail
old=${1:?usage: report_equivalence.sh OLD_COMMIT [WORKDIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-$(mktemp -d)}
python=${PYTHON:-$repo/.venv/bin/python}
git -C "$repo" worktree add --force --detach "$work/old" "$old" >/dev/null
trap 'git -C "$repo" worktree remove --force "$work/old"' EXIT
cd "$work"
PYTHONPATH=$repo "$python" -c "
from capsrobust.benchmark import run_benchmark
run_benchmark('tiny', out_dir='bench', report_dir='report-tiny', device='cpu', progress=False)"
build() {  # build the report of bench/sweep with the code in $1 into report/, then move it to $2
  rm -rf report
  PYTHONPATH=$1 "$python" -c "from capsrobust.cli import main; main()" report bench/sweep --out report >/dev/null
  rm -rf "$2" && mv report "$2"
}
build "$work/old" report-old
build "$repo" report-new
echo "differences between the report of $old and of this checkout (figures compared byte for byte):"
diff -r report-old report-new | grep '^[<>]\|^Only\|^Binary' | grep -v 'base64,' | cut -c1-160 || echo "none"
