"""Declared, validated parameters of plugin components.

Every component (algorithm, dataset, model, device, metric) declares its parameters as a
pydantic model named ``Params``; unknown keys and wrong types are rejected before a run starts,
and ``moebench list`` documents them from the same declaration.
"""

from __future__ import annotations

import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def _takes_int_not_float(annotation: Any) -> bool:
    """Whether a field of type ``annotation`` takes integers but not floats (``int``,
    ``int | None``, ``int | str``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = get_args(annotation)
    else:
        options = (annotation,)
    return int in options and float not in options


def whole_floats_as_ints(model: type[BaseModel], data: Any) -> Any:
    """``data`` with every float that is a whole number given for an integer field of
    ``model`` as that integer (``n: 1e4`` is ``n: 10000``).

    YAML reads ``1e4`` as a float; the integer field then takes it, and its bounds judge the
    integer (``max_iter: 1e30`` is "at most 10^9", not "not an integer"). A float with a
    fraction, ``inf``, ``nan``, a string and a bool are left for the field to refuse.

    Parameters
    ----------
    model
        The pydantic model about to validate ``data``.
    data
        Its input: a mapping of field names to values (anything else is returned as is).

    Returns
    -------
    Any
        ``data``, or a copy of it with those floats replaced.
    """
    if not isinstance(data, dict):
        return data
    whole = {name for name, value in data.items()
             if isinstance(value, float) and value.is_integer() and name in model.model_fields
             and _takes_int_not_float(model.model_fields[name].annotation)}
    if not whole:
        return data
    return {name: int(value) if name in whole else value for name, value in data.items()}


class Params(BaseModel):
    """Base class of a component's parameters: strict about unknown keys and types, immutable.

    Floats must be finite: ``inf`` and ``nan`` (``.inf``, ``.nan`` in YAML) are rejected for
    every float field, so a noise level or step size cannot silently be infinite. A parameter
    that needs "no limit" should be ``float | None`` with ``None`` meaning unbounded.

    Types are strict (pydantic's strict mode): a string is not a number (``lr: '0.1'`` and
    ``n: '100'`` are refused: quoted in YAML, they were meant as something else), nor is a bool,
    and a number is not a bool. An integer is a float (``lr: 1``) and a whole float an integer
    (``n: 1e4``, see :func:`whole_floats_as_ints`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _whole_numbers(cls, data: Any) -> Any:
        return whole_floats_as_ints(cls, data)


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
