"""``moebench init-plugin NAME``: write a pip-installable plugin package that passes the kit.

The package has a ``pyproject.toml`` registering the plugin under the ``moebench`` entry-point
group, one module with a working component (an EM algorithm, a seeded dataset or a metric), a
README and ``tests/test_<module>_conformance.py`` running :mod:`moebench.testing`. Install it with
``pip install -e ./moebench-NAME`` and it shows up in ``moebench plugins``.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from ..errors import MoebenchError

Kind = Literal["algorithm", "dataset", "metric"]
KINDS: tuple[str, ...] = ("algorithm", "dataset", "metric")

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

#: The longest plugin name: it becomes a distribution name (``moebench-NAME``), a module name
#: (``moebench_NAME``), a folder and a file name (``test_moebench_NAME_conformance.py``), all of
#: which must stay well below the 255 bytes a file name may have.
MAX_NAME_LENGTH = 64
NAME_RULE = (f"lower-case letters, digits and single hyphens, starting with a letter, at most "
             f"{MAX_NAME_LENGTH} characters (e.g. 'restart-em')")

#: The templates, as files of this package (``string.Template`` syntax).
TEMPLATES = resources.files(__package__) / "templates"


def _template(*parts: str) -> Template:
    """The template file ``templates/<parts>`` of this package."""
    path = TEMPLATES
    for part in parts:
        path = path / part
    return Template(path.read_text(encoding="utf-8"))


PYPROJECT = _template("pyproject.toml.tmpl")
README = _template("README.md.tmpl")
USAGE = {kind: _template("usage", f"{kind}.md.tmpl") for kind in KINDS}
ALGORITHM, DATASET, METRIC = (_template("module", f"{kind}.py.tmpl") for kind in KINDS)
TESTS = {kind: _template("tests", f"{kind}.py.tmpl") for kind in KINDS}

SOURCES = {"algorithm": ALGORITHM, "dataset": DATASET, "metric": METRIC}
SUMMARIES = {"algorithm": "EM until the NLL stalls", "dataset": "a seeded synthetic MoE "
             "regression dataset", "metric": "mean absolute error on the test split"}
BASES = {"algorithm": "Algorithm", "dataset": "Dataset", "metric": "Metric"}


def package_name(name: str) -> tuple[str, str]:
    """The distribution and module names of plugin ``name``: ``moebench-NAME``,
    ``moebench_NAME`` (hyphens as underscores)."""
    return f"moebench-{name}", "moebench_" + name.replace("-", "_")


def init_plugin(name: str, kind: Kind = "algorithm", directory: Path | str = ".") -> Path:
    """Write the package of a new plugin into ``directory/moebench-NAME``.

    Parameters
    ----------
    name
        The component's (and entry point's) name: lower-case letters, digits and single
        hyphens, starting with a letter, at most :data:`MAX_NAME_LENGTH` characters. A metric's
        name must be a valid suite metric name.
    kind
        ``algorithm``, ``dataset`` or ``metric``.
    directory
        Where to create the package folder.

    Returns
    -------
    Path
        The package folder.

    Raises
    ------
    MoebenchError
        An invalid name or kind, a folder that exists already, or a file that cannot be written
        (the message names it; nothing of the package is left behind).
    """
    if kind not in KINDS:
        raise MoebenchError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if len(name) > MAX_NAME_LENGTH:
        raise MoebenchError(f"invalid plugin name {name[:20]!r}... ({len(name)} characters): "
                            f"use {NAME_RULE}")
    if not _NAME.fullmatch(name):
        raise MoebenchError(f"invalid plugin name {name!r}: use {NAME_RULE}")
    dist, module = package_name(name)
    if kind == "metric":
        name = name.replace("-", "_")  # metric names are identifiers in suites and tables
    root = Path(directory) / dist
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    values = {"name": name, "dist": dist, "module": module, "cls": cls, "kind": kind,
              "summary": SUMMARIES[kind], "base": BASES[kind]}
    values["usage"] = USAGE[kind].substitute(values)
    files = {
        "pyproject.toml": PYPROJECT.substitute(values),
        "README.md": README.substitute(values),
        f"{module}/__init__.py": SOURCES[kind].substitute(values),
        # named after the module: pytest over several plugin packages must not meet two
        # test modules of the same name
        f"tests/test_{module}_conformance.py": TESTS[kind].substitute(values),
    }
    _write_package(root, files)
    return root


def _write_package(root: Path, files: dict[str, str]) -> None:
    """Create the folder ``root`` and write ``files`` (relative path: text) in it, all or nothing.

    Raises
    ------
    MoebenchError
        ``root`` exists already, or a file or folder could not be written: one line naming it
        and the reason; what was written of ``root`` is removed again.
    """
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        raise MoebenchError(f"{root} exists already; choose another name or directory") from None
    except OSError as exc:
        raise MoebenchError(f"cannot write the plugin package: {exc.filename or root}: "
                            f"{exc.strerror or exc}") from None
    path = root
    try:
        for rel, text in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)  # created above: it is ours
        where = exc.filename if exc.filename else path
        raise MoebenchError(f"cannot write the plugin package: {where}: "
                            f"{exc.strerror or exc}") from None
