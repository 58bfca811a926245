"""Conformance checks for plugins, in the spirit of scikit-learn's ``check_estimator``.

Plugin authors run ``check_algorithm("my-algorithm")`` (or ``check_algorithm(MyAlgorithm)``,
before registering it), ``check_dataset("my-dataset", params)`` and ``check_metric("my-metric")``
in their own test suite; moebench runs them over every registered component. Each check raises
``AssertionError`` with a message that names the broken contract and says what to change.

What lives where:

- ``algorithms``: the algorithm checks (the contract, check by check), ``algorithm_checks``
  and ``check_algorithm``.
- ``fixture``: the algorithm checks' fixture (``Fixture``) and the fits it records (``Run``,
  ``Report``).
- ``datasets``: ``dataset_checks`` and ``check_dataset``.
- ``metrics``: ``check_metric``.
- ``harness``: what the checks share (the default problem, component lookup, available devices,
  the run-and-name-the-failure loop).
- ``scaffold``: ``moebench init-plugin`` (``init_plugin``), its templates in ``templates/``.
- ``browser``: the headless-Chromium check of ``report.html`` (needs the ``test`` extra's
  websocket-client; import ``moebench.testing.browser`` explicitly).
"""

from .algorithms import (
    CHECKS,
    CONVERGENCE_TOL,
    MAX_CONVERGENCE_ITER,
    MAX_MODEL_CALLS_AFTER_STOP,
    ConvergenceCheckSkipped,
    algorithm_checks,
    check_algorithm,
    check_callback_stop_midway,
    check_callback_types,
    check_deterministic,
    check_device_dtype_roundtrip,
    check_does_not_modify_init,
    check_does_not_modify_reported_params,
    check_finite,
    check_reports_initial_point_and_counts,
    check_respects_max_iter,
    check_result_shapes,
    check_returns_on_own_convergence,
    check_stops_at_initial_point,
)
from .datasets import MAX_SHARED_TEST_ROWS, check_dataset, dataset_checks
from .fixture import Fixture, Report, Run
from .harness import DEFAULT_DATASET, available_devices
from .metrics import check_metric
from .scaffold import init_plugin

__all__ = [
    "ConvergenceCheckSkipped",
    "CHECKS",
    "CONVERGENCE_TOL",
    "DEFAULT_DATASET",
    "MAX_CONVERGENCE_ITER",
    "MAX_MODEL_CALLS_AFTER_STOP",
    "MAX_SHARED_TEST_ROWS",
    "Fixture",
    "Report",
    "Run",
    "algorithm_checks",
    "available_devices",
    "check_algorithm",
    "check_callback_stop_midway",
    "check_callback_types",
    "check_dataset",
    "check_deterministic",
    "check_device_dtype_roundtrip",
    "check_does_not_modify_init",
    "check_does_not_modify_reported_params",
    "check_finite",
    "check_metric",
    "check_reports_initial_point_and_counts",
    "check_respects_max_iter",
    "check_result_shapes",
    "check_returns_on_own_convergence",
    "check_stops_at_initial_point",
    "dataset_checks",
    "init_plugin",
]
