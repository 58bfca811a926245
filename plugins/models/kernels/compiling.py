"""Which chunk kernel a pass runs: the eager one, or the same arithmetic through ``torch.compile``
(``MOEBENCH_COMPILE``, :func:`compile_mode`), each built once per :class:`~.spec.KernelSpec`."""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from .elementwise import _make_kernel, _make_stacked_kernel
from .spec import KernelSpec

__all__ = ["COMPILE_MIN_ROWS", "chunk_kernel", "compile_mode"]

#: ``MOEBENCH_COMPILE=auto`` compiles the torch chunk kernels of passes over at least this many
#: rows (where the fused native pass does not apply: non-linear experts, float32, more than 16
#: experts, other devices). Measured (``python -m measurements.compile_pays`` with
#: ``MOEBENCH_NATIVE=never``, joint EM, k = 4, d = 10, 2-core CPU): a warm-cache compile costs
#: ~4.8 s and saves 21 ms per iteration at n = 10^5 (break-even after 232 iterations), 105 ms at
#: n = 10^6 (46 iterations); a line through both pays within 100 iterations from ~394,000
#: rows. Where the fused native pass applies, compiled kernels are slower than it (12.2 vs
#: 10.6 ms at 10^5, 108 vs 84 ms at 10^6) and ``auto`` never compiles.
COMPILE_MIN_ROWS = 400_000
#: The first ``torch.compile`` failure (its reason), after which every kernel runs eagerly.
_compile_error: list[str] = []
#: Compiled kernels write the logits and gate gradient as sums over at most this many features.
_FUSED_DOTS_MAX = 32


def compile_mode() -> str:
    """``"auto"``, ``"always"`` or ``"never"``, from the ``MOEBENCH_COMPILE`` variable.

    ``auto`` (the default) compiles a kernel with ``torch.compile`` for passes over at least
    :data:`COMPILE_MIN_ROWS` rows, where its one-off cost (seconds, cached on disk across
    processes) is repaid within 100 iterations (measured, see there); ``always`` and ``never``
    force the choice.
    ``1``/``true`` and ``0``/``false`` are accepted too.
    """
    raw = os.environ.get("MOEBENCH_COMPILE")
    if raw is None:
        return "auto"
    raw = raw.strip().lower()
    mode = {"1": "always", "true": "always", "0": "never", "false": "never", "": "auto"}.get(
        raw, raw)
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"MOEBENCH_COMPILE={raw!r}: use auto, always or never")
    return mode


@functools.cache
def _eager_kernel(spec: KernelSpec) -> Callable[..., tuple]:
    """The eager kernel of ``spec`` (:func:`_make_stacked_kernel`), built once per spec."""
    return _make_stacked_kernel(spec)


@functools.cache
def _compiled_kernel(spec: KernelSpec) -> Callable[..., tuple]:
    """The compiled kernel of ``spec``, built once per spec: ``torch.compile`` of the row form
    (:func:`_make_kernel`); if its first call fails, a warning names the reason (recorded in
    ``_compile_error``) and the eager kernel answers that call."""
    eager = _eager_kernel(spec)
    # One cache entry per spec on the shared kernel code: allow a few dozen variants.
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 64)
    fast = torch.compile(_make_kernel(spec, fused_dots=spec.n_features <= _FUSED_DOTS_MAX),
                         dynamic=True)
    first = [True]

    def compiled(*args: Any) -> tuple:
        if not first[0]:
            return fast(*args)
        try:
            out = fast(*args)
        except Exception as exc:  # the backend is missing, not the arithmetic
            _compile_error.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            warnings.warn(
                f"torch.compile failed ({_compile_error[0]}); moebench runs its kernels "
                "eagerly (set MOEBENCH_COMPILE=never to skip the attempt)",
                RuntimeWarning, stacklevel=3,
            )
            return eager(*args)
        first[0] = False
        return out

    return compiled


def chunk_kernel(spec: KernelSpec, n_rows: int) -> Callable[..., tuple]:
    """The kernel of ``spec`` for a pass over ``n_rows`` rows, compiled or eager.

    Compilation follows :func:`compile_mode`. If ``torch.compile`` fails (no C++ compiler for
    the CPU backend, no Triton for CUDA), a warning names the reason once and the eager kernel,
    the same arithmetic, is used from then on.
    """
    eager = _eager_kernel(spec)
    mode = compile_mode()
    if _compile_error or mode == "never" or (mode == "auto" and n_rows < COMPILE_MIN_ROWS):
        return eager
    return _compiled_kernel(spec)
