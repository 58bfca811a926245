"""The bounded YAML loader: suite files are untrusted input.

:class:`BoundedLoader` refuses alias bombs, deep nesting and duplicate keys, each with its YAML
path, line and column (:class:`YamlRefused`); :func:`load_yaml` composes a document once and
gives its data with the place of every YAML path (:class:`~moebench.suite.problems.Place`:
the line where the suite uses a value, and the anchor it comes from), for error messages.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .problems import Place, format_loc

#: Limits of the YAML loader: nesting depth, nodes after alias expansion, number of aliases.
MAX_YAML_DEPTH = 50
MAX_YAML_NODES = 100_000
MAX_YAML_ALIASES = 500


class YamlRefused(Exception):
    """The YAML loader refused the input (too deep, too big, duplicate key): where, message."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


_MERGE_TAG = "tag:yaml.org,2002:merge"


#: Where an alias is used: the anchor it names and the alias's 1-based line.
Alias = tuple[str, int]


def _slot(parent: yaml.Node | None, index: Any) -> tuple[int, Any]:
    """The place of a child in its parent node: a sequence position or a mapping key node."""
    return id(parent), id(index) if isinstance(index, yaml.Node) else index


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with limits for untrusted suite files.

    Refuses, with the YAML path, line and column:

    - nesting deeper than :data:`MAX_YAML_DEPTH` (also through aliases);
    - more than :data:`MAX_YAML_ALIASES` aliases, more than :data:`MAX_YAML_NODES` nodes once
      aliases are expanded ("billion laughs"), and an alias inside the node it refers to;
    - a key given twice in one mapping (YAML would silently keep the last value).

    Values that the safe constructor cannot build (a date ``2001-13-45``, an integer of
    thousands of digits) become a ``ConstructorError`` with their position instead of a
    ``ValueError``.

    Numbers with an exponent are floats as in YAML 1.2 (:data:`EXPONENT_FLOAT`): ``1e-6`` and
    ``1.5e3``, which YAML 1.1 (PyYAML) reads as strings, are the floats a suite's author means.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._deepest = 0
        self._nodes = 0
        self._aliases = 0
        self._path: list[Any] = []
        self._sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, height)
        self._open: set[str] = set()  # anchors whose node is being composed
        #: Each alias, by its slot in its parent node (see ``_slot``): its anchor and line.
        self.aliases: dict[tuple[int, Any], Alias] = {}

    def _where(self, mark: yaml.Mark, path: tuple[Any, ...] | None = None) -> str:
        path = tuple(self._path) if path is None else path
        loc = format_loc(path[:8]) + ("..." if len(path) > 8 else "")
        return f"{loc} (line {mark.line + 1}, column {mark.column + 1})"

    def _count(self, nodes: int, mark: yaml.Mark) -> None:
        self._nodes += nodes
        if self._nodes > MAX_YAML_NODES:
            expanded = " once aliases are expanded" if self._aliases else ""
            raise YamlRefused(self._where(mark), f"more than {MAX_YAML_NODES:,} YAML values"
                              f"{expanded}; a suite is not that big")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        # ``index`` is a sequence position, the key node of a mapping value, or None (a key or
        # the document root): it extends the YAML path used in messages.
        pushed = index is not None
        if pushed:
            if isinstance(index, yaml.ScalarNode):
                self._path.append(index.value)
            else:
                self._path.append(index if isinstance(index, int) else "?")
        self._depth += 1
        try:
            return self._compose_bounded(parent, index)
        finally:
            self._depth -= 1
            if pushed:
                self._path.pop()

    def _compose_bounded(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        mark = event.start_mark
        if self._depth > MAX_YAML_DEPTH:
            raise YamlRefused(self._where(mark), f"nested more than {MAX_YAML_DEPTH} levels deep")
        anchor = getattr(event, "anchor", None)
        if isinstance(event, yaml.AliasEvent):
            if anchor in self._open:
                raise YamlRefused(self._where(mark), f"alias *{anchor} is inside the node it "
                                  "refers to (a recursive structure)")
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise YamlRefused(self._where(mark),
                                  f"more than {MAX_YAML_ALIASES} aliases (*name)")
            size, height = self._sizes.get(anchor, (1, 0))  # undefined: PyYAML says so below
            self._count(size, mark)
            if self._depth + height > MAX_YAML_DEPTH:
                raise YamlRefused(self._where(mark), f"alias *{anchor} nests values more than "
                                  f"{MAX_YAML_DEPTH} levels deep")
            self._deepest = max(self._deepest, self._depth + height)
            if index is not None:
                self.aliases[_slot(parent, index)] = (anchor, mark.line + 1)
            return super().compose_node(parent, index)
        self._count(1, mark)
        start, outer = self._nodes - 1, self._deepest
        self._deepest = self._depth
        if anchor is not None:
            self._open.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.discard(anchor)
        if anchor is not None:
            self._sizes[anchor] = (self._nodes - start, self._deepest - self._depth)
        self._deepest = max(outer, self._deepest)
        return node

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue  # "<<" merges may be overridden; complex keys fail in validation
            try:
                key = self.construct_object(key_node)
                hash(key)
            except (yaml.YAMLError, TypeError):
                continue  # construction reports it, with its position
            if key in first:
                mark, line = key_node.start_mark, first[key].start_mark.line + 1
                raise YamlRefused(
                    self._where(mark, tuple(self._path) + (key,)),
                    f"duplicate key {key!r} (line {mark.line + 1}; first at line {line})",
                )
            first[key] = key_node
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # ValueError of a bad date or of a 5000-digit integer, ...
            text = f" {node.value!r}" if isinstance(node, yaml.ScalarNode) else ""
            if len(text) > 60:
                text = text[:57] + "..."
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read the value{text}: {exc}", node.start_mark
            ) from None


