"""The L7 options of a rule (docs/semantics.md, "Ingress, tokens and
egress", 5) as HTTPRoute matches and filters, for GAMMA routes and for the
ingress routes (ingress.py): query-parameter matches, header operations,
the path and host rewrite and CORS (docs/targets/gateway-api.md, "L7 rule
options").

- Header operations apply in written order; a RequestHeaderModifier (or
  ResponseHeaderModifier) holds one set, add or remove per header name, so
  the sequence per header is folded into what it leaves (istio/l7.py's
  `fold`, the same reading as the istio target's): the original values
  dropped and one value (`set`), dropped (`remove`), or kept with one value
  appended (`add`). More than one value left is MP701.
- Rewrite (semantics/rewrite.py): the whole path of an exact match, or of a
  rule without a path test, is `ReplaceFullPath`. A prefix is replaced only
  where the route's match is the PathPrefix `/` (the policy's other
  prefixes and globs are RegularExpression matches here, and the CRDs allow
  `ReplacePrefixMatch` on a single PathPrefix match only) and the
  replacement ends with `/` (Gateway API joins the rest of the path with a
  `/`, the policy appends it as it is); anything else is MP701.
- Query parameters: `=` is an Exact match; a prefix, regex or presence test
  is a RegularExpression (the implementation's dialect: flavours only).
  Gateway API ranks a match with more query tests above one with fewer;
  rules whose order that would change are MP701.
- CORS is the standard channel's `CORS` filter (v1.6): origins, methods,
  headers, expose headers, credentials; `max_age` in whole seconds.
"""

from __future__ import annotations

import itertools

from ...model.types import Cors, HeaderOp, QueryMatch, RouteRule
from ..http_routes import Dialect, _disjoint, _rank
from ..istio.l7 import fold
from ..meshproxy.lower import anchored, literal

MAX_QUERY = 16  # per match (the CRDs' maxItems)


def query_params(queries: list[QueryMatch], d: Dialect, where: str) -> list[dict] | None:
    out, seen = [], set()
    for q in queries:
        if q.name in seen:
            d.reject(f"a second test of query parameter `{q.name}` {where}", q.span,
                     "a route match holds one test per query parameter")
            return None
        seen.add(q.name)
        if q.kind == "exact":
            out.append({"type": "Exact", "name": q.name, "value": q.value or ""})
            continue
        if not d.regex:
            d.reject(f"the query test `{q.name}` ({q.kind}) {where}", q.span,
                     "it needs a RegularExpression match, whose dialect the standard channel leaves open")
            return None
        rx = {"prefix": "^" + literal(q.value or "") + "(?s:.*)$", "regex": anchored(q.value or ""),
              "present": "(?s:.*)"}[q.kind]
        out.append({"type": "RegularExpression", "name": q.name, "value": rx})
    if len(out) > MAX_QUERY:
        d.reject(f"{len(out)} query tests {where}", queries[0].span, f"a route match holds at most {MAX_QUERY}")
        return None
    return out


def header_modifier(ops: list[HeaderOp], side: str, d: Dialect, where: str) -> dict | None | bool:
    """The {set, add, remove} of one side's operations in written order; {}
    for none; False after an MP701."""
    by_name: dict[str, list[HeaderOp]] = {}
    for op in ops:
        if op.side == side:
            by_name.setdefault(op.name, []).append(op)
    out: dict = {}
    for name, written in by_name.items():
        drop, values = fold(written)
        if len(values) > 1:
            d.reject(f"{len(values)} values left in {side} header `{name}` {where}", written[-1].span,
                     "a header modifier holds one set, add or remove per header name")
            return False
        if drop and values:
            out.setdefault("set", []).append({"name": name, "value": values[0]})
        elif drop:
            out.setdefault("remove", []).append(name)
        elif values:
            out.setdefault("add", []).append({"name": name, "value": values[0]})
    return {k: out[k] for k in ("set", "add", "remove") if k in out}


def header_filters(ops: list[HeaderOp], d: Dialect, where: str) -> list[dict] | None:
    out = []
    for side, kind, field in (("request", "RequestHeaderModifier", "requestHeaderModifier"),
                              ("response", "ResponseHeaderModifier", "responseHeaderModifier")):
        body = header_modifier(ops, side, d, where)
        if body is False:
            return None
        if body:
            out.append({"type": kind, field: body})
    return out


