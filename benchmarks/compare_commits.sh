#!/usr/bin/env bash
# Run a suite on two commits and compare the results (`moebench compare`), offline.
#
#   benchmarks/compare_commits.sh BASE NEW [moebench run options] [-- moebench compare options]
#   benchmarks/compare_commits.sh origin/main HEAD suites/smoke.yaml -- --factor 1.2 --fail-on-regression
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
root=$(git rev-parse --show-toplevel)
base=$(git -C "$root" rev-parse --verify "$1^{commit}")
new=$(git -C "$root" rev-parse --verify "$2^{commit}")
shift 2
suite=suites/smoke.yaml
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "${1#-}" = "$1" ]; then
  suite=$1
  shift
fi
run_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do run_args+=("$1"); shift; done
[ $# -gt 0 ] && shift  # the "--"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moebench-compare.XXXXXX")
cleanup() {
  for name in base new; do
    [ -d "$tmp/$name" ] && git -C "$root" worktree remove --force "$tmp/$name" >/dev/null 2>&1
  done
  rm -rf "$tmp"
  git -C "$root" worktree prune
}
trap cleanup EXIT

for name in base new; do
  sha=$([ "$name" = base ] && echo "$base" || echo "$new")
  tree="$tmp/$name"
  git -C "$root" worktree add --detach --quiet "$tree" "$sha"
  mkdir -p "$tmp/path-$name"
  ln -s "$tree/plugins" "$tmp/path-$name/moebench_plugins"
  echo "+ moebench run $suite ${run_args[*]:-} (commit $sha)" >&2
  (cd "$tree" && PYTHONPATH="$tree:$tmp/path-$name${PYTHONPATH:+:$PYTHONPATH}" \
     python -m moebench.cli run "$suite" --out "$tmp/runs/$name" --no-report ${run_args[@]+"${run_args[@]}"})
done
name=$(basename "$(ls -d "$tmp"/runs/base/*/ | head -n 1)")
python -m moebench.cli compare "$tmp/runs/base/$name" "$tmp/runs/new/$name" "$@"