#: Floats with an exponent that YAML 1.1 reads as strings but YAML 1.2 as floats: no dot
#: (``1e-6``, ``2E5``) or no sign in the exponent (``1.5e3``). Anything else resolves as before.
EXPONENT_FLOAT = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"
)
BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT,
                                    list("-+0123456789."))


def load_value(text: str) -> Any:
    """One YAML value (``0.1``, ``1e-3``, ``[1, 2]``) read as a suite file's values are
    (:class:`BoundedLoader`), e.g. a parameter given on the command line."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _place(text_line: int, through: tuple[Alias, ...]) -> Place:
    """The :class:`Place` of text at ``text_line`` reached through the aliases ``through``
    (outermost first): the outermost alias is where the suite uses it, the innermost anchor
    holds its text."""
    if not through:
        return Place(text_line)
    return Place(through[0][1], through[-1][0], text_line)


Entry = tuple[yaml.Node, yaml.Node, tuple[Alias, ...], tuple[Alias, ...]]


def _entries(node: yaml.MappingNode, aliases: dict[tuple[int, Any], Alias]) -> list[Entry]:
    """The key/value pairs of a mapping as its data holds them, ``<<`` merges flattened.

    Each pair comes with the aliases its key was merged through and the alias its value is
    (if any); an explicit key overrides a merged one, and in ``<<: [*a, *b]`` ``a`` wins, as
    PyYAML constructs them.
    """
    merged: list[Entry] = []
    own: list[Entry] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            continue
        if key.tag != _MERGE_TAG:
            alias = aliases.get(_slot(node, key))
            own.append((key, value, (), (alias,) if alias else ()))
            continue
        sources = [(value, aliases.get(_slot(node, key)))]
        if isinstance(value, yaml.SequenceNode):
            sources = [(item, aliases.get(_slot(value, i))) for i, item in enumerate(value.value)]
            sources.reverse()
        for source, alias in sources:
            if isinstance(source, yaml.MappingNode):
                via = (alias,) if alias else ()
                merged += [(k, v, via + k_via, v_via)
                           for k, v, k_via, v_via in _entries(source, aliases)]
    return list({key.value: (key, value, k_via, v_via)
                 for key, value, k_via, v_via in merged + own}.values())


def _node_places(
    root: yaml.Node, aliases: dict[tuple[int, Any], Alias]
) -> dict[tuple[Any, ...], Place]:
    """Map every YAML path of a composed document to its :class:`Place`.

    A value reached through an alias (``*name`` or a ``<<`` merge) is placed at the alias,
    where the suite uses it, with the anchor its text is in: a typo in an anchor used twice has
    two places. The walk follows aliases, so it visits the document as its data holds it,
    which :class:`BoundedLoader` bounds to :data:`MAX_YAML_NODES` values.
    """
    places: dict[tuple[Any, ...], Place] = {(): Place(root.start_mark.line + 1)}
    stack: list[tuple[yaml.Node, tuple[Any, ...], tuple[Alias, ...]]] = [(root, (), ())]
    while stack:
        node, path, through = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value, k_via, v_via in _entries(node, aliases):
                child = path + (key.value,)
                places[child] = _place(key.start_mark.line + 1, through + k_via)
                stack.append((value, child, through + k_via + v_via))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                alias = aliases.get(_slot(node, i))
                item_through = through + ((alias,) if alias else ())
                places[path + (i,)] = _place(item.start_mark.line + 1, item_through)
                stack.append((item, path + (i,), item_through))
    return places


def yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map every YAML path to its 1-based line, for error messages (empty if malformed).

    A value reached through an alias has the alias's line, where the suite uses it.
    """
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, YamlRefused):
        return {}
    finally:
        loader.dispose()
    if root is None:
        return {}
    return {path: place.line for path, place in _node_places(root, loader.aliases).items()}


def load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], Place]]:
    """The document's data and the :class:`Place` of each of its YAML paths, composed once
    with :class:`BoundedLoader`."""
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        places = _node_places(root, loader.aliases)  # before construction flattens merges
        return loader.construct_document(root), places
    finally:
        loader.dispose()
