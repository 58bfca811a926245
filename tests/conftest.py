"""Shared fixtures: data location, fresh plugin registries, and extra test plugins."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from moebench import plugins

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

if "MOEBENCH_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["MOEBENCH_DATA"] = str(SHARED_DATA)
# Tests never download: missing data must show up as a clear skip, not a network wait.
os.environ.setdefault("MOEBENCH_OFFLINE", "1")
# Kernels run eagerly (no compilation minutes on CI); tests/plugins/models/test_kernels.py
# compiles them itself.
os.environ.setdefault("MOEBENCH_COMPILE", "never")


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Forget loaded plugins before and after a test that changes what is discoverable."""
    plugins.reset_plugins()
    yield
    plugins.reset_plugins()


TEST_PLUGIN_MODULES = {
    "mb_test_components": '''
        import torch
        from moebench import Algorithm, Dataset, Params, hookimpl
        from moebench.algorithm import Iterate
        from moebench.errors import DataUnavailable
        from pydantic import Field


        class Explode(Algorithm):
            """Raises at a chosen iteration, like a buggy plugin."""
            name = "explode"
            summary = "raises RuntimeError"

            class Params(Params):
                at: int = Field(1, description="iteration that raises")
                interrupt: bool = Field(False, description="raise KeyboardInterrupt instead")

            def fit(self, problem, init, callback):
                for t in range(10**6):
                    if t == self.params.at:
                        if self.params.interrupt:
                            raise KeyboardInterrupt
                        raise RuntimeError("boom: the plugin failed")
                    if not callback(Iterate(t, init)):
                        return init
                return init


        class Blowup(Algorithm):
            """Parameters become NaN after one step."""
            name = "blowup"

            def fit(self, problem, init, callback):
                params = dict(init)
                t = 0
                while callback(Iterate(t, params)):
                    t += 1
                    params = {k: v * float("nan") for k, v in params.items()}
                return params


        class MissingData(Dataset):
            name = "missing-data"
            summary = "always unavailable"

            def load(self, seed):
                raise DataUnavailable("missing-data: files not found; put them in /nowhere")


        @hookimpl
        def register_algorithms(register):
            register(Explode)
            register(Blowup)


        @hookimpl
        def register_datasets(register):
            register(MissingData)
    ''',
    "mb_test_broken_import": '''
        raise ImportError("this plugin needs a package that is not installed")
    ''',
    "mb_test_broken_hook": '''
        from moebench import hookimpl

        @hookimpl
        def register_algorithms(register):
            raise ValueError("registration exploded")
    ''',
    "mb_test_duplicate": '''
        from moebench import hookimpl
        from moebench_plugins.devices.cpu import CPU

        @hookimpl
        def register_devices(register):
            register(CPU)
    ''',
}


def fake_distribution(site: Path, name: str, modules: dict[str, str],
                      entry_points: dict[str, str], version: str = "0.0.1") -> Path:
    """Write modules and a ``NAME-VERSION.dist-info`` with ``[moebench]`` entry points into
    ``site``: an installed distribution as importlib.metadata sees it, once ``site`` is on
    ``sys.path`` (worker processes inherit it)."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[moebench]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return site


@pytest.fixture
def test_plugins(tmp_path, monkeypatch, fresh_plugins):
    """Make a fake installed distribution with good and broken plugins discoverable."""
    site = fake_distribution(tmp_path / "site", "mb-test-plugins", TEST_PLUGIN_MODULES, {
        "test-components": "mb_test_components",
        "test-broken-import": "mb_test_broken_import",
        "test-broken-hook": "mb_test_broken_hook",
        "test-duplicate": "mb_test_duplicate",
    })
    monkeypatch.syspath_prepend(str(site))
    plugins.reset_plugins()
    return site
