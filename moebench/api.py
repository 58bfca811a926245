"""The stable public API for plugin authors who reuse first-party components.

Everything a third-party plugin may import from moebench is either in the top-level ``moebench``
namespace (the interfaces: :class:`~moebench.Algorithm`, :class:`~moebench.Problem`,
:class:`~moebench.Iterate`, :class:`~moebench.Model`, :class:`~moebench.InitSpec`, ...) or here.
The names in :data:`__all__` keep their meaning and signature within a major version (a removal
or an incompatible change is announced one minor release ahead);
``tests/core/test_plugin_api.py`` fails when one disappears. Anything else under
``moebench_plugins`` is an implementation detail that may change in any release.

The core does not import its plugins: the interfaces and the EM contract (:mod:`moebench.em`)
are defined here in the core, and every other name is supplied by the distribution that
implements it, through the entry-point group ``moebench.api`` (the first-party plugins declare
theirs in moebench's ``pyproject.toml``), and looked up on first use.

Import these at module level in a plugin, instead of ``moebench.plugins.get(...)``::

    from moebench.api import JointEM, JointEMParams, RegressionMoE

Groups
------
Interfaces (re-exported from :mod:`moebench`)
    ``Algorithm``, ``Callback``, ``Data``, ``Dataset``, ``EvalContext``, ``InitSpec``,
    ``Iterate``, ``Metric``, ``Model``, ``ModelSpec``, ``ParamDict``, ``Params``, ``Problem``,
    ``hookimpl``; errors ``DataError``, ``DataUnavailable``, ``UnsupportedProblem``.
Model families (registered names in brackets)
    ``RegressionMoE`` (``regression-moe``), ``LogisticMoE`` (``logistic-moe``), ``DeepMoE``
    (``deep-moe``), ``SymMoLinE`` (``symmoline``), ``SymMoLogE`` (``symmologe``), and the
    EM interface they implement, ``SupportsEM`` (``joint_log_probs``, ``posterior``,
    ``m_step``, ``em_step``, ``q_value``), with ``GateOptions``.
Algorithms and their parameters
    ``JointEM`` / ``JointEMParams`` (``joint-em``), ``MirrorEM`` / ``MirrorEMParams``
    (``mirror-em``), ``OnlineEM`` / ``OnlineEMParams`` (``online-em``), ``TensorEM`` /
    ``TensorEMParams`` (``tensor-em``), ``GradientDescent``
    (``gd``; its parameters are ``GradientDescent.Params``), ``EMParams`` (``tol`` and the gate
    M-step settings shared by the EM family), ``run_em`` (the EM / mirror-descent loop of
    ``joint-em``), ``relative_decrease``.
Kernels
    ``fit_softmax_gate`` (the gate M-step: damped Newton on the soft-label softmax
    regression), ``project_rows`` (projection onto ``||w_i|| <= radius``), ``permuted_error``
    (distance over expert permutations), ``open_npz_memmap``, ``open_npz_rows`` and
    ``open_parquet`` (data larger than memory).
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from moebench import (
    Algorithm,
    Callback,
    Data,
    Dataset,
    EvalContext,
    InitSpec,
    Iterate,
    Metric,
    Model,
    ModelSpec,
    ParamDict,
    Params,
    Problem,
    hookimpl,
)
from moebench.em import EMParams, GateOptions, SupportsEM
from moebench.errors import DataError, DataUnavailable, UnsupportedProblem

#: The entry-point group through which distributions supply the names of :data:`PROVIDED`.
ENTRY_POINT_GROUP = "moebench.api"

#: Names supplied by plugin distributions (the first-party ones: the ``moebench`` distribution).
PROVIDED = ("DeepMoE", "GradientDescent", "JointEM", "JointEMParams", "LogisticMoE", "MirrorEM",
            "MirrorEMParams", "OnlineEM", "OnlineEMParams", "RegressionMoE", "SymMoLinE",
            "SymMoLogE", "TensorEM", "TensorEMParams", "fit_softmax_gate", "open_npz_memmap",
            "open_npz_rows", "open_parquet", "permuted_error", "project_rows",
            "relative_decrease", "run_em")


def _provider(name: str) -> EntryPoint:
    """The entry point that supplies ``name`` (moebench's own first when several do)."""
    found = sorted(entry_points(group=ENTRY_POINT_GROUP, name=name),
                   key=lambda ep: (getattr(ep.dist, "name", None) != "moebench", ep.value))
    if not found:
        raise ImportError(
            f"moebench.api.{name} is supplied by moebench's first-party plugins (entry-point "
            f"group {ENTRY_POINT_GROUP!r}), and no installed distribution provides it: "
            "reinstall moebench (pip install moebench, or pip install -e . in a checkout)")
    return found[0]


def __getattr__(name: str) -> Any:
    """A name of :data:`PROVIDED`, loaded from its entry point on first use."""
    if name not in PROVIDED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    provider = _provider(name)
    try:
        value = provider.load()
    except ImportError as exc:
        raise ImportError(f"moebench.api.{name} comes from {provider.value}, which could not "
                          f"be imported ({exc}): reinstall the distribution that provides it "
                          f"({getattr(provider.dist, 'name', 'moebench')})") from exc
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(PROVIDED))


#: The stable names (see the module docstring); removing one breaks
#: ``tests/core/test_plugin_api.py``.
__all__ = [
    # interfaces
    "Algorithm",
    "Callback",
    "Data",
    "DataError",
    "DataUnavailable",
    "Dataset",
    "EvalContext",
    "InitSpec",
    "Iterate",
    "Metric",
    "Model",
    "ModelSpec",
    "ParamDict",
    "Params",
    "Problem",
    "UnsupportedProblem",
    "hookimpl",
    # model families
    "DeepMoE",
    "GateOptions",
    "LogisticMoE",
    "RegressionMoE",
    "SupportsEM",
    "SymMoLinE",
    "SymMoLogE",
    # algorithms
    "EMParams",
    "GradientDescent",
    "JointEM",
    "JointEMParams",
    "MirrorEM",
    "MirrorEMParams",
    "OnlineEM",
    "OnlineEMParams",
    "TensorEM",
    "TensorEMParams",
    "relative_decrease",
    "run_em",
    # kernels
    "fit_softmax_gate",
    "open_npz_memmap",
    "open_npz_rows",
    "open_parquet",
    "permuted_error",
    "project_rows",
]
