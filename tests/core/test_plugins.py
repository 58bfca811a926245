"""Plugin discovery: first-party plugins via entry points, failures isolated, allowlist."""

from __future__ import annotations

import pytest

import moebench
from moebench import plugins
from moebench.errors import PluginError

FIRST_PARTY = {"cpu", "cuda", "core-metrics", "moe-models", "synthetic", "joint-em", "gd"}


def test_first_party_plugins_load_through_entry_points(fresh_plugins):
    infos = {p.name: p for p in plugins.plugin_infos()}
    assert FIRST_PARTY <= set(infos)
    for name in FIRST_PARTY:
        assert infos[name].status == "loaded", infos[name].error
        assert infos[name].distribution == "moebench"
        assert infos[name].version == moebench.__version__
    assert {"joint-em", "gd"} <= set(plugins.components("algorithms"))
    assert "cpu" in plugins.components("devices")


def test_loading_is_idempotent(fresh_plugins):
    assert plugins.load_plugins() is plugins.load_plugins()


def test_broken_plugins_are_reported_and_do_not_stop_the_others(test_plugins):
    infos = {p.name: p for p in plugins.plugin_infos()}
    assert infos["test-broken-import"].status == "failed"
    assert "not installed" in infos["test-broken-import"].error
    assert infos["test-broken-hook"].status == "failed"
    assert "registration exploded" in infos["test-broken-hook"].error
    assert infos["test-duplicate"].status == "failed"
    assert "already registered" in infos["test-duplicate"].error
    assert infos["test-components"].status == "loaded"
    algorithms = plugins.components("algorithms")
    assert {"explode", "joint-em", "gd"} <= set(algorithms)


def test_allowlist_restricts_loading(fresh_plugins, monkeypatch):
    monkeypatch.setenv("MOEBENCH_PLUGINS", "cpu, joint-em")
    plugins.reset_plugins()
    assert {p.name for p in plugins.plugin_infos()} == {"cpu", "joint-em"}
    assert list(plugins.components("devices")) == ["cpu"]
    monkeypatch.setenv("MOEBENCH_PLUGINS", "")
    plugins.reset_plugins()
    assert plugins.plugin_infos() == []


def test_unknown_component_lists_valid_names(fresh_plugins):
    with pytest.raises(PluginError, match=r"unknown algorithm 'jont-em'; valid names: .*joint-em"):
        plugins.get("algorithms", "jont-em")
