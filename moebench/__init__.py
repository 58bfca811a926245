"""moebench: benchmarking algorithms that learn Mixture-of-Experts models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("moebench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from .algorithm import Algorithm, Callback, Iterate, Problem  # noqa: E402
from .dataset import Data, Dataset, ModelSpec  # noqa: E402
from .device import Device  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402
from .metric import EvalContext, Metric  # noqa: E402
from .model import InitSpec, Model, ParamDict  # noqa: E402
from .params import NoParams, Params  # noqa: E402

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
]
