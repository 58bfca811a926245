"""The main job, in quick mode: every experiment of suites/paper.yaml runs and is reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs the shared datasets beside the clone")
def test_paper_suite_quick(fresh_plugins, tmp_path):
    suite = load_suite(ROOT / "suites" / "paper.yaml")
    # two workers (one torch thread each): the README's quick run is the same grid on one
    # (report.html is checked in tests/reports/test_html_report.py)
    directory = run_suite(suite, tmp_path, quick=True, suite_path="suites/paper.yaml", jobs=2,
                          html_report=False)
    finals = read_results(directory).query("record == 'final'")
    assert set(finals["experiment"]) == {e.name for e in suite.experiments}
    bad = finals[finals["status"].isin(["error", "diverged"])]
    assert bad.empty, bad[["experiment", "dataset", "algorithm", "message"]].to_string()
    skipped = finals[finals["status"] == "skipped"]
    assert set(skipped["dataset"]) <= {"cifar10"}, skipped[["dataset", "message"]].to_string()
    report = (directory / "REPRODUCTION.md").read_text()
    for exp in suite.experiments:
        assert f"## {exp.name}" in report
    assert "Makkuva et al. 2019, Table 1" in report
    # a quick run's verdicts are not the paper suite's: its headline says so
    assert report.splitlines()[2].endswith("(quick run: fewer seeds, smaller problems).**")
    verdicts = re.findall(r"\| (consistent|(?:above|below) \((?:better|worse)\)) \|$", report,
                          flags=re.M)
    assert len(verdicts) == 14  # every reference value of Tables 1 and 2 got measured
    assert list((directory / "figures").glob("*.png"))
