"""moebench: benchmarking algorithms that learn Mixture-of-Experts models.

``import moebench`` gives the plugin interfaces (:class:`Algorithm`, :class:`Dataset`,
:class:`Metric`, :class:`Model`, ...) and the registries (``moebench.plugins``).
``moebench.api`` (the stable names for reusing first-party components) and
``moebench.testing`` (the conformance kit) are imported on first attribute access.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moebench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from . import plugins  # noqa: E402
from .algorithm import Algorithm, Callback, Iterate, Problem  # noqa: E402
from .dataset import Data, Dataset, ModelSpec  # noqa: E402
from .device import Device  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .metric import EvalContext, Metric  # noqa: E402
from .model import InitSpec, Model, ParamDict  # noqa: E402
from .params import NoParams, Params  # noqa: E402

_LAZY_SUBMODULES = ("api", "testing")


def __getattr__(name: str):
    """``moebench.api`` and ``moebench.testing`` on first use (they import more)."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Algorithm",
    "Callback",
    "Data",
    "Dataset",
    "Device",
    "EvalContext",
    "InitSpec",
    "Iterate",
    "Metric",
    "Model",
    "ModelSpec",
    "NoParams",
    "ParamDict",
    "Params",
    "Problem",
    "__version__",
    "hookimpl",
    "plugins",
]
