"""What every check of the kit shares: the small default problem, looking up the component
under test, the devices to run on, and the loop that runs checks and names the first failure."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .. import plugins
from ..cell.unit import build_model, truth_for  # the one place the kit imports them from
from ..device import Device

__all__ = ["DEFAULT_DATASET", "available_devices", "build_model", "component_class",
           "component_label", "run_checks", "truth_for", "type_name"]

#: ``(dataset name, params)`` of the small problem the algorithm and metric checks fit.
DEFAULT_DATASET = ("synthetic-moe", {"n": 400, "n_test": 100, "d": 4, "k": 2, "sigma": 0.3})


def type_name(value: Any) -> str:
    """The qualified name of ``value``'s type, as failure messages print it (``float``,
    ``numpy.float64``)."""
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


def available_devices() -> list[Device]:
    """Instances of every registered device that works on this machine."""
    devices = [cls() for cls in plugins.components("devices").values()]
    return [d for d in devices if d.is_available()]


def component_label(name: str | type) -> str:
    """How a failure names the component: its plugin name."""
    return name if isinstance(name, str) else getattr(name, "name", name.__name__)


def run_checks(label: str, checks: Iterable[tuple[str, Callable[[], None]]]) -> list[str]:
    """Run ``(check_id, check)`` pairs in order; the ids that passed. The first failure raises
    ``AssertionError`` prefixed with ``label`` and the check's id."""
    passed = []
    for check_id, check in checks:
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"{label}: {check_id}: {exc}") from exc
        passed.append(check_id)
    return passed


def component_class(kind: str, name: str | type) -> type:
    """A registered component of ``kind`` by name, or a class given directly (checked against
    the kind's base class, e.g. an algorithm that is not registered yet)."""
    base = plugins.KINDS[kind][1]
    if isinstance(name, type):
        if not issubclass(name, base):
            raise TypeError(f"{name!r} is not a moebench.{base.__name__} subclass")
        return name
    return plugins.get(kind, name)

