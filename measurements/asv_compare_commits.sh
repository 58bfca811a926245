#!/usr/bin/env bash
# Compare the asv kernel benchmarks of two commits, offline, in the current environment.
#
#   measurements/asv_compare_commits.sh BASE NEW [asv run options, e.g. --quick --bench EMKernels]
#
# (needs asv in the environment: pip install asv)
#
# `asv continuous` cannot run with `environment_type: existing`, and the editable install follows
# one checkout. So each commit is checked out into a temporary `git worktree`, and asv runs there
# with that worktree's moebench and moebench_plugins first on PYTHONPATH (`asv run --python=same
# --set-commit-hash SHA`), both writing into one results folder; then `asv compare --split`
# prints worse / better / unchanged beyond ASV_FACTOR (default 1.1). With
# ASV_FAIL_ON_REGRESSION=1 the script exits 1 when a benchmark got worse ("+" rows; asv compare
# itself exits 0). Nothing is downloaded; the main checkout is not touched.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BASE NEW [asv run options...]" >&2
  exit 2
fi
. "$(dirname "${BASH_SOURCE[0]}")/worktrees.sh"
commits_to_compare moebench-asv "$1" "$2"
shift 2
factor=${ASV_FACTOR:-1.1}
results=${ASV_RESULTS:-"$root/.asv/results"}

python -m asv machine --yes >/dev/null  # once per machine; keeps an existing description

for name in base new; do
  sha=$([ "$name" = base ] && echo "$base" || echo "$new")
  check_out "$name" "$sha"
  python - "$tree/asv.conf.json" "$results" > "$tmp/asv-$name.json" <<'PY'
import json, sys
conf = json.load(open(sys.argv[1]))
conf["results_dir"] = sys.argv[2]
conf["repo"] = "."
print(json.dumps(conf))
PY
  cp "$tmp/asv-$name.json" "$tree/asv.compare.json"
  echo "+ asv run --python=same --set-commit-hash $sha $* (in $tree)"
  (cd "$tree" && PYTHONPATH="$commit_path" \
     python -m asv run --config asv.compare.json --python=same --set-commit-hash "$sha" "$@")
done

echo "+ asv compare $base $new --factor $factor --split"
(cd "$tmp/new" && python -m asv compare --config asv.compare.json --factor "$factor" --split \
   "$base" "$new") | tee "$tmp/compare.txt"
if [ "${ASV_FAIL_ON_REGRESSION:-0}" = 1 ] && grep -q '^| +' "$tmp/compare.txt"; then
  echo "regression: some benchmarks got slower by more than a factor $factor" >&2
  exit 1
fi
