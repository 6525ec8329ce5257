"""Kubernetes YAML read with the place of every value kept.

Each mapping becomes a `YMap` (a dict) and each sequence a `YSeq` (a list)
that remember where each entry was written, so a diagnostic about an
imported field points at its YAML file, line and column. Plain scalars get
YAML 1.1's safe types (PyYAML's SafeLoader), as `kubectl` reads them.
"""

from __future__ import annotations

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
    """A mapping; `span` is the whole mapping, `key_spans`/`value_spans` per key."""

    __slots__ = ("span", "key_spans", "value_spans")

    def at(self, key: str) -> Span:
        """Where the value of `key` was written (else the mapping itself)."""
        return self.value_spans.get(key, self.span)

    def key_at(self, key: str) -> Span:
        return self.key_spans.get(key, self.span)


class YSeq(list):
    __slots__ = ("span", "spans")

    def at(self, i: int) -> Span:
        return self.spans[i] if 0 <= i < len(self.spans) else self.span


def _convert(path: str, node: yaml.Node, depth: int = 0):
    if depth > 200:  # a hostile document nested past what any manifest needs
        raise yaml.YAMLError(f"nesting deeper than 200 levels at line {node.start_mark.line + 1}")
    if isinstance(node, yaml.MappingNode):
        _SCALARS.flatten_mapping(node)  # `<<` merge keys, as Kubernetes' reader does
        out = YMap()
        out.span, out.key_spans, out.value_spans = _span(path, node), {}, {}
        for k, v in node.value:
            key = _convert(path, k, depth + 1)
            if isinstance(key, (YMap, YSeq)):
                key = str(key)
            out[key] = _convert(path, v, depth + 1)
            out.key_spans[key] = _span(path, k)
            out.value_spans[key] = _span(path, v)
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = YSeq(_convert(path, v, depth + 1) for v in node.value)
        seq.span = _span(path, node)
        seq.spans = [_span(path, v) for v in node.value]
        return seq
    return _SCALARS.construct_object(node, deep=True)


def load_documents(path: str, text: str) -> list[tuple[YMap | None, Span]]:
    """Every document of a multi-document YAML text, with where it starts.
    A document that is not a mapping comes back as None (with its span).
    Raises yaml.YAMLError on unreadable YAML."""
    docs = []
    for node in yaml.compose_all(text, Loader=_Loader):
        if node is None:
            continue
        value = _convert(path, node)
        docs.append((value if isinstance(value, YMap) else None, _span(path, node)))
    return docs


def error_span(path: str, err: yaml.YAMLError) -> Span:
    """Where a YAML syntax error was found (the file's start if PyYAML does not say)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    if mark is None:
        return Span(path, 1, 1, 1, 1, 0, 0)
    return Span(path, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2, mark.index, mark.index + 1)
