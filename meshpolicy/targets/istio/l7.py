"""The L7 options of a route rule as VirtualService fields: query-parameter
matches, header operations, path/authority rewrite and CORS
(docs/targets/istio.md, "L7 rule options").

Istio holds header operations in maps (one value per header name and
operation) that Envoy applies removes first, then sets, then adds; the
written sequence is folded per header into what it leaves (the original
values kept or dropped, then the values added) and lowered only when Istio
can leave the same. Istio's `rewrite.uri` replaces the matched prefix of a
prefix match and the whole path of an exact or regex match, so a glob's
rewrite (its fixed part before the first wildcard, semantics/rewrite.py) is
a `uriRegexRewrite` anchored at the start, and so is a rule with no path
test (the whole path is replaced).
"""

from __future__ import annotations

import re2

from ...model.types import Cors, HeaderOp, PathPattern, QueryMatch, RouteRule
from ...semantics.rewrite import fixed_part
from .context import Lowering
from .names import duration

# Envoy's CORS filter echoes the request's Origin when it matches; `*` is any origin.
ANY_ORIGIN = {"regex": ".*"}


def query_params(lw: Lowering, queries: list[QueryMatch]) -> dict[str, dict]:
    """HTTPMatchRequest.queryParams: Envoy full-matches the decoded value.
    Istio has no prefix match for query parameters, so a prefix is a regex."""
    out: dict[str, dict] = {}
    for q in queries:
        if q.name in out:
            lw.unsupported(f"a second test of query parameter `{q.name}`", q.span,
                           "an Istio match holds one test per query parameter")
            continue
        if q.kind == "exact":
            out[q.name] = {"exact": q.value or ""}
        elif q.kind == "prefix":
            out[q.name] = {"regex": re2.escape(q.value or "") + ".*"}
        elif q.kind == "regex":
            out[q.name] = {"regex": q.value or ""}
        else:  # present: Istio reads the regex `*` as Envoy's present_match
            out[q.name] = {"regex": "*"}
    return dict(sorted(out.items()))


def fold(ops: list[HeaderOp]) -> tuple[bool, list[str]]:
    """What a written sequence of operations on one header leaves: whether
    the original values are dropped, and the values added after."""
    drop, values = False, []
    for op in ops:
        if op.op == "remove":
            drop, values = True, []
        elif op.op == "set":
            drop, values = True, [op.value or ""]
        else:
            values.append(op.value or "")
    return drop, values


def header_operations(lw: Lowering, rule: RouteRule, where: str) -> dict:
    """HTTPRoute.headers for the rule's request and response operations."""
    return header_operations_of(lw, rule.headers, where)


def header_operations_of(lw: Lowering, ops_written: list[HeaderOp], where: str) -> dict:
    """HTTPRoute.headers for operations in the order they apply, per side."""
    out: dict = {}
    for side in ("request", "response"):
        by_name: dict[str, list[HeaderOp]] = {}
        for op in ops_written:
            if op.side == side:
                by_name.setdefault(op.name, []).append(op)
        ops: dict = {}
        for name, written in by_name.items():
            drop, values = fold(written)
            if len(values) > 1:
                lw.unsupported(f"{len(values)} values left in {side} header `{name}` {where}", written[-1].span,
                               "Istio's header operations hold one value per header name and operation")
                continue
            if drop and values:
                ops.setdefault("set", {})[name] = values[0]
            elif drop:
                ops.setdefault("remove", []).append(name)
            elif values:
                ops.setdefault("add", {})[name] = values[0]
        for k in ("set", "add"):
            if k in ops:
                ops[k] = dict(sorted(ops[k].items()))
        if "remove" in ops:
            ops["remove"] = sorted(ops["remove"])
        if ops:
            out[side] = {k: ops[k] for k in ("set", "add", "remove") if k in ops}
    return out


def _rewrite_text(text: str) -> str:
    """A literal replacement for RE2's rewrite string (`\\1` is a group)."""
    return text.replace("\\", "\\\\")


def rewrite(lw: Lowering, rule: RouteRule, path: PathPattern | None, where: str) -> dict | None:
    """HTTPRoute.rewrite for requests the rule matched through `path` (None:
    the rule tests no path)."""
    rw = rule.rewrite
    if rw is None:
        return None
    out: dict = {}
    if rw.path is not None:
        if path is None:
            # No path test replaces the whole path (semantics/rewrite.py);
            # Istio's uri would replace only the prefix `/` its route matches.
            out["uriRegexRewrite"] = {"match": "^.*", "rewrite": _rewrite_text(rw.path)}
        elif path.kind in ("exact", "prefix"):
            # Envoy's prefix_rewrite: the matched prefix, or the whole path of an exact match.
            out["uri"] = rw.path
        elif path.kind == "glob":
            out["uriRegexRewrite"] = {"match": "^" + re2.escape(fixed_part("glob", path.value) or ""),
                                      "rewrite": _rewrite_text(rw.path)}
        else:
            lw.unsupported(f"`rewrite` of the regex path `{path.value}` {where}", rw.span,
                           "a regex match has no matched part to replace")
            return None
    if rw.host is not None:
        out["authority"] = rw.host
    return out


def cors_policy(lw: Lowering, c: Cors) -> dict:
    out: dict = {"allowOrigins": [dict(ANY_ORIGIN) if o == "*" else {"exact": o} for o in c.origins]}
    if c.methods:
        out["allowMethods"] = list(c.methods)
    if c.headers:
        out["allowHeaders"] = list(c.headers)
    if c.expose:
        out["exposeHeaders"] = list(c.expose)
    if c.credentials:
        out["allowCredentials"] = True
    if c.max_age_ms is not None:
        if c.max_age_ms < 1:
            lw.unsupported("a CORS `max_age` under 1ms", c.at("max_age_ms"), "Istio's maxAge is at least 1ms")
        else:
            out["maxAge"] = duration(c.max_age_ms)
    return out
