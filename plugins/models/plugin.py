"""Registers the first-party model families."""

from __future__ import annotations

from collections.abc import Callable

from moebench import hookimpl

from .regression import RegressionMoE


@hookimpl
def register_models(register: Callable[[type], None]) -> None:
    """Register :class:`RegressionMoE`."""
    register(RegressionMoE)
