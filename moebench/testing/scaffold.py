"""``moebench init-plugin NAME``: write a pip-installable plugin package that passes the kit.

The package has a ``pyproject.toml`` registering the plugin under the ``moebench`` entry-point
group, one module with a working component (an EM algorithm, a seeded dataset or a metric), a
README and ``tests/test_<module>_conformance.py`` running :mod:`moebench.testing`. Install it with
``pip install -e ./moebench-NAME`` and it shows up in ``moebench plugins``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from ..errors import MoebenchError

Kind = Literal["algorithm", "dataset", "metric"]
KINDS: tuple[str, ...] = ("algorithm", "dataset", "metric")

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")

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
        hyphens, starting with a letter. A metric's name must be a valid suite metric name.
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
        An invalid name or kind, or a folder that exists already.
    """
    if kind not in KINDS:
        raise MoebenchError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if not _NAME.fullmatch(name):
        raise MoebenchError(f"invalid plugin name {name!r}: use lower-case letters, digits and "
                            "single hyphens, starting with a letter (e.g. 'restart-em')")
    dist, module = package_name(name)
    if kind == "metric":
        name = name.replace("-", "_")  # metric names are identifiers in suites and tables
    root = Path(directory) / dist
    if root.exists():
        raise MoebenchError(f"{root} exists already; choose another name or directory")
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
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
