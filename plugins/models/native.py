"""Weighted sums of products of a chunk's rows, generated in registers (a native kernel).

Every EM iteration of a regression MoE accumulates weighted Grams ``sum_c w_jc z_c z_c^T``: the
``k`` expert Grams of ``[f; y]`` weighted by the responsibilities and the ``k (k - 1) / 2`` gate
Hessian blocks. Written in torch this is a GEMM ``W @ Q^T`` against the ``D (D + 1) / 2``
materialised products ``Q`` of the chunk: at ``D = 12`` that writes and reads back 78 numbers per
sample, and the GEMM's shape (``m`` x chunk x 78) keeps MKL at a third of its peak.
:func:`weighted_sums` instead forms each product ``z_a z_b`` in a vector register and feeds it
straight into a register tile of ``5 x 4`` accumulators (5 weight rows, 4 products, one SIMD lane
per sample), so a block of samples is read from the L1 cache once per tile and nothing per sample
is written. A row of ones among the rows (:class:`Pairs`) turns the same kernel into plain
weighted sums (the gate gradient, the masses, the log-likelihood).

The C source below is compiled once per machine with the system's C compiler (``$CC``, else
``cc``; ``-O3 -march=native``, OpenMP when available) into the moebench cache and loaded with
:mod:`ctypes`. Where that is impossible (no compiler, a device other than the CPU, a dtype other
than float32/float64, ``MOEBENCH_NATIVE=never``) the same sums are computed by the torch
expression :func:`weighted_sums_torch`, which the tests hold the native kernel to.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Pairs", "native_available", "native_mode", "native_supported", "weighted_sums",
           "weighted_sums_torch"]

#: The vector width and the register tile follow the instruction set the compiler targets:
#: 64-byte vectors and 5 x 4 tiles (20 accumulators) with 32 vector registers (AVX-512),
#: narrower vectors and 3 x 3 tiles with 16 (AVX2, SSE). BLK samples per block: a tile's weight
#: and chunk rows of one block (13 x 256 doubles, 26 KB) fit a 32-48 KB L1 data cache.
_HEAD = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef int64_t IDX;
#if defined(__AVX512F__)
#define VBYTES 64
#define TW 5
#define TP 4
#elif defined(__aarch64__)
#define VBYTES 16
#define TW 5
#define TP 4
#elif defined(__AVX__)
#define VBYTES 32
#define TW 3
#define TP 3
#else
#define VBYTES 16
#define TW 3
#define TP 3
#endif
#define BLK 256
"""

