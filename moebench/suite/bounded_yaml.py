"""The bounded YAML loader: suite files are untrusted input.

:class:`BoundedLoader` refuses alias bombs, deep nesting and duplicate keys, each with its YAML
path, line and column (:class:`YamlRefused`); :func:`load_yaml` composes a document once and
gives its data with the line of every YAML path, for error messages.
"""

from __future__ import annotations

from typing import Any

import yaml

from .problems import format_loc

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


def _node_lines(root: yaml.Node) -> dict[tuple[Any, ...], int]:
    """Map every YAML path of a composed document to its 1-based line.

    A node reached again through an alias is not walked again (its inner paths keep the lines
    of the anchored original; the alias's own path gets its key's line), so this is linear in
    the size of the file, whatever the aliases expand to.
    """
    lines: dict[tuple[Any, ...], int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                child = path + (key.value,)
                lines[child] = key.start_mark.line + 1
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                stack.append((value, path + (i,)))
    return lines


def yaml_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map every YAML path to its 1-based line, for error messages (empty if malformed)."""
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
    except (yaml.YAMLError, YamlRefused):
        return {}
    finally:
        loader.dispose()
    return _node_lines(root) if root is not None else {}


def load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document's data and its path-to-line map, composed once with :class:`BoundedLoader`."""
    loader = BoundedLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}
        lines = _node_lines(root)
        return loader.construct_document(root), lines
    finally:
        loader.dispose()
