# Sourced by compare_commits.sh and asv_compare_commits.sh: two commits in temporary worktrees.
#
#   commits_to_compare PREFIX BASE NEW   sets root, base, new (full SHAs) and tmp (a temporary
#                                        folder removed, with its worktrees, on exit)
#   check_out NAME SHA                   checks SHA out into $tmp/NAME and sets tree to it and
#                                        commit_path to the PYTHONPATH that imports that
#                                        worktree's moebench and moebench_plugins first
#
# moebench_plugins is the plugins/ folder of a checkout (a package-dir mapping): a link makes the
# worktree's copy importable ahead of the editable install's.

commits_to_compare() {
  root=$(git rev-parse --show-toplevel)
  base=$(git -C "$root" rev-parse --verify "$2^{commit}")
  new=$(git -C "$root" rev-parse --verify "$3^{commit}")
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap _remove_worktrees EXIT
}

_remove_worktrees() {
  for name in base new; do
    [ -d "$tmp/$name" ] && git -C "$root" worktree remove --force "$tmp/$name" >/dev/null 2>&1
  done
  rm -rf "$tmp"
  git -C "$root" worktree prune
}

check_out() {
  tree="$tmp/$1"
  git -C "$root" worktree add --detach --quiet "$tree" "$2"
  mkdir -p "$tmp/path-$1"
  ln -s "$tree/plugins" "$tmp/path-$1/moebench_plugins"
  commit_path="$tree:$tmp/path-$1${PYTHONPATH:+:$PYTHONPATH}"
}
