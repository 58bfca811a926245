#!/usr/bin/env bash
# Run a suite on two commits and compare the results (`moebench compare`), offline.
#
#   measurements/compare_commits.sh BASE NEW [moebench run options] [-- moebench compare options]
#   measurements/compare_commits.sh origin/main HEAD suites/smoke.yaml -- --factor 1.2 --fail-on-regression
#
# Each commit is checked out into a temporary `git worktree` and its suite runs there with that
# worktree's moebench and first-party plugins first on PYTHONPATH (the installed environment
# provides everything else), into one temporary folder; then `moebench compare BASE_RUN NEW_RUN`
# with the options after `--`; its exit code is the script's (1 on a regression with
# --fail-on-regression). The suite file is read from each commit (default: suites/smoke.yaml).
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BASE NEW [SUITE] [moebench run options] [-- moebench compare options]" >&2
  exit 2
fi
. "$(dirname "${BASH_SOURCE[0]}")/worktrees.sh"
commits_to_compare moebench-compare "$1" "$2"
shift 2
suite=suites/smoke.yaml
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then
  suite=$1
  shift
fi
run_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do run_args+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
for name in base new; do
  sha=$([ "$name" = base ] && echo "$base" || echo "$new")
  check_out "$name" "$sha"
  echo "+ moebench run $suite ${run_args[*]:-} (commit $sha)" >&2
  (cd "$tree" && PYTHONPATH="$commit_path" \
     python -m moebench.cli run "$suite" --out "$tmp/runs/$name" --no-report ${run_args[@]+"${run_args[@]}"})
done
name=$(basename "$(ls -d "$tmp"/runs/base/*/ | head -n 1)")
python -m moebench.cli compare "$tmp/runs/base/$name" "$tmp/runs/new/$name" "$@"
