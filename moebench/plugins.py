"""Plugin discovery and the registries of components.

Plugins are modules registered under the ``moebench`` entry-point group, first-party ones
included. Loading is lazy (on first use) and idempotent. ``MOEBENCH_PLUGINS=a,b`` restricts
loading to the named entry points (an empty value loads none). A plugin that fails to import or
to register is recorded with its error and does not stop the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from . import hookspecs
from .algorithm import Algorithm
from .dataset import Dataset
from .device import Device
from .errors import PluginError
from .metric import Metric
from .model import Model

ENTRY_POINT_GROUP = "moebench"
ALLOWLIST_ENV = "MOEBENCH_PLUGINS"

#: registry kind -> (hook name, required base class)
KINDS: dict[str, tuple[str, type]] = {
    "algorithms": ("register_algorithms", Algorithm),
    "datasets": ("register_datasets", Dataset),
    "devices": ("register_devices", Device),
    "metrics": ("register_metrics", Metric),
    "models": ("register_models", Model),
}


@dataclass
class PluginInfo:
    """One entry point: where it comes from, what it registered, or why it failed."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    status: str = "loaded"  # "loaded" | "failed"
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "registered": self.registered,
        }


@dataclass
class Registry:
    """Components by kind and name, and the plugins they came from."""

    components: dict[str, dict[str, type]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    owners: dict[str, dict[str, str]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    plugins: dict[str, PluginInfo] = field(default_factory=dict)


_lock = threading.Lock()
_registry: Registry | None = None
_pm: pluggy.PluginManager | None = None


def _allowlist() -> set[str] | None:
    value = os.environ.get(ALLOWLIST_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _short_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


@contextlib.contextmanager
def _user_interrupts() -> Iterator[Callable[[], bool]]:
    """Tell a real Ctrl-C apart from a ``KeyboardInterrupt`` a plugin raises itself.

    Plugin code that raises ``SystemExit`` or ``KeyboardInterrupt`` only fails that plugin; a
    Ctrl-C of the user during loading still interrupts.
    """
    seen = {"signal": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        seen["signal"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: seen["signal"]
    finally:
        signal.signal(signal.SIGINT, previous)


def load_plugins() -> Registry:
    """Discover, import and register every plugin once; later calls return the same registry."""
    global _registry, _pm
    with _lock:
        if _registry is not None:
            return _registry
        registry = Registry()
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        allow = _allowlist()
        # First-party plugins first, so that they keep their names if a third party collides.
        def order(ep):
            dist = getattr(ep, "dist", None)
            return (getattr(dist, "name", None) != "moebench", ep.name)

        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=order):
            if allow is not None and ep.name not in allow:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            registry.plugins[ep.name] = info
            try:
                with _user_interrupts() as interrupted:
                    module = ep.load()
                    pm.register(module, name=ep.name)
            except BaseException as exc:  # a broken plugin must not stop the others
                if interrupted():
                    raise
                info.status, info.error = "failed", f"import failed: {_short_error(exc)}"
        for kind, (hook_name, base) in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                _call_register_hook(registry, kind, base, impl)
        _registry, _pm = registry, pm
        return registry


def _call_register_hook(registry: Registry, kind: str, base: type, impl: Any) -> None:
    info = registry.plugins[impl.plugin_name]
    staged: list[type] = []

    def register(component: type) -> None:
        if not (isinstance(component, type) and issubclass(component, base)):
            raise PluginError(f"{component!r} is not a subclass of {base.__name__}")
        name = getattr(component, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{component.__name__} has no 'name'")
        owner = registry.owners[kind].get(name)
        if owner is not None:
            raise PluginError(f"{kind[:-1]} {name!r} is already registered by plugin {owner!r}")
        staged.append(component)

    try:
        with _user_interrupts() as interrupted:
            impl.function(register=register)
    except BaseException as exc:  # SystemExit or KeyboardInterrupt of a plugin included
        if interrupted():
            raise
        info.status = "failed"
        info.error = f"{impl.function.__name__} failed: {_short_error(exc)}"
        return
    for component in staged:
        registry.components[kind][component.name] = component
        registry.owners[kind][component.name] = impl.plugin_name
        info.registered.setdefault(kind, []).append(component.name)


def reset_plugins() -> None:
    """Forget loaded plugins so that the next use rediscovers them (tests, allowlist changes)."""
    global _registry, _pm
    with _lock:
        _registry, _pm = None, None


def components(kind: str) -> dict[str, type]:
    """Registered components of ``kind`` (``"algorithms"``, ``"datasets"``, ...), by name."""
    if kind not in KINDS:
        raise PluginError(f"unknown component kind {kind!r}; choose from {', '.join(KINDS)}")
    return dict(sorted(load_plugins().components[kind].items()))


def get(kind: str, name: str) -> type:
    """The component of ``kind`` called ``name``; the error lists the valid names."""
    found = components(kind)
    if name not in found:
        valid = ", ".join(found) or "(none registered)"
        raise PluginError(f"unknown {kind[:-1]} {name!r}; valid names: {valid}")
    return found[name]


def plugin_infos() -> list[PluginInfo]:
    """Every discovered plugin, loaded or failed."""
    return list(load_plugins().plugins.values())


def owner_version(kind: str, name: str) -> str | None:
    """Version of the distribution that registered component ``name``."""
    registry = load_plugins()
    owner = registry.owners[kind].get(name)
    return registry.plugins[owner].version if owner else None
