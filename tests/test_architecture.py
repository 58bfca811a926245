"""The house rules of issue 18, read from the source with ``ast`` (nothing is imported), so that
a later change cannot quietly break them: the core never imports its plugins, imports have no
cycles, no function-level import hides one, and no class, function or string grows too long.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"moebench": ROOT / "moebench", "moebench_plugins": ROOT / "plugins"}
SKIPPED_PARTS = {"peers", "templates", "__pycache__"}  # peers: a separate distribution

MAX_CLASS_LINES, MAX_FUNCTION_LINES, MAX_STRING_LINES = 300, 100, 60

#: Modules allowed to import first-party modules inside functions, and why. Anywhere else a
#: function-level import of moebench or moebench_plugins is a cycle being dodged (or an import
#: that belongs at the top of the module).
LAZY_IMPORTS_ALLOWED = {
    "moebench.cli": "start-up time: `moebench --help`, `list` and `plugins` skip the runner, the "
                    "reports and the suite schema (measured 1.6 s instead of 2.3 s)",
}

#: The order of the layers: a module may import its own layer and those after it, never one
#: before it (cli -> runner -> reports | execution | testing -> cell -> suite -> registry ->
#: datafiles -> interfaces), as docs/architecture.md draws it.
LAYERS = [
    ("moebench.cli", "moebench.progress"),
    ("moebench.runner", "moebench.history"),
    ("moebench.reports", "moebench.execution", "moebench.testing"),
    ("moebench.cell",),
    ("moebench.suite",),
    ("moebench.plugins", "moebench.api"),
    ("moebench.datafiles",),
    ("moebench.algorithm", "moebench.clock", "moebench.dataset", "moebench.density",
     "moebench.device", "moebench.em", "moebench.errors", "moebench.hookspecs",
     "moebench.metric", "moebench.model", "moebench.params", "moebench.seeding"),
]


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the most specific module the statement names)
    line: int
    in_function: bool


def _modules() -> dict[str, Path]:
    found = {}
    for package, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            if SKIPPED_PARTS & set(path.relative_to(base).parts):
                continue
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes that sit inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    inside.add(id(sub))
    return inside


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The first-party or other modules ``node`` imports, each as specific as it names it."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module.split(".")
    if MODULES.get(module) is not None and MODULES[module].name != "__init__.py":
        base = base[:-1]
    if node.level:
        base = base[: len(base) - node.level + 1]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{prefix}.{alias.name}"
        out.append(sub if sub in MODULES else prefix)
    return out


def _imports() -> list[Import]:
    found = []
    for module, tree in TREES.items():
        lazy = _function_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(module, node):
                    found.append(Import(module, target, node.lineno, id(node) in lazy))
    return found


IMPORTS = _imports()


def _first_party(name: str) -> bool:
    return name == "moebench" or name.startswith(("moebench.", "moebench_plugins"))


def _is_core(name: str) -> bool:
    return name == "moebench" or name.startswith("moebench.")


def test_the_core_never_imports_its_plugins():
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS
           if _is_core(i.source) and i.target.startswith("moebench_plugins")]
    # nor by name, through importlib
    for module, tree in TREES.items():
        if not _is_core(module):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args and \
                    isinstance(node.args[0], ast.Constant) and \
                    str(node.args[0].value).startswith("moebench_plugins"):
                bad.append(f"{module}:{node.lineno} loads {node.args[0].value} by name")
    assert not bad, "the core must not import moebench_plugins:\n" + "\n".join(bad)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles_even_through_function_level_imports():
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if i.target in MODULES and i.target != i.source:
            edges[i.source].add(i.target)
    cycles = _cycles(edges)
    assert not cycles, f"import cycles: {cycles}"


def test_no_function_level_first_party_imports_outside_the_cli():
    bad = [f"{i.source}:{i.line} imports {i.target} inside a function" for i in IMPORTS
           if i.in_function and _first_party(i.target) and i.source not in LAZY_IMPORTS_ALLOWED]
    assert not bad, ("import first-party modules at module level (a function-level import "
                     "hides a cycle or a wrong direction):\n" + "\n".join(bad))


def _layer(module: str) -> int | None:
    if module == "moebench":  # the package itself: the interfaces and the registry
        return LAYERS.index(("moebench.plugins", "moebench.api"))
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def test_imports_go_one_way_down_the_layers():
    bad = []
    for i in IMPORTS:
        src, dst = _layer(i.source), _layer(i.target)
        if src is not None and dst is not None and dst < src:
            bad.append(f"{i.source}:{i.line} imports {i.target} (a layer above it)")
    assert not bad, "imports must go down (cli -> runner -> reports | execution | testing -> " \
                    "cell -> suite -> registry -> datafiles -> interfaces):\n" + "\n".join(bad)


def test_reading_results_never_asks_the_installed_plugins():
    """No reports module imports the registry or a plugin, nor reaches it as an attribute
    (``moebench.plugins.get``) or through what the run used to record directions."""
    readers = [m for m in MODULES if m.startswith("moebench.reports")]
    assert readers, "moebench.reports is where results are read"
    bad = [f"{i.source}:{i.line} imports {i.target}" for i in IMPORTS if i.source in readers
           and (i.target == "moebench.plugins" or i.target.startswith("moebench_plugins")
                or i.target == "moebench.execution.manifest")]
    for module in readers:
        for node in ast.walk(TREES[module]):
            named = node.id if isinstance(node, ast.Name) else \
                node.attr if isinstance(node, ast.Attribute) else None
            if named in ("plugins", "metric_directions"):
                bad.append(f"{module}:{node.lineno} names {named}")
    assert not bad, "reports must rank from what the run recorded:\n" + "\n".join(bad)


def _sizes() -> tuple[list[str], list[str], list[str]]:
    classes, functions, strings = [], [], []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            lines = (getattr(node, "end_lineno", 0) or 0) - (getattr(node, "lineno", 0) or 0) + 1
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                classes.append(f"{module}.{node.name}: {lines} lines")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and \
                    lines > MAX_FUNCTION_LINES:
                functions.append(f"{module}.{node.name}: {lines} lines")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    node.value.count("\n") > MAX_STRING_LINES:
                strings.append(f"{module}:{node.lineno}: {node.value.count(chr(10))} lines")
    return classes, functions, strings


@pytest.mark.parametrize("kind", ["classes", "functions", "strings"])
def test_nothing_grows_too_long(kind):
    classes, functions, strings = _sizes()
    found = {"classes": classes, "functions": functions, "strings": strings}[kind]
    limit = {"classes": MAX_CLASS_LINES, "functions": MAX_FUNCTION_LINES,
             "strings": MAX_STRING_LINES}[kind]
    hint = " (C and templates belong in files of their own)" if kind == "strings" else ""
    assert not found, f"{kind} over {limit} lines{hint}:\n" + "\n".join(found)


def test_the_checker_sees_the_whole_tree():
    """The rules above must be reading the real packages, not an empty list."""
    assert {"moebench.runner", "moebench.cell.compute", "moebench.execution.store",
            "moebench.suite", "moebench.reports", "moebench_plugins.models.regression"} \
        <= set(MODULES)
    assert any(i.target == "moebench.cell.compute" for i in IMPORTS)


def test_the_rules_catch_what_they_forbid():
    """A cycle, a lazy import and an upward import in a made-up graph are all found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _layer("moebench.cell.compute") > _layer("moebench.runner")
    assert _layer("moebench.em") == len(LAYERS) - 1  # interfaces: importable from everywhere
    assert _layer("moebench_plugins.models.gate") is None
    tree = ast.parse("def f():\n    from moebench import runner\n")
    assert len(_function_nodes(tree)) == 1


def test_the_core_imports_without_the_first_party_plugins():
    """With ``moebench_plugins`` made unimportable, every core package still imports, and
    ``moebench.api`` says what to do for a name the plugins supply."""
    code = (
        "import sys\n"
        "sys.modules['moebench_plugins'] = None  # any import of it raises ImportError\n"
        "import moebench, moebench.api, moebench.cli, moebench.runner, moebench.reports\n"
        "import moebench.cell, moebench.execution, moebench.suite, moebench.testing\n"
        "from moebench.api import SupportsEM, GateOptions, EMParams  # the core's own\n"
        "try:\n"
        "    moebench.api.JointEM\n"
        "except ImportError as exc:\n"
        "    print('JointEM:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("JointEM: moebench.api.JointEM comes from "
                                  "moebench_plugins.algorithms.joint_em:JointEM, which could "
                                  "not be imported"), done.stdout
