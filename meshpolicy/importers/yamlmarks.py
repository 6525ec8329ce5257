"""Kubernetes YAML read with the place of every value kept.

Each mapping becomes a `YMap` (a dict) and each sequence a `YSeq` (a list)
that remember where each entry was written, so a diagnostic about an
imported field points at its YAML file, line and column. Plain scalars get
YAML 1.1's safe types (PyYAML's SafeLoader), as `kubectl` reads them.
"""

from __future__ import annotations

import re

import yaml

from ..span import Span

try:  # libyaml's composer is about 10x faster; the marks are the same
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader

_SCALARS = yaml.constructor.SafeConstructor()


def _span(path: str, node: yaml.Node) -> Span:
    """A scalar's whole extent; a mapping or sequence only up to its first
    key, so a diagnostic underlines `- match:`, not the twenty lines below it."""
    s, e = node.start_mark, node.end_mark
    head = node
    while isinstance(head, (yaml.MappingNode, yaml.SequenceNode)) and head.value:
        head = head.value[0][0] if isinstance(head, yaml.MappingNode) else head.value[0]
    if head is not node:
        e = head.end_mark
    return Span(path, s.line + 1, s.column + 1, e.line + 1, e.column + 1, s.index, e.index)


class YMap(dict):
    """A mapping that can say where each key and value was written. Spans
    are made on demand from the YAML nodes kept aside: most values are never
    reported on, and a span for each of them was most of the cost of reading."""

    __slots__ = ("_path", "_node", "_nodes")

    @property
    def span(self) -> Span:
        return _span(self._path, self._node)

    def at(self, key) -> Span:
        """Where the value of `key` was written (else the mapping itself)."""
        nodes = self._nodes.get(key)
        return _span(self._path, nodes[1]) if nodes else self.span

    def key_at(self, key) -> Span:
        nodes = self._nodes.get(key)
        return _span(self._path, nodes[0]) if nodes else self.span


class YSeq(list):
    __slots__ = ("_path", "_node")

    @property
    def span(self) -> Span:
        return _span(self._path, self._node)

    def at(self, i: int) -> Span:
        items = self._node.value
        return _span(self._path, items[i]) if 0 <= i < len(items) else self.span


def empty_map(parent: YMap | YSeq) -> YMap:
    """An empty mapping that reports at parent's place (a field left out)."""
    m = YMap()
    m._path, m._node, m._nodes = parent._path, parent._node, {}
    return m


_STR, _INT, _BOOL, _NULL = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:bool",
                            "tag:yaml.org,2002:null")


MAX_DEPTH = 200
MAX_NODES = 2_000_000  # per file; a real manifest set of 1000 services has ~300k


class _Budget:
    """Aliases make a YAML graph, not a tree: `a: &x [*y, *y]` repeated doubles
    at each step (a "billion laughs"). Every value read, aliases included,
    counts against the file's budget."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_NODES


def _convert(path: str, node: yaml.Node, depth: int = 0, budget: _Budget | None = None):
    budget = budget or _Budget()
    budget.left -= 1
    if budget.left < 0:
        raise yaml.YAMLError(f"the document expands to more than {MAX_NODES} values (aliases repeated "
                             f"over and over?) at line {node.start_mark.line + 1}")
    if depth > MAX_DEPTH:  # a hostile document nested past what any manifest needs
        raise yaml.YAMLError(f"nesting deeper than {MAX_DEPTH} levels at line {node.start_mark.line + 1}")
    if isinstance(node, yaml.MappingNode):
        _SCALARS.flatten_mapping(node)  # `<<` merge keys, as Kubernetes' reader does
        out = YMap()
        out._path, out._node, out._nodes = path, node, {}
        for k, v in node.value:
            key = _convert(path, k, depth + 1, budget)
            if isinstance(key, (YMap, YSeq)):
                key = str(key)
            out[key] = _convert(path, v, depth + 1, budget)
            out._nodes[key] = (k, v)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YSeq(_convert(path, v, depth + 1, budget) for v in node.value)
        seq._path, seq._node = path, node
        return seq
    if node.tag == _STR:  # the common case, without the constructor's dispatch
        return node.value
    return _SCALARS.construct_object(node, deep=True)


_DEEP_INDENT = re.compile(r"^[ \t-]{%d,}" % (2 * MAX_DEPTH), re.M)


def _check_depth(path: str, text: str) -> None:
    """libyaml's composer recurses in C: a document nested a hundred thousand
    levels deep overflows the stack and kills the process. Nesting needs
    brackets or indentation, so only a text with many of either is walked
    event by event (which does not recurse) before it is composed."""
    if text.count("[") + text.count("{") <= MAX_DEPTH and not _DEEP_INDENT.search(text):
        return
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nesting deeper than {MAX_DEPTH} levels at line {event.start_mark.line + 1}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_documents(path: str, text: str) -> list[tuple[YMap | None, Span]]:
    """Every document of a multi-document YAML text, with where it starts.
    A document that is not a mapping comes back as None (with its span).
    Raises yaml.YAMLError on unreadable YAML."""
    docs = []
    _check_depth(path, text)
    budget = _Budget()
    for node in yaml.compose_all(text, Loader=_Loader):
        if node is None:
            continue
        value = _convert(path, node, 0, budget)
        docs.append((value if isinstance(value, YMap) else None, _span(path, node)))
    _SCALARS.constructed_objects.clear()  # the constructor's memo would keep every scalar alive
    return docs


def error_span(path: str, err: yaml.YAMLError) -> Span:
    """Where a YAML syntax error was found (the file's start if PyYAML does not say)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return Span(path, 1, 1, 1, 1, 0, 0)
    return Span(path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2, mark.index, mark.index + 1)


def items_of(value) -> list:
    """The entries of a YAML sequence; nothing for any other value (a scalar or
    mapping where a list belongs is a malformed input, read as empty, not a crash)."""
    return list(value) if isinstance(value, YSeq) else []
