"""The syntax tree: what was written, where, before any meaning is given to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..span import Span


@dataclass(slots=True)
class Ident:
    """A name as written (service, version, namespace...)."""

    name: str
    span: Span


@dataclass(slots=True)
class Lit:
    """A literal: `value` is parsed (ms for durations, float for percent), `text` is as written."""

    value: Any
    text: str
    span: Span


@dataclass(slots=True)
class Node:
    """One syntax element: an item (statement, block) or part of one.

    `kind` is the grammar rule that made it; `fields` holds its parts
    (Ident, Lit, Node, lists of these, or plain strings for keywords);
    `children` holds the items of a block.
    """

    kind: str
    span: Span
    fields: dict[str, Any] = field(default_factory=dict)
    children: list["Node"] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass
class SyntaxFile:
    path: str
    items: list[Node]
    comments: list  # list[lexer.Comment]
    # Where the file really is when `path` is only a name shown to users
    # (`meshc diff --git`: `REV:orders.mesh`): files a policy names (a JWKS,
    # TLS files) are read relative to this.
    origin: str | None = None
