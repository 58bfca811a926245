"""``--scheduler`` is checked before a run writes anything: a malformed address or one where
nothing listens ends the run in one line with exit code 1, and a scheduler that never answers
stops it within the connect timeout (issue 21, item 6)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from moebench.cli import EXIT_CANNOT_RUN, main
from moebench.errors import SchedulerError
from moebench.execution import dask as dask_executor
from moebench.execution.dask import DaskExecutor, reachable_scheduler, scheduler_address
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """\
name: scheduler-test
seed: 1
repetitions: 1
budget: {max_iter: 3}
metrics: [train_nll]
datasets:
  - name: synthetic-moe
    params: {n: 200, n_test: 50, d: 3, k: 2}
algorithms:
  - name: gd
"""


@pytest.mark.parametrize(("value", "problem"), [
    ("not-an-address", "not HOST:PORT, and no scheduler file of that name"),
    ("http://head:8786", "unknown protocol 'http' (Dask's are tcp, tls, ws, wss, ucx)"),
    ("tcp://head", "no :PORT"),
    ("tcp://:8786", "no HOST before the :PORT"),
    ("head:99999", "port '99999' is not a number from 1 to 65535"),
    ("tcp://::1:8786", "'::1' is not a host name or IP address (IPv6 in brackets: [::1])"),
    ("  ", "empty"),
])
def test_a_malformed_address_is_refused_in_one_line_saying_what_is_expected(value, problem):
    with pytest.raises(SchedulerError) as refused:
        scheduler_address(value)
    assert str(refused.value) == (f"--scheduler {value!r}: {problem}; expected tcp://HOST:PORT, "
                                  "HOST:PORT or a scheduler file (the JSON that 'dask scheduler "
                                  "--scheduler-file FILE' writes)")
    with pytest.raises(SchedulerError):
        DaskExecutor(scheduler=value)


@pytest.mark.parametrize("value", ["tcp://10.0.0.5:8786", "head-node.cluster:8786",
                                   "tls://[fe80::1]:8786", "ucx://node_7:13337"])
def test_well_formed_addresses_pass_unchanged(value):
    assert scheduler_address(value) == value


def test_a_scheduler_file_gives_its_address(tmp_path):
    good = tmp_path / "scheduler.json"
    good.write_text(json.dumps({"type": "Scheduler", "address": "tcp://10.0.0.5:8786"}))
    assert scheduler_address(str(good)) == "tcp://10.0.0.5:8786"
    bad = tmp_path / "notes.txt"
    bad.write_text("tcp://10.0.0.5:8786\n")
    with pytest.raises(SchedulerError, match=r"^--scheduler '.*notes.txt': a file, but not a "
                                             r"scheduler file \(JSONDecodeError"):
        scheduler_address(str(bad))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cli(tmp_path: Path, scheduler: str):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(suite), "--out", str(out), "--progress",
                                       "none", "--scheduler", scheduler])
    return result, out


def test_cli_refuses_a_malformed_scheduler_before_writing_anything(tmp_path):
    result, out = _run_cli(tmp_path, "not-an-address")
    assert result.exit_code == EXIT_CANNOT_RUN, result.output
    lines = result.output.strip().splitlines()
    assert lines == ["error: --scheduler 'not-an-address': not HOST:PORT, and no scheduler file "
                     "of that name; expected tcp://HOST:PORT, HOST:PORT or a scheduler file "
                     "(the JSON that 'dask scheduler --scheduler-file FILE' writes)"]
    assert not _files(out)


def _files(folder: Path) -> list[Path]:
    """The files a run left in ``folder`` (its lock takes ``<suite>/`` first; that may stay)."""
    return [p for p in folder.rglob("*") if p.is_file()]


def test_cli_reports_an_address_where_nothing_listens_at_once_in_one_line(tmp_path):
    address = f"tcp://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    result, out = _run_cli(tmp_path, address)
    assert time.monotonic() - start < 20
    assert result.exit_code == EXIT_CANNOT_RUN, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0] == (f"error: --scheduler {address!r}: cannot reach a Dask scheduler at "
                        f"{address}: Connection refused (waited up to 30 s); is 'dask "
                        "scheduler' running there?")
    assert not _files(out)  # a later run needs no --resume or --overwrite


def test_a_listener_that_never_answers_fails_within_the_connect_timeout(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT", 1.0)
    with socket.socket() as silent:  # accepts TCP connections, never speaks Dask
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        assert reachable_scheduler(address) == address
        start = time.monotonic()
        with pytest.raises(SchedulerError) as refused:
            run_suite(parse_suite(SUITE), tmp_path, executor="dask", scheduler=address,
                      html_report=False)
        assert time.monotonic() - start < 30
    message = str(refused.value)
    assert message.startswith(f"cannot reach the Dask scheduler at {address}: ")
    assert "\n" not in message


def test_an_address_that_never_accepts_is_given_up_after_the_timeout():
    # connections that get no answer wait for the timeout, not for the OS's minutes
    with socket.socket() as busy, socket.socket() as first:
        busy.bind(("127.0.0.1", 0))
        busy.listen(0)  # one pending connection fills its backlog: later ones get no answer
        first.connect(busy.getsockname())
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(SchedulerError) as refused:
            reachable_scheduler(address, timeout=0.5)
        assert time.monotonic() - start < 5
    assert str(refused.value) == (f"--scheduler {address!r}: cannot reach a Dask scheduler at "
                                  f"{address}: no answer (waited up to 0.5 s); is 'dask "
                                  "scheduler' running there?")
