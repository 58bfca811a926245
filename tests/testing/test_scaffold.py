"""``moebench init-plugin``: the packages it writes install with pip, show up in
``moebench plugins`` and pass their own conformance tests (the guide's example package runs in a
suite: tests/core/test_third_party_plugin.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from moebench.errors import MoebenchError
from moebench.testing.scaffold import init_plugin


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return env


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moebench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_scaffolded_packages_install_register_and_pass_the_kit(tmp_path):
    env = _env(tmp_path / "site")
    made = _cli("init-plugin", "restart-em", "--dir", str(tmp_path), env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "pip install -e" in made.stdout
    init_plugin("toy-data", "dataset", tmp_path)
    init_plugin("test-mae", "metric", tmp_path)
    roots = sorted(tmp_path.glob("moebench-*"))
    assert [r.name for r in roots] == ["moebench-restart-em", "moebench-test-mae",
                                       "moebench-toy-data"]
    for root in roots:
        assert {p.name for p in root.iterdir()} >= {"pyproject.toml", "README.md", "tests"}
    # installed into a target folder: fast, offline, and the shared environment stays clean
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(tmp_path / "site"),
                    *map(str, roots)], check=True)

    listed = _cli("plugins", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    found = {p["name"]: p for p in json.loads(listed.stdout)}
    assert found["restart-em"]["registered"] == {"algorithms": ["restart-em"]}
    assert found["toy-data"]["registered"] == {"datasets": ["toy-data"]}
    assert found["test_mae"]["registered"] == {"metrics": ["test_mae"]}
    for name in ("restart-em", "toy-data", "test_mae"):
        assert found[name]["status"] == "loaded", found[name]["error"]
        assert found[name]["version"] == "0.1.0"

    # one pytest over the three packages, in pytest's default import mode: their test modules
    # have distinct names (tests/test_<module>_conformance.py), so they do not clash
    assert len({p.name for r in roots for p in (r / "tests").glob("test_*.py")}) == 3
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            *(str(r / "tests") for r in roots)],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout


def test_init_plugin_refuses_bad_names_and_existing_folders(tmp_path):
    with pytest.raises(MoebenchError, match="invalid plugin name 'Bad_Name'"):
        init_plugin("Bad_Name", "algorithm", tmp_path)
    init_plugin("ok", "algorithm", tmp_path)
    with pytest.raises(MoebenchError, match="exists already"):
        init_plugin("ok", "dataset", tmp_path)
    with pytest.raises(MoebenchError, match="unknown kind"):
        init_plugin("other", "model", tmp_path)  # type: ignore[arg-type]
