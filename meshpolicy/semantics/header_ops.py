"""Header operations of a route or ingress rule (`set|add|remove
request|response header NAME [VALUE]`). Pure, no model: ops are
(side, op, name, value) tuples or anything with those attributes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Headers = list[tuple[str, str]]


def _fields(op: Any) -> tuple[str, str, str, str | None]:
    if isinstance(op, tuple):
        return op  # (side, op, name, value)
    return op.side, op.op, op.name, op.value


def apply_header_ops(ops: Iterable[Any], side: str, headers: Headers) -> Headers:
    """The headers after the rule's ops for one side (`request`: applied
    after matching, before the request is forwarded; `response`: applied to
    the response of a forwarded request, never to a `respond`/`redirect`
    answer), in written order. set: drop every value of the name, then add
    this one; add: append one more value; remove: drop every value. Names
    compare without letter case (ops carry lower-cased names)."""
    out = list(headers)
    for o in ops:
        s, op, name, value = _fields(o)
        if s != side:
            continue
        if op in ("set", "remove"):
            out = [(k, v) for k, v in out if k.lower() != name]
        if op in ("set", "add"):
            out.append((name, value or ""))
    return out
