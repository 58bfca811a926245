"""Every code block of docs/plugins.md runs, in order, in an empty folder.

``<!-- file: PATH -->`` blocks are written to PATH; ``bash`` blocks run with ``set -e``, with
``pip install`` installing into a target folder (offline, without touching the shared
environment) on ``PYTHONPATH``; other ``python`` blocks run as scripts, each in a fresh
namespace (consecutive ones in one interpreter).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "plugins.md"

BLOCK = re.compile(r"(?:<!-- file: (?P<file>\S+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
                   re.S)

PIP = """
pip() {
    if [ "$1" != install ]; then echo "the guide may only 'pip install'" >&2; return 1; fi
    shift
    local args=()
    for a in "$@"; do [ "$a" = -e ] || args+=("$a"); done
    "$PYTHON" -m pip install -q --upgrade --no-deps --no-build-isolation --no-index \\
        --target "$SITE" "${args[@]}"
}
"""


def blocks() -> list[tuple[str | None, str, str]]:
    return [(m["file"], m["lang"], m["body"]) for m in BLOCK.finditer(GUIDE.read_text())]


def test_every_block_is_runnable():
    kinds = {(file is not None, lang) for file, lang, _ in blocks()}
    for has_file, lang in kinds:
        assert has_file or lang in ("bash", "python"), (
            f"a ```{lang} block without a <!-- file: --> marker cannot be run by this test")


def test_guide_blocks_run_in_order(tmp_path):
    site = tmp_path / "site"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ)
    env.update(SITE=str(site), PYTHON=sys.executable,
               PYTHONPATH=os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]))
    outputs = []
    python: list[str] = []  # consecutive python blocks run in one interpreter (start-up time)

    def run(command: list[str], what: str) -> None:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{what} failed:\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)

    def flush() -> None:
        if python:
            script = "".join(f"exec(compile({body!r}, 'guide block', 'exec'), "
                             "{'__name__': '__main__'})\n" for body in python)
            run([sys.executable, "-c", script], "python blocks:\n" + "\n".join(python))
            python.clear()

    for file, lang, body in blocks():
        if lang == "python" and file is None:
            python.append(body)
            continue
        flush()
        if file is not None:
            path = work / file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(body)
        else:
            run(["bash", "-c", "set -eo pipefail\n" + PIP + body], "bash block:\n" + body)
    flush()
    text = "\n".join(outputs)
    assert "restart-em" in text and "loaded" in text
    assert "passed" in text
    board = (work / "results" / "restart-demo" / "leaderboard.csv").read_text()
    row = next(line for line in board.splitlines() if ",restart-em," in line)
    assert ",1.0," in row  # every cell of restart-em succeeded
