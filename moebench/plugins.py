"""Plugin discovery and the registries of components.

Plugins are modules registered under the ``moebench`` entry-point group, first-party ones
included. Loading is lazy (on first use) and idempotent. ``MOEBENCH_PLUGINS=a,b`` restricts
loading to the named entry points (an empty value loads none). A plugin that fails to import or
to register is recorded with its error and does not stop the others.

Plugins load one at a time, first-party ones first: each entry point is imported and its
``register_*`` hooks are called before the next one is imported. Loading is reentrant: a plugin
may call :func:`get` or :func:`components` while it loads (at import time or in a hook, to
subclass or wrap another component). Such a call sees every component registered so far; a name
that is not there yet makes moebench load the remaining entry points until it appears, and a
name that no plugin provides (or one that only a plugin still being imported, i.e. a cycle,
could provide) raises :class:`~moebench.errors.PluginError` at once, saying what to do. Another
thread waits until loading has finished.
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


_lock = threading.RLock()
_registry: Registry | None = None
_pm: pluggy.PluginManager | None = None


@dataclass
class _Loading:
    """The state of a load in progress (visible only to the loading thread, under the lock)."""

    registry: Registry
    pm: pluggy.PluginManager
    pending: list[Any]  # entry points not imported yet, in loading order
    active: list[str] = field(default_factory=list)  # entry points being imported, innermost last


_loading: _Loading | None = None


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
    """Discover, import and register every plugin once; later calls return the same registry.

    Called again while plugins are loading (by a plugin, from the loading thread), it returns
    the registry as loaded so far.
    """
    global _registry, _pm, _loading
    with _lock:
        if _registry is not None:
            return _registry
        if _loading is not None:  # reentrant call from a plugin that is loading
            return _loading.registry
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        allow = _allowlist()

        # First-party plugins first, so that they keep their names if a third party collides.
        def order(ep):
            dist = getattr(ep, "dist", None)
            return (getattr(dist, "name", None) != "moebench", ep.name)

        pending = [ep for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=order)
                   if allow is None or ep.name in allow]
        state = _Loading(Registry(), pm, pending)
        _loading = state
        try:
            while state.pending:
                _load_one(state, state.pending.pop(0))
        finally:
            _loading = None
        _registry, _pm = state.registry, pm
        return state.registry


def _load_one(state: _Loading, ep: Any) -> None:
    """Import one entry point and call its ``register_*`` hooks."""
    registry, pm = state.registry, state.pm
    dist = getattr(ep, "dist", None)
    info = PluginInfo(
        name=ep.name,
        module=ep.value,
        distribution=dist.name if dist else None,
        version=dist.version if dist else None,
    )
    registry.plugins[ep.name] = info
    state.active.append(ep.name)
    try:
        try:
            with _user_interrupts() as interrupted:
                module = ep.load()
                pm.register(module, name=ep.name)
        except BaseException as exc:  # a broken plugin must not stop the others
            if interrupted():
                raise
            info.status, info.error = "failed", f"import failed: {_short_error(exc)}"
            return
        for kind, (hook_name, base) in KINDS.items():
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == ep.name:
                    _call_register_hook(registry, kind, base, impl)
    finally:
        state.active.remove(ep.name)


def _load_until_found(kind: str, name: str) -> None:
    """While loading: import the remaining entry points until ``name`` is registered."""
    state = _loading
    if state is None:
        return
    while name not in state.registry.components[kind] and state.pending:
        _load_one(state, state.pending.pop(0))


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
        if _loading is not None:
            raise PluginError("reset_plugins() cannot be called while plugins are loading")
        _registry, _pm = None, None


def components(kind: str) -> dict[str, type]:
    """Registered components of ``kind`` (``"algorithms"``, ``"datasets"``, ...), by name."""
    if kind not in KINDS:
        raise PluginError(f"unknown component kind {kind!r}; choose from {', '.join(KINDS)}")
    return dict(sorted(load_plugins().components[kind].items()))


def get(kind: str, name: str) -> type:
    """The component of ``kind`` called ``name``; the error lists the valid names.

    A plugin may call it while it loads (at import time or in a ``register_*`` hook): the
    remaining plugins are then loaded until ``name`` appears. If no plugin provides it, or only
    one that is itself still loading (a cycle), :class:`PluginError` is raised at once with
    what to do instead.
    """
    with _lock:
        found = components(kind)
        if name not in found and _loading is not None:
            _load_until_found(kind, name)
            found = components(kind)
            if name not in found:
                loading = ", ".join(_loading.active) or "(none)"
                raise PluginError(
                    f"{kind[:-1]} {name!r} is not registered (yet): it was requested while "
                    f"plugins are loading (plugin(s) being loaded: {loading}) and no plugin "
                    f"loaded so far provides it. To reuse a first-party component import it "
                    f"from moebench.api (e.g. `from moebench.api import JointEM`); to use "
                    f"another plugin's component, call moebench.plugins.get({kind!r}, "
                    f"{name!r}) inside fit() or load() instead of at import time. Registered "
                    f"so far: {', '.join(found) or '(none)'}"
                )
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
