"""The stable public API for plugin authors who reuse first-party components.

Everything a third-party plugin may import from moebench is either in the top-level ``moebench``
namespace (the interfaces: :class:`~moebench.Algorithm`, :class:`~moebench.Problem`,
:class:`~moebench.Iterate`, :class:`~moebench.Model`, :class:`~moebench.InitSpec`, ...) or here.
The names in :data:`__all__` keep their meaning and signature within a major version (a removal or
an incompatible change is announced one minor release ahead); ``tests/test_plugin_api.py`` fails
when one disappears. Anything else under ``moebench_plugins`` is an implementation detail that may
change in any release.

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
    (``mirror-em``), ``TensorEM`` / ``TensorEMParams`` (``tensor-em``), ``GradientDescent``
    (``gd``; its parameters are ``GradientDescent.Params``), ``EMParams`` (``tol`` and the gate
    M-step settings shared by the EM family), ``run_em`` (the EM / mirror-descent loop of
    ``joint-em``), ``relative_decrease``.
Kernels
    ``fit_softmax_gate`` (the gate M-step: damped Newton on the soft-label softmax
    regression), ``project_rows`` (projection onto ``||w_i|| <= radius``), ``permuted_error``
    (distance over expert permutations), ``open_npz_memmap`` and ``open_parquet`` (data larger
    than memory).
"""

from __future__ import annotations

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
from moebench.errors import DataError, DataUnavailable, UnsupportedProblem
from moebench_plugins.algorithms.gd import GradientDescent
from moebench_plugins.algorithms.joint_em import JointEM, JointEMParams, relative_decrease, run_em
from moebench_plugins.algorithms.mirror_em import MirrorEM, MirrorEMParams
from moebench_plugins.algorithms.tensor_em import TensorEM, TensorEMParams
from moebench_plugins.models.alignment import permuted_error
from moebench_plugins.models.classification import LogisticMoE
from moebench_plugins.models.deep import DeepMoE
from moebench_plugins.models.em import EMParams, GateOptions, SupportsEM
from moebench_plugins.models.gate import fit_softmax_gate, project_rows
from moebench_plugins.models.kernels import open_npz_memmap
from moebench_plugins.models.parquet import open_parquet
from moebench_plugins.models.regression import RegressionMoE
from moebench_plugins.models.symmetric import SymMoLinE, SymMoLogE

#: The stable names (see the module docstring). Removing one breaks ``tests/test_plugin_api.py``.
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
    "TensorEM",
    "TensorEMParams",
    "relative_decrease",
    "run_em",
    # kernels
    "fit_softmax_gate",
    "open_npz_memmap",
    "open_parquet",
    "permuted_error",
    "project_rows",
]
