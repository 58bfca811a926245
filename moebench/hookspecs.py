"""The plugin hooks. Each receives a ``register`` callable and calls it once per component."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("moebench")
hookimpl = pluggy.HookimplMarker("moebench")


@hookspec
def register_algorithms(register: Callable[[type], None]) -> None:
    """Register :class:`moebench.Algorithm` subclasses: ``register(MyAlgorithm)``."""


@hookspec
def register_datasets(register: Callable[[type], None]) -> None:
    """Register :class:`moebench.Dataset` subclasses."""


@hookspec
def register_devices(register: Callable[[type], None]) -> None:
    """Register :class:`moebench.Device` subclasses."""


@hookspec
def register_metrics(register: Callable[[type], None]) -> None:
    """Register :class:`moebench.Metric` subclasses."""


@hookspec
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`moebench.Model` subclasses (MoE model families the algorithms fit)."""
