"""The GPU check's pieces, run on the CPU so that no CUDA-only path goes untested:
the kernel table on a chosen device and dtype, and the comparison of two runs across devices."""

from __future__ import annotations

import textwrap

from measurements import compare_devices, measure_kernels
from moebench.reports.results import read_results
from moebench.runner import run_suite
from moebench.suite import parse_suite

SUITE = """
name: devices
seed: 4
repetitions: 1
budget: {max_iter: 5, timeout: 60}
metrics: [param_error, train_nll, test_mse]
datasets:
  - name: synthetic-moe
    params: {n: 400, n_test: 100, d: 3, k: 2, sigma: 0.3}
algorithms:
  - name: joint-em
  - name: gd
"""


def test_kernel_table_runs_in_float32_on_a_chosen_device(capsys, monkeypatch):
    monkeypatch.setenv("MOEBENCH_COMPILE", "never")  # restored after the test
    measure_kernels.main(["--n", "3000", "--repeat", "1", "--device", "cpu", "--dtype",
                          "float32", "--compile", "never"])
    out = capsys.readouterr().out
    assert "float32 on cpu" in out and "| fused EM iteration" in out


def test_compare_devices_accepts_equal_runs_and_flags_different_ones(fresh_plugins, tmp_path,
                                                                     capsys):
    a = run_suite(parse_suite(textwrap.dedent(SUITE)), tmp_path / "a")
    b = run_suite(parse_suite(textwrap.dedent(SUITE).replace('dtype', 'dtype')
                              + "dtype: float32\n"), tmp_path / "b")
    assert compare_devices.main([str(a), str(b)]) == 0  # float64 vs float32 on the CPU
    frame = read_results(a)
    problems = compare_devices.compare(frame, frame.assign(train_nll=frame["train_nll"] * 1.1),
                                       1e-4, 1e-2)
    assert any("iteration 0: train_nll" in p for p in problems)
    assert any("final: train_nll" in p for p in problems)


def test_kernel_table_leaves_autograd_and_compile_settings_alone(monkeypatch):
    import os

    import torch

    monkeypatch.setenv("MOEBENCH_COMPILE", "never")
    measure_kernels.main(["--n", "2000", "--repeat", "1"])
    assert torch.is_grad_enabled()
    assert os.environ["MOEBENCH_COMPILE"] == "never"
