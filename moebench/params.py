"""Declared, validated parameters of plugin components.

Every component (algorithm, dataset, model, device, metric) declares its parameters as a
pydantic model named ``Params``; unknown keys and wrong types are rejected before a run starts,
and ``moebench list`` documents them from the same declaration.
"""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Base class of a component's parameters: strict about unknown keys, immutable.

    Floats must be finite: ``inf`` and ``nan`` (``.inf``, ``.nan`` in YAML) are rejected for
    every float field, so a noise level or step size cannot silently be infinite. A parameter
    that needs "no limit" should be ``float | None`` with ``None`` meaning unbounded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """A component without parameters."""


def describe_params(params_cls: type[BaseModel]) -> list[dict[str, Any]]:
    """List each parameter's name, type, default and description (for ``moebench list``)."""
    rows = []
    for name, field in params_cls.model_fields.items():
        annotation = field.annotation
        if get_origin(annotation) is Literal:
            type_name = " | ".join(repr(v) for v in get_args(annotation))
        else:
            type_name = getattr(annotation, "__name__", None) or str(annotation)
            type_name = type_name.replace("typing.", "")
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        rows.append(
            {
                "name": name,
                "type": type_name,
                "default": default,
                "required": field.is_required(),
                "description": field.description or "",
            }
        )
    return rows