_TEMPLATE = r"""
#define LANES_REAL ((int)(VBYTES / sizeof(REAL)))
typedef REAL VEC_REAL __attribute__((vector_size(VBYTES)));

static inline VEC_REAL load_REAL(const REAL *p)
{
    VEC_REAL v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* acc[t][p] += sum_{i in [i0, i1)} w_t[i] * za_p[i] * zb_p[i], lanes = samples; tw <= TW. */
static inline __attribute__((always_inline)) void tile_REAL(
    IDX i0, IDX i1, const int tw, const REAL *const *w, const REAL *const *za,
    const REAL *const *zb, VEC_REAL *acc)
{
    VEC_REAL a[TW][TP];
    for (int t = 0; t < tw; t++)
        for (int p = 0; p < TP; p++) a[t][p] = acc[t * TP + p];
    for (IDX i = i0; i < i1; i += LANES_REAL) {
        VEC_REAL wv[TW];
        for (int t = 0; t < tw; t++) wv[t] = load_REAL(w[t] + i);
        for (int p = 0; p < TP; p++) {
            VEC_REAL q = load_REAL(za[p] + i) * load_REAL(zb[p] + i);
            for (int t = 0; t < tw; t++) a[t][p] += wv[t] * q;
        }
    }
    for (int t = 0; t < tw; t++)
        for (int p = 0; p < TP; p++) acc[t * TP + p] = a[t][p];
}

#define TILE_VARIANT(TW) \
    static __attribute__((noinline)) void tile##TW##_REAL( \
        IDX i0, IDX i1, const REAL *const *w, const REAL *const *za, const REAL *const *zb, \
        VEC_REAL *acc) { tile_REAL(i0, i1, TW, w, za, zb, acc); }
TILE_VARIANT(1)
TILE_VARIANT(2)
TILE_VARIANT(3)
#if TW >= 5
TILE_VARIANT(4)
TILE_VARIANT(5)
#endif
#undef TILE_VARIANT

/* Vector sums of every group over [i0, i1) (a multiple of LANES_REAL long) into the group's
   scratch scr[g], tile-major. The samples go in blocks of BLK so that a block's rows stay in
   the L1/L2 cache while every tile of every group is run over it. */
static void range_REAL(IDX i0, IDX i1, int ng, const int *m, const REAL *const *W,
                       const int *np, const int *const *pa,
                       const int *const *pb, const REAL *Z, IDX ldz, int D, const REAL *ones,
                       VEC_REAL *const *scr)
{
    for (IDX s0 = i0; s0 < i1; s0 += BLK) {
        IDX s1 = s0 + BLK < i1 ? s0 + BLK : i1;
        const REAL *const *Wg = W;
        for (int g = 0; g < ng; Wg += m[g], g++) {
            int ntp = (np[g] + TP - 1) / TP;
            for (int j0 = 0; j0 < m[g]; j0 += TW) {
                int tw = m[g] - j0 < TW ? m[g] - j0 : TW;
                const REAL *w[TW];
                for (int t = 0; t < tw; t++) w[t] = Wg[j0 + t];
                for (int p0 = 0; p0 < np[g]; p0 += TP) {
                    const REAL *za[TP], *zb[TP];
                    for (int p = 0; p < TP; p++) {
                        int pp = p0 + p < np[g] ? p0 + p : np[g] - 1; /* padding: dropped */
                        za[p] = pa[g][pp] == D ? ones : Z + (IDX)pa[g][pp] * ldz;
                        zb[p] = pb[g][pp] == D ? ones : Z + (IDX)pb[g][pp] * ldz;
                    }
                    VEC_REAL *acc = scr[g] + ((IDX)(j0 / TW) * ntp + p0 / TP) * TW * TP;
                    switch (tw) {
#if TW >= 5
                    case 5: tile5_REAL(s0, s1, w, za, zb, acc); break;
                    case 4: tile4_REAL(s0, s1, w, za, zb, acc); break;
#endif
                    case 3: tile3_REAL(s0, s1, w, za, zb, acc); break;
                    case 2: tile2_REAL(s0, s1, w, za, zb, acc); break;
                    default: tile1_REAL(s0, s1, w, za, zb, acc); break;
                    }
                }
            }
        }
    }
}

/* For each group g with weight rows w_j = W[m[0] + ... + m[g - 1] + j] (pointers):
   out[g][j * np[g] + p] += sum_{i < c} w_j[i] z_a[i] z_b[i] with (a, b) = (pa[g][p], pb[g][p]),
   z_r the row Z + r * ldz for r < D and the c ones at `ones` for r == D. The c samples are
   split into nthreads contiguous ranges (fixed for given c and nthreads, so results are
   reproducible); partial sums are added in thread order, in double. Returns 0, -1 when the
   scratch memory cannot be allocated, -2 for more than 8 groups. */
int moebench_sums_REAL(IDX c, int ng, const int *m, const REAL *const *W, const int *np,
                       const int *const *pa, const int *const *pb,
                       REAL *const *out, const REAL *Z, IDX ldz, int D, const REAL *ones,
                       int nthreads)
{
    if (c <= 0 || ng <= 0 || ng > 8) return ng > 8 ? -2 : 0;
    IDX cv = c - c % LANES_REAL;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (cv / (2 * BLK) < nt) nt = cv / (2 * BLK) > 1 ? (int)(cv / (2 * BLK)) : 1;
    IDX tiles[8], toff[9], poff[9];
    toff[0] = poff[0] = 0;
    for (int g = 0; g < ng; g++) {
        tiles[g] = (IDX)((m[g] + TW - 1) / TW) * ((np[g] + TP - 1) / TP) * TW * TP;
        toff[g + 1] = toff[g] + tiles[g];
        poff[g + 1] = poff[g] + (IDX)m[g] * np[g];
    }
    size_t bytes = sizeof(VEC_REAL) * (size_t)(toff[ng] * nt);
    bytes = (bytes / 64 + 1) * 64; /* a multiple of the alignment, as C11 wants */
    VEC_REAL *scr = aligned_alloc(64, bytes);
    double *part = malloc(sizeof(double) * (poff[ng] * nt + 1));
    if (!scr || !part) { free(scr); free(part); return -1; }
    memset(scr, 0, sizeof(VEC_REAL) * toff[ng] * nt);
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static, 1)
#endif
    for (int t = 0; t < nt; t++) {
        IDX nv = cv / LANES_REAL;
        IDX i0 = nv * t / nt * LANES_REAL, i1 = nv * (t + 1) / nt * LANES_REAL;
        VEC_REAL *s[8];
        for (int g = 0; g < ng; g++) s[g] = scr + toff[ng] * t + toff[g];
        range_REAL(i0, i1, ng, m, W, np, pa, pb, Z, ldz, D, ones, s);
        for (int g = 0; g < ng; g++) {
            int ntp = (np[g] + TP - 1) / TP;
            double *pt = part + poff[ng] * t + poff[g];
            for (int j = 0; j < m[g]; j++)
                for (int p = 0; p < np[g]; p++) {
                    VEC_REAL v = s[g][((IDX)(j / TW) * ntp + p / TP) * TW * TP
                                      + (j % TW) * TP + p % TP];
                    double h = 0.0;
                    for (int l = 0; l < LANES_REAL; l++) h += v[l];
                    pt[(size_t)j * np[g] + p] = h;
                }
        }
    }
    const REAL *const *Wg = W;
    for (int g = 0; g < ng; Wg += m[g], g++)
        for (int j = 0; j < m[g]; j++)
            for (int p = 0; p < np[g]; p++) {
                double h = 0.0;
                for (int t = 0; t < nt; t++)
                    h += part[poff[ng] * t + poff[g] + (IDX)j * np[g] + p];
                const REAL *za = pa[g][p] == D ? ones : Z + (IDX)pa[g][p] * ldz;
                const REAL *zb = pb[g][p] == D ? ones : Z + (IDX)pb[g][p] * ldz;
                const REAL *w = Wg[j];
                for (IDX i = cv; i < c; i++) h += (double)w[i] * za[i] * zb[i];
                out[g][(size_t)j * np[g] + p] += (REAL)h;
            }
    free(scr);
    free(part);
    return 0;
}
"""