def url_rewrite(rule: RouteRule, matches: list[dict], path_to: str | None, host: str | None, d: Dialect,
                where: str) -> dict | None | bool:
    """The URLRewrite filter for a forward rule whose HTTPRoute matches are
    `matches`; None: nothing to rewrite; False after an MP701."""
    body: dict = {}
    if path_to is not None:
        paths = [m.get("path") for m in matches] or [None]
        kinds = {None if p is None else (p["type"], p["value"]) for p in paths}
        span = rule.rewrite.span if rule.rewrite is not None else rule.span
        if kinds == {None} or all(k is not None and k[0] == "Exact" for k in kinds):
            body["path"] = {"type": "ReplaceFullPath", "replaceFullPath": path_to}
        elif kinds == {("PathPrefix", "/")} and len(matches) == 1 and path_to.endswith("/"):
            body["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": path_to}
        else:
            d.reject(f"`rewrite \"{path_to}\"` {where}", span,
                     "only a whole path (exact match or no path test) or the prefix `/` of a single match, "
                     "replaced by a path ending in `/`, can be written: ReplacePrefixMatch needs one "
                     "PathPrefix match, which matches whole segments, and joins the rest with a `/`")
            return False
    if host is not None:
        body["hostname"] = host
    return {"type": "URLRewrite", "urlRewrite": body} if body else None


def cors_filter(c: Cors, d: Dialect, where: str) -> dict | None:
    body: dict = {"allowOrigins": list(c.origins)}
    if c.methods:
        body["allowMethods"] = list(c.methods)
    if c.headers:
        body["allowHeaders"] = list(c.headers)
    if c.expose:
        body["exposeHeaders"] = list(c.expose)
    if c.credentials:
        body["allowCredentials"] = True
    if c.max_age_ms is not None:
        if c.max_age_ms % 1000:
            d.reject(f"the CORS `max_age` {c.max_age_ms}ms {where}", c.at("max_age_ms"),
                     "the CORS filter's maxAge is whole seconds")
            return None
        body["maxAge"] = c.max_age_ms // 1000
    return {"type": "CORS", "cors": body}


def decorate(rule: RouteRule | None, cors: Cors | None, out: dict, d: Dialect, where: str) -> bool:
    """Add a rule's L7 options to its HTTPRoute rule `out` (already holding
    its matches, backends and mirror); False after an MP701."""
    m = rule.match if rule is not None else None
    if m is not None and m.queries:
        qp = query_params(m.queries, d, where)
        if qp is None:
            return False
        out["matches"] = [{**x, "queryParams": qp} for x in (out.get("matches") or [{}])]
    if "backendRefs" not in out:
        return True  # redirects: the options apply to forwarded requests only
    filters = list(out.get("filters", []))
    if rule is not None and rule.headers:
        hf = header_filters(rule.headers, d, where)
        if hf is None:
            return False
        filters = hf + filters
    if rule is not None and rule.rewrite is not None:
        rw = url_rewrite(rule, out.get("matches", []), rule.rewrite.path, rule.rewrite.host, d, where)
        if rw is False:
            return False
        if rw is not None:
            filters.append(rw)
    if cors is not None:
        cf = cors_filter(cors, d, where)
        if cf is None:
            return False
        filters.append(cf)
    if filters:
        out["filters"] = filters
    return True


def query_order_problems(rules: list[tuple[object, list[dict]]], regex_rank: bool) -> list[tuple[object, object]]:
    """Pairs (earlier, later) a later match with more query tests would
    outrank, where http_routes.order_problems (which ranks without them)
    found the order kept: equal rank otherwise, not provably disjoint."""
    out = []
    for (ri, mi), (rj, mj) in itertools.combinations(rules, 2):
        for a, b in itertools.product(mi or [{}], mj or [{}]):
            if len(b.get("queryParams", [])) <= len(a.get("queryParams", [])) or _disjoint(a, b):
                continue
            if _queries_disjoint(a, b):
                continue
            ka, kb = _rank(a, regex_rank), _rank(b, regex_rank)
            if ka is None or kb is None or ka == kb:
                out.append((ri, rj))
                break
    return out


def _queries_disjoint(a: dict, b: dict) -> bool:
    qa = {q["name"]: q["value"] for q in a.get("queryParams", []) if q["type"] == "Exact"}
    return any(q["type"] == "Exact" and q["name"] in qa and qa[q["name"]] != q["value"]
               for q in b.get("queryParams", []))
