"""A route rule's L7 options as Envoy route fields: query parameter matches,
header operations, path and host rewrite, CORS (docs/semantics.md, "Ingress,
tokens and egress", item 5). Shared by the sidecars' outbound routes and the
ingress gateway's routes."""

from __future__ import annotations

import re2

from ...model.types import Cors, HeaderOp, QueryMatch, RouteRule
from ...semantics.rewrite import fixed_part
from .context import Ctx

CORS_FILTER = "envoy.filters.http.cors"
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
APPEND = {"set": "OVERWRITE_IF_EXISTS_OR_ADD", "add": "APPEND_IF_EXISTS_OR_ADD"}


def _hex(byte: int) -> str:
    return "%" + "".join(f"[{d.lower()}{d}]" if d.isalpha() else d for d in f"{byte:02X}")


def encodings(value: str) -> str:
    """An RE2 pattern for every way a query string can spell `value`.

    Envoy compares a parameter's raw, undecoded text, while the policy's
    query tests see the form-decoded value (semantics/query.py). So each
    character may come as itself (unless decoding would change it: `%`, `+`,
    `&`, `#`, spaces and controls), as its UTF-8 bytes percent-encoded
    (either letter case), and a space also as `+`."""
    out = []
    for c in value:
        alts = ["".join(_hex(b) for b in c.encode("utf-8"))]
        if c == " ":
            alts.append(re2.escape("+"))
        elif c not in "%+&#" and c.isprintable() and not c.isspace():
            alts.append(re2.escape(c))
        out.append(f"(?:{'|'.join(alts)})")
    return "".join(out)


def query_matcher(ctx: Ctx, q: QueryMatch, where: str) -> dict | None:
    """A route.v3.QueryParameterMatcher. Envoy tests the parameter's first
    occurrence, as the policy does; its value is matched in every spelling
    that decodes to the tested one (`encodings`). A regex over the decoded
    value has no such translation: MP701."""
    if q.kind == "present":
        return {"name": q.name, "present_match": True}
    if q.kind == "regex":
        ctx.unsupported(f"the query regex test `{q.name}` {where}", q.span,
                        "Envoy matches a query parameter's raw, undecoded text")
        return None
    tail = ".*" if q.kind == "prefix" else ""
    return {"name": q.name, "string_match": {"safe_regex": {"regex": encodings(q.value or "") + tail}}}


def literal(value: str) -> str:
    """A policy string as an Envoy header value: `%` starts a substitution
    (`%REQ(authorization)%` would copy the caller's token), so it is doubled."""
    return value.replace("%", "%%")


def _effective_ops(ops: list[HeaderOp]) -> list[HeaderOp]:
    """The ops whose effect survives, so that Envoy's order gives the written
    order's result (semantics/header_ops.py). Envoy applies a route's
    removes first, then its overwriting adds, then its appending adds, each
    in list order (seen on Envoy 1.40: `add x 1; set x 2` left `x: 2, 1`).
    Per header name only the last set or remove and the adds after it
    matter: a set/remove discards every value before it."""
    last: dict[str, int] = {}
    for i, op in enumerate(ops):
        if op.op in ("set", "remove"):
            last[(op.side, op.name)] = i
    return [op for i, op in enumerate(ops) if i >= last.get((op.side, op.name), 0)]


def unsettable(name: str) -> bool:
    """Headers Envoy's header mutations refuse (pseudo-headers and Host:
    `rewrite host` changes the authority)."""
    return name.startswith(":") or name == "host"


def header_fields(ctx: Ctx, rule: RouteRule, where: str) -> dict:
    """request/response headers_to_add and _to_remove of a forwarding route
    (response ops apply only to forwarded requests' responses)."""
    out: dict = {}
    for op in _effective_ops(rule.headers):
        if unsettable(op.name):
            ctx.unsupported(f"`{op.op} {op.side} header \"{op.name}\"` {where}", op.span,
                            "Envoy does not let a route change pseudo-headers or Host (use `rewrite ... host`)")
            continue
        if op.op == "remove":
            out.setdefault(f"{op.side}_headers_to_remove", []).append(op.name)
        else:
            out.setdefault(f"{op.side}_headers_to_add", []).append({
                "header": {"key": op.name, "value": literal(op.value or "")}, "append_action": APPEND[op.op]})
    return out


def per_path(rule: RouteRule) -> list[tuple[str, RouteRule]]:
    """A rule as the Envoy routes it becomes, with their name suffixes: one
    per path pattern when it rewrites the path and lists several, in written
    order. The first pattern that matches decides what a rewrite replaces
    (semantics/rewrite.py `rewrite_for`), and Envoy's first matching route
    is exactly that one."""
    paths = rule.match.paths
    if rule.rewrite is None or rule.rewrite.path is None or len(paths) < 2:
        return [("", rule)]
    return [("" if k == 0 else f"-{k + 1}",
             rule.model_copy(update={"match": rule.match.model_copy(update={"paths": [p]})}))
            for k, p in enumerate(paths)]


def rewrite_fields(ctx: Ctx, rule: RouteRule, where: str) -> dict:
    """prefix_rewrite / regex_rewrite and host_rewrite_literal of a route
    action (a rule with one path pattern, or none: see per_path)."""
    rw = rule.rewrite
    if rw is None:
        return {}
    out: dict = {}
    if rw.host is not None:
        out["host_rewrite_literal"] = rw.host
    if rw.path is None:
        return out
    paths = rule.match.paths
    if not paths:
        # No pattern: the whole path is replaced (the query is kept).
        out["regex_rewrite"] = {"pattern": {"regex": "^.*"}, "substitution": _substitution(rw.path)}
        return out
    p = paths[0]
    fixed = fixed_part(p.kind, p.value)
    if fixed is None:
        ctx.unsupported(f"`rewrite` of a regex path {where}", rw.span, "the part to replace is not fixed")
        return out
    if p.kind in ("exact", "prefix"):
        # Envoy swaps the matched prefix, or the whole path of a `path` match.
        out["prefix_rewrite"] = rw.path
    else:  # a glob: its text before the first wildcard
        out["regex_rewrite"] = {"pattern": {"regex": "^" + re2.escape(fixed)}, "substitution": _substitution(rw.path)}
    return out


def _substitution(path: str) -> str:
    """`\\` starts a capture group reference in a substitution: a literal one is doubled."""
    return path.replace("\\", "\\\\")


def cors_policy(c: Cors) -> dict:
    """A per-route cors.v3.CorsPolicy: the origins exactly (`*`: any)."""
    origins = [{"safe_regex": {"regex": ".*"}} if o == "*" else {"exact": o} for o in c.origins]
    out: dict = {"@type": CORS_POLICY, "allow_origin_string_match": origins,
                 # A preflight from another origin is not answered here: it
                 # goes on like any request (and gets no CORS headers).
                 "forward_not_matching_preflights": True}
    if c.methods:
        out["allow_methods"] = ",".join(c.methods)
    if c.headers:
        out["allow_headers"] = ",".join(c.headers)
    if c.expose:
        out["expose_headers"] = ",".join(c.expose)
    if c.credentials:
        out["allow_credentials"] = True
    if c.max_age_ms is not None:
        out["max_age"] = str(c.max_age_ms // 1000)
    return out


def cors_filter() -> dict:
    """The HCM's CORS filter: it acts only on routes with a CorsPolicy."""
    return {"name": CORS_FILTER, "typed_config": {"@type": CORS}}


def uses_cors(vhosts: list[dict]) -> bool:
    return any(CORS_FILTER in r.get("typed_per_filter_config", {}) for vh in vhosts for r in vh["routes"])