def _source() -> str:
    return _HEAD + "".join(_TEMPLATE.replace("REAL", real) for real in ("double", "float"))


_lock = threading.Lock()
_state: dict[str, object] = {}


def native_mode() -> str:
    """``"auto"`` or ``"never"``, from ``MOEBENCH_NATIVE`` (``0``/``false`` mean never).

    ``auto`` (the default) compiles the native Gram kernel on first use and falls back to the
    torch expression, with one warning, when that fails.
    """
    raw = os.environ.get("MOEBENCH_NATIVE", "auto").strip().lower()
    mode = {"0": "never", "false": "never", "1": "auto", "true": "auto", "": "auto"}.get(raw, raw)
    if mode not in ("auto", "never"):
        raise ValueError(f"MOEBENCH_NATIVE={raw!r}: use auto or never")
    return mode


#: Flag sets tried in order: the machine's vector ISA and OpenMP threads where available.
_FLAG_SETS = (["-march=native", "-fopenmp"], ["-march=native"], ["-fopenmp"], [])
_BASE_FLAGS = ["-std=gnu11", "-O3", "-ffp-contract=fast", "-fPIC", "-shared"]


def _cpu_description() -> str:
    """What identifies the CPU a ``-march=native`` build is for."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as fh:
            keys = ("flags", "model name", "features", "cpu part", "cpu implementer",
                    "cpu architecture", "isa")
            parts += sorted({ln.strip() for ln in fh if ln.lower().startswith(keys)})
    except OSError:
        if sys.platform == "darwin":
            try:
                parts.append(subprocess.run(
                    ["sysctl", "-n", "machdep.cpu.brand_string", "machdep.cpu.features"],
                    capture_output=True, text=True, timeout=30).stdout)
            except (OSError, subprocess.SubprocessError):
                pass
    return "\n".join(parts)


def _machine_key(compiler: list[str]) -> str:
    """What a build depends on: the source, the flags, the compiler and the CPU."""
    h = hashlib.sha256(_source().encode())
    h.update(repr((_BASE_FLAGS, _FLAG_SETS)).encode())
    try:
        version = subprocess.run([*compiler, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h.update(version.encode())
    h.update(_cpu_description().encode())
    return h.hexdigest()[:20]


class _CompilerMissing(RuntimeError):
    """The C compiler cannot be started."""


class _Unloadable(RuntimeError):
    """Every flag set compiled to a library that cannot be loaded (or did not compile)."""


def _build(compiler: list[str], target: Path) -> None:
    """Compile ``_source()`` into ``target``: the first flag set whose library compiles and loads,
    written under a temporary name, made read-only for others and renamed into place."""
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "moebench_sums.c"
        src.write_text(_source())
        errors = []
        for i, flags in enumerate(_FLAG_SETS):
            out = Path(tmp) / f"try{i}_{target.name}"
            cmd = [*compiler, *_BASE_FLAGS, *flags, str(src), "-o", str(out)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            except OSError as exc:  # missing or not executable
                raise _CompilerMissing(f"cannot run the C compiler {compiler[0]!r}: {exc}") from exc
            if proc.returncode != 0:
                lines = [ln for ln in proc.stderr.splitlines() if "error" in ln.lower()]
                errors.append((lines or proc.stderr.strip().splitlines() or [""])[0])
                continue
            try:
                ctypes.CDLL(str(out))  # e.g. an OpenMP runtime the loader cannot find
            except OSError as exc:
                errors.append(f"{' '.join(flags) or 'no flags'}: built but not loadable: {exc}")
                continue
            os.chmod(out, 0o755)
            os.replace(out, target)
            return
        raise _Unloadable(f"{' '.join(compiler)} failed: {errors[0]}")


def _trusted(path: Path) -> bool:
    """A file or folder that only this user can have written (always true off POSIX)."""
    if not hasattr(os, "getuid"):
        return True
    st = path.stat()
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _open_library(compiler: list[str], folder: Path, name: str) -> ctypes.CDLL:
    """Load ``folder/name``, building it when missing, foreign or unloadable.

    Raises ``PermissionError`` when ``folder`` could be written by other users.
    """
    if folder.exists() and not _trusted(folder):
        raise PermissionError(f"{folder} belongs to another user or is writable by others")
    target = folder / name
    if target.exists():
        if _trusted(target):
            try:
                return ctypes.CDLL(str(target))
            except OSError:  # truncated or foreign: build it again
                pass
        target.unlink(missing_ok=True)
    _build(compiler, target)
    return ctypes.CDLL(str(target))


def _load_library(compiler: list[str]) -> ctypes.CDLL:
    """The built library from the moebench cache or, where that is not writable (or could be
    written by others), from a private folder of the temporary directory."""
    from moebench.datafiles import cache_dir

    name = f"moebench_sums_{_machine_key(compiler)}.so"
    try:
        return _open_library(compiler, cache_dir() / "native", name)
    except (_CompilerMissing, _Unloadable):
        raise
    except OSError:  # a read-only, full or shared cache
        pass
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    private = Path(tempfile.gettempdir()) / f"moebench-native-{uid}"
    private.mkdir(mode=0o700, exist_ok=True)
    return _open_library(compiler, private, name)


def _compiler() -> list[str]:
    """``$CC`` (split like a shell would: ``ccache gcc`` works), else ``cc`` or ``gcc``."""
    cc = os.environ.get("CC")
    if cc and cc.strip():
        return shlex.split(cc)
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise _CompilerMissing("no C compiler (cc) on PATH")
    return [found]


def _load() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` when unavailable."""
    with _lock:
        if "lib" in _state:
            return _state["lib"]  # type: ignore[return-value]
        lib = None
        try:
            lib = _load_library(_compiler())
            for real in ("double", "float"):
                fn = getattr(lib, f"moebench_sums_{real}")
                ptr = ctypes.c_void_p
                fn.argtypes = [ctypes.c_longlong, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr,
                               ptr, ctypes.c_longlong, ctypes.c_int, ptr, ctypes.c_int]
                fn.restype = ctypes.c_int
        except Exception as exc:  # no compiler, unwritable caches, foreign platform
            warnings.warn(
                f"moebench's native weighted-sums kernel is unavailable ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); the torch expression is used "
                "instead (slower; set MOEBENCH_NATIVE=never to skip the attempt)",
                RuntimeWarning, stacklevel=2,
            )
            lib = None
        _state["lib"] = lib
        return lib


