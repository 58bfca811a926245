"""The native library: compiled once per machine into the moebench cache, loaded with ctypes.

The C source (:func:`~moebench_plugins.models.native.source.source`) is compiled with the system's
C compiler (``$CC``, else ``cc``; ``-O3 -march=native``, OpenMP when available) into the folder
``native`` of the moebench cache, under a name that hashes the source, the flags, the compiler's
version and the CPU, and loaded with :mod:`ctypes`. Where that is impossible (no compiler, a
foreign platform, ``MOEBENCH_NATIVE=never``) :func:`native_library` is ``None`` and the callers
use their torch expressions instead.
"""

from __future__ import annotations

import ctypes
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
from pathlib import Path

import torch

from moebench.datafiles import cache_dir

from .source import source

__all__ = ["native_available", "native_library", "native_mode", "native_supported"]

#: The library, loaded (or found unavailable: ``None``) once per process under ``_lock``: a
#: lock rather than ``functools.cache``, so that threads starting together build it once and
#: warn once. ``{"lib": library}`` once loaded (the tests reset it to an empty dict).
_lock = threading.Lock()
_state: dict[str, ctypes.CDLL | None] = {}


def native_mode() -> str:
    """``"auto"`` or ``"never"``, from ``MOEBENCH_NATIVE`` (``0``/``false`` mean never).

    ``auto`` (the default) compiles the native Gram kernel on first use and falls back to the
    torch expression, with one warning, when that fails.
    """
    raw = os.environ.get("MOEBENCH_NATIVE")
    if raw is None:
        return "auto"
    raw = raw.strip().lower()
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
    h = hashlib.sha256(source().encode())
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
    """Compile :func:`source` into ``target``: the first flag set whose library compiles and loads,
    written under a temporary name, made read-only for others and renamed into place."""
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "moebench_sums.c"
        src.write_text(source())
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


def _declare(lib: ctypes.CDLL) -> None:
    """Set the argument and result types of the library's exported functions."""
    ptr = ctypes.c_void_p
    for real in ("double", "float"):
        fn = getattr(lib, f"moebench_sums_{real}")
        fn.argtypes = [ctypes.c_longlong, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr,
                       ptr, ctypes.c_longlong, ctypes.c_int, ptr, ctypes.c_int]
        fn.restype = ctypes.c_int
    lib.moebench_fused_double.argtypes = [
        ctypes.c_longlong, ctypes.c_int, ctypes.c_int, ptr, ctypes.c_longlong, ptr, ptr,
        ptr, ptr, ctypes.c_int, ptr, ptr, ctypes.c_int, ptr, ptr, ptr, ptr, ptr, ptr,
        ctypes.c_int]
    lib.moebench_fused_double.restype = ctypes.c_int
    for name in ("moebench_vexp_double", "moebench_vlog_double"):
        getattr(lib, name).argtypes = [ctypes.c_longlong, ptr, ptr]
        getattr(lib, name).restype = None


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel library, building it on first use; ``None`` when unavailable.

    Returns
    -------
    ctypes.CDLL or None
        The loaded library (``moebench_sums_double``/``_float``, ``moebench_fused_double``,
        ``moebench_vexp_double``, ``moebench_vlog_double``), or ``None`` after one warning when
        it cannot be built or loaded.
    """
    if "lib" in _state:  # loaded (or found unavailable) once and for all
        return _state["lib"]
    with _lock:
        if "lib" in _state:
            return _state["lib"]
        lib = None
        try:
            lib = _load_library(_compiler())
            _declare(lib)
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
    """Whether :func:`~.sums.weighted_sums` runs the compiled kernel for CPU tensors."""
    return native_mode() != "never" and native_library() is not None


def native_supported(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether :func:`~.sums.weighted_sums` runs the compiled kernel for tensors like these."""
    if not isinstance(device, torch.device):
        device = torch.device(device)
    return (device.type == "cpu" and dtype in (torch.float64, torch.float32)
            and native_available())


