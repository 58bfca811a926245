"""``moebench init-plugin`` refuses names it cannot turn into a package, and reports a file it
cannot write in one line naming it, leaving nothing half-written behind (issue 21, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moebench.errors import MoebenchError
from moebench.testing.scaffold import MAX_NAME_LENGTH, init_plugin


def _init_plugin_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moebench.cli", "init-plugin", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_300_character_name_is_refused_in_one_line_that_says_the_rule(tmp_path):
    line = _one_error_line(_init_plugin_cli("a" * 300, cwd=tmp_path))
    assert "300 characters" in line
    assert f"at most {MAX_NAME_LENGTH} characters" in line
    assert "lower-case letters, digits and single hyphens" in line
    assert list(tmp_path.iterdir()) == []


def test_the_longest_allowed_name_makes_a_package(tmp_path):
    name = "a" * MAX_NAME_LENGTH
    root = init_plugin(name, "metric", tmp_path)
    assert (root / f"moebench_{name}" / "__init__.py").is_file()
    with pytest.raises(MoebenchError, match=f"at most {MAX_NAME_LENGTH} characters"):
        init_plugin(name + "b", "algorithm", tmp_path)


def test_a_folder_that_cannot_be_written_is_named_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    under = blocker / "plugins"
    line = _one_error_line(_init_plugin_cli("restart-em", "--dir", str(under), cwd=tmp_path))
    assert line.startswith("error: cannot write the plugin package: ")
    assert str(under / "moebench-restart-em") in line
    assert "Not a directory" in line


def _folder_of_path_length(parent: Path, length: int) -> Path:
    """A new folder under ``parent`` whose path has ``length`` characters (200 per level)."""
    folder = parent
    while len(str(folder)) < length:
        folder = folder / ("d" * min(200, length - len(str(folder)) - 1))
    folder.mkdir(parents=True)
    return folder


def test_a_file_that_cannot_be_written_is_named_and_no_half_package_stays(tmp_path):
    # the package folder fits in PATH_MAX (4096 bytes on Linux), its files do not
    base = _folder_of_path_length(tmp_path, 4096 - 1 - len("/moebench-restart-em") - 2)
    with pytest.raises(MoebenchError) as refused:
        init_plugin("restart-em", "algorithm", base)
    message = str(refused.value)
    assert message.startswith(f"cannot write the plugin package: {base}/moebench-restart-em/")
    assert message.endswith("File name too long")
    assert "\n" not in message
    assert list(base.iterdir()) == []


def test_an_existing_package_folder_is_refused_and_kept(tmp_path):
    root = init_plugin("restart-em", "algorithm", tmp_path)
    (root / "mine.txt").write_text("keep me\n")
    with pytest.raises(MoebenchError, match="exists already"):
        init_plugin("restart-em", "algorithm", tmp_path)
    assert (root / "mine.txt").read_text() == "keep me\n"
    assert os.listdir(root)