def native_available() -> bool:
    """Whether :func:`weighted_sums` runs the compiled kernel for CPU tensors."""
    return native_mode() != "never" and _load() is not None


def native_supported(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether :func:`weighted_sums` runs the compiled kernel for tensors like these."""
    return (torch.device(device).type == "cpu" and dtype in (torch.float64, torch.float32)
            and native_available())


@dataclass(frozen=True)
class Pairs:
    """Which products ``z_a z_b`` of a chunk's rows :func:`weighted_sums` sums against.

    Attributes
    ----------
    a, b
        Row indices per product; the index ``D`` (one past the chunk's ``D`` rows) stands for a
        row of ones, so ``(a, D)`` gives plain weighted sums of row ``a`` and ``(D, D)`` the sums
        of the weights themselves.
    """

    a: tuple[int, ...]
    b: tuple[int, ...]

    @classmethod
    def packed(cls, D: int, *, ones: bool = False) -> Pairs:
        """The upper triangle ``a <= b < D`` row by row, then ``(D, D)`` with ``ones``."""
        return _packed_pairs(cls, D, ones)

    @classmethod
    def linear(cls, rows: int, D: int) -> Pairs:
        """``(a, D)`` for ``a < rows`` then ``(D, D)``: sums of ``w z_a``, then of ``w``."""
        return cls((*range(rows), D), (D,) * (rows + 1))

    def __len__(self) -> int:
        return len(self.a)

    def runs(self) -> list[tuple[int, int, int, int]]:
        """The products as slices ``z[a0:a1] * z[b0:b1]``: runs of consecutive pairs in which
        one index stays fixed (a slice of length one) and the other counts up."""
        out: list[tuple[int, int, int, int]] = []
        i, n = 0, len(self.a)
        while i < n:
            a, b = self.a[i], self.b[i]
            j = i + 1
            if j < n and self.a[j] == a and self.b[j] == b + 1:
                while j < n and self.a[j] == a and self.b[j] == b + (j - i):
                    j += 1
                out.append((a, a + 1, b, b + j - i))
            else:
                while j < n and self.b[j] == b and self.a[j] == a + (j - i):
                    j += 1
                out.append((a, a + j - i, b, b + 1))
            i = j
        return out

    def indices(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``int32`` index tensors on ``device`` (cached)."""
        key = (self, str(device))
        hit = _INDICES.get(key)
        if hit is None:
            hit = _INDICES[key] = (torch.tensor(self.a, dtype=torch.int32, device=device),
                                   torch.tensor(self.b, dtype=torch.int32, device=device))
        return hit


@functools.lru_cache(maxsize=32)
def _packed_pairs(cls: type[Pairs], D: int, ones: bool) -> Pairs:
    """:meth:`Pairs.packed`, built once per ``D``: a pass over ``D = 786`` gate inputs would
    otherwise spend a third of its time building the 309,000 index pairs in Python."""
    upper = torch.triu_indices(D, D)
    a, b = upper[0].tolist(), upper[1].tolist()
    if ones:
        a.append(D)
        b.append(D)
    return cls(tuple(a), tuple(b))

_INDICES: dict[tuple[Pairs, str], tuple[torch.Tensor, torch.Tensor]] = {}
_ONES: dict[tuple[torch.dtype, str], torch.Tensor] = {}


def _ones(n: int, like: torch.Tensor) -> torch.Tensor:
    key = (like.dtype, str(like.device))
    buf = _ONES.get(key)
    if buf is None or buf.numel() < n:
        buf = _ONES[key] = torch.ones(max(n, 1 << 16), dtype=like.dtype, device=like.device)
    return buf[:n]


def weighted_sums_torch(weights: torch.Tensor, Z: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """``out[j, p] = sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``, materialising the products.

    The reference that :func:`weighted_sums` must equal, and its path on other devices.

    Parameters
    ----------
    weights
        ``(m, c)`` weight rows.
    Z
        ``(D, c)`` chunk.
    pairs
        The products (index ``D``: a row of ones).

    Returns
    -------
    torch.Tensor
        ``(m, len(pairs))``.
    """
    Zx = torch.cat([Z, _ones(Z.shape[1], Z)[None]])
    return weights @ torch.cat([Zx[a0:a1] * Zx[b0:b1] for a0, a1, b0, b1 in pairs.runs()]).T


#: A term of :func:`weighted_sums`: ``(weights, pairs)``, the weights an ``(m, c)`` tensor or a
#: sequence of them whose rows are taken in order.
Term = tuple["torch.Tensor | Sequence[torch.Tensor]", Pairs]
_MAX_TERMS = 8


def _rows(weights: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [weights] if isinstance(weights, torch.Tensor) else list(weights)


def weighted_sums(Z: torch.Tensor, terms: Sequence[Term],
                  out: Sequence[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
    """Weighted sums of products of a chunk's rows, for several terms in one pass over ``Z``.

    Parameters
    ----------
    Z
        ``(D, c)`` chunk (rows may be strided views of a larger buffer).
    terms
        ``(weights, pairs)`` per term: ``(m, c)`` weight rows (or a sequence of such tensors,
        their rows taken in order, so that rows from several buffers form one term) and the
        products ``z_a z_b`` to weight (:class:`Pairs`; index ``D`` is a row of ones). At most
        8 terms.
    out
        Accumulators ``(m, len(pairs))`` per term (``None`` entries, or no list: zeros); the sums
        are added to them.

    Returns
    -------
    list of torch.Tensor
        Per term ``out[t][j, p] += sum_c weights[j, c] z_{a_p}[c] z_{b_p}[c]``.

    Notes
    -----
    CPU float64/float32 tensors go through the compiled kernel (threads:
    ``torch.get_num_threads()``), which reads each block of ``Z`` once for all terms; everything
    else through :func:`weighted_sums_torch`.
    """
    D, c = Z.shape
    if len(terms) > _MAX_TERMS:
        raise ValueError(f"at most {_MAX_TERMS} terms per call, got {len(terms)}")
    outs: list[torch.Tensor] = []
    parts: list[list[torch.Tensor]] = []
    for t, (weights, pairs) in enumerate(terms):
        rows = _rows(weights)
        for w in rows:
            if w.ndim != 2 or w.shape[1] != c:
                raise ValueError(f"term {t}: weights of shape {tuple(w.shape)}, Z has {c} columns")
        if max(pairs.a + pairs.b, default=0) > D or min(pairs.a + pairs.b, default=0) < 0:
            raise ValueError(f"term {t}: pairs index rows {min(pairs.a + pairs.b)} to "
                             f"{max(pairs.a + pairs.b)}; Z has {D} rows (+ the row of ones)")
        m = sum(w.shape[0] for w in rows)
        acc = out[t] if out is not None and out[t] is not None else None
        if acc is not None and tuple(acc.shape) != (m, len(pairs)):
            raise ValueError(f"term {t}: out has shape {tuple(acc.shape)}, the sums "
                             f"{(m, len(pairs))}")
        outs.append(rows[0].new_zeros(m, len(pairs)) if acc is None else acc)
        parts.append(rows)
    fn = _native_fn(Z, [w for rows in parts for w in rows], outs)
    if fn is None:
        for rows, (_, pairs), acc in zip(parts, terms, outs, strict=True):
            acc.add_(weighted_sums_torch(torch.cat(rows), Z, pairs))
        return outs
    if Z.stride(1) != 1:
        Z = Z.contiguous()
    parts = [[w if w.stride(1) == 1 else w.contiguous() for w in rows] for rows in parts]
    item = Z.element_size()
    row_ptrs = [w.data_ptr() + j * w.stride(0) * item
                for rows in parts for w in rows for j in range(w.shape[0])]
    ng = len(terms)
    idx = [pairs.indices(Z.device) for _, pairs in terms]
    ones = _ones(c, Z)  # held until the call returns (another thread may grow the cache)
    ptr = ctypes.c_void_p
    rc = fn(
        c, ng,
        (ctypes.c_int * ng)(*[sum(w.shape[0] for w in rows) for rows in parts]),
        (ptr * len(row_ptrs))(*row_ptrs),
        (ctypes.c_int * ng)(*[len(pairs) for _, pairs in terms]),
        (ptr * ng)(*[a.data_ptr() for a, _ in idx]),
        (ptr * ng)(*[b.data_ptr() for _, b in idx]),
        (ptr * ng)(*[o.data_ptr() for o in outs]),
        Z.data_ptr(), Z.stride(0), D, ones.data_ptr(), torch.get_num_threads(),
    )
    if rc == -1:
        raise MemoryError("moebench's native kernel could not allocate its scratch memory")
    if rc != 0:
        raise RuntimeError(f"moebench's native kernel refused the call (code {rc})")
    return outs


def _native_fn(Z: torch.Tensor, weights: list[torch.Tensor], outs: list[torch.Tensor]) -> Any:
    """The compiled function for these tensors, or ``None`` (torch expression instead)."""
    dt = Z.dtype
    tensors = [Z, *weights, *outs]
    if (any(t.dtype != dt or t.device != Z.device or t.requires_grad for t in tensors)
            or any(not o.is_contiguous() for o in outs) or not native_supported(Z.device, dt)):
        return None
    name = "moebench_sums_double" if dt == torch.float64 else "moebench_sums_float"
    return getattr(_load(), name)
