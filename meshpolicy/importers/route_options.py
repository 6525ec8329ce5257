"""L7 options of imported route rules: header operations, rewrites, CORS,
query-parameter matches and retries on status codes (Istio VirtualService
fields and Gateway API filters), as docs/semantics.md "Rule options" defines
them. Envoy applies a route's header removals before its additions
(HeaderParser::evaluateHeaders), and both Istio and Gateway API
implementations set before they add: the operations are written in that order.
"""

from __future__ import annotations

import re

from ..checks.l7 import forbidden_header
from ..model import types as t
from ..span import Span
from .context import Context
from .inventory import Resource
from .yamlmarks import YMap, YSeq, items_of

_QUERY_KINDS = {"exact": "exact", "prefix": "prefix", "regex": "regex"}
_LITERAL = re.compile(r"\^?((?:\\[^A-Za-z0-9]|[^\\.*+?()\[\]{}|^$])*)")
_FORMATTER = re.compile(r"%[A-Z_]+(\([^)]*\))?%")  # an Envoy substitution such as %DOWNSTREAM_REMOTE_ADDRESS%


def regex_prefix(regex: str) -> str | None:
    """The literal P of an RE2 `P.*` (escapes undone): every path starting with
    P, which is the language's `prefix P`; None for any other regex."""
    if not regex.endswith(".*"):
        return None
    m = _LITERAL.fullmatch(regex[:-2])
    if m is None:
        return None
    stem = re.sub(r"\\(.)", r"\1", m.group(1))
    return stem if stem.startswith("/") else None


# ---- Istio VirtualService
def istio_queries(cx: Context, res: Resource, value, at: Span, where: str) -> list[t.QueryMatch] | None:
    """`match.queryParams`: {name: {exact|prefix|regex: v}}; `{}` is presence."""
    if not isinstance(value, YMap):
        return None
    out = []
    for name, test in value.items():
        if isinstance(test, YMap) and not test:
            out.append(t.QueryMatch.make(name=str(name), kind="present", span=value.at(name), spans={}))
            continue
        kind, text = next(iter(test.items()), (None, None)) if isinstance(test, YMap) else (None, None)
        if kind not in _QUERY_KINDS or not isinstance(text, str) or len(test) != 1:
            return None
        out.append(t.QueryMatch.make(name=str(name), kind=_QUERY_KINDS[kind], value=text, span=value.at(name),
                                     spans={}))
    cx.imported(res, f"{where}.queryParams")
    return out


def istio_header_ops(cx: Context, res: Resource, headers: YMap, where: str) -> list[t.HeaderOp] | None:
    """`headers.request|response.{set,add,remove}`; None (and said so) when
    one operation cannot be expressed: the route's operations are all or nothing."""
    ops: list[t.HeaderOp] = []
    for side in ("request", "response"):
        part = headers.get(side)
        if part is None:
            continue
        if not isinstance(part, YMap):
            cx.refuse(res, f"{where}.headers.{side}", headers.at(side), "not a mapping")
            return None
        for key in part:
            if key not in ("set", "add", "remove"):
                cx.refuse(res, f"{where}.headers.{side}.{key}", part.key_at(key), "unknown header operation; the "
                          "route's header operations are left out", "the headers services see")
                return None
        removes = part.get("remove")
        for i, name in enumerate(removes if isinstance(removes, YSeq) else []):
            op = _op(cx, res, side, "remove", str(name), None, removes.at(i), f"{where}.headers.{side}.remove")
            if op is None:
                return None
            ops.append(op)
        for verb in ("set", "add"):
            pairs = part.get(verb)
            for name, value in (pairs.items() if isinstance(pairs, YMap) else []):
                op = _op(cx, res, side, verb, str(name), value, pairs.at(name), f"{where}.headers.{side}.{verb}")
                if op is None:
                    return None
                ops.append(op)
    for key in headers:
        if key not in ("request", "response"):
            cx.refuse(res, f"{where}.headers.{key}", headers.key_at(key), "unknown header section")
    cx.imported(res, f"{where}.headers")
    return ops


def header_name_problem(name: str) -> str | None:
    """Why the language cannot hold this header name (MP210's and MP214's rules), or None."""
    from ..checks.controls import control_char
    from ..checks.headers import _HEADER

    if not name or control_char(name) or not _HEADER.fullmatch(name):
        return "is not an HTTP header name"
    return None


def _op(cx: Context, res: Resource, side: str, verb: str, name: str, value, at: Span, where: str) -> t.HeaderOp | None:
    from ..checks.controls import HEADER_VALUE_ALLOWS, control_char

    name = name.lower()
    why = header_name_problem(name) or forbidden_header(side, name)
    if why is None and value is not None and control_char(str(value), HEADER_VALUE_ALLOWS):
        why = "has a value with a control character"
    if why is None and value is not None and not isinstance(value, (str, int, float)):
        why = "has a value that is not a string"
    if why is None and value is not None and _FORMATTER.search(str(value)):
        why = "takes its value from an Envoy substitution (`%...%`), which the language writes literally"
    if why is not None:
        cx.refuse(res, where, at, f"`{name}` {why}; the route's header operations are left out",
                  "the headers services see")
        return None
    text = None if value is None else ("true" if value is True else "false" if value is False else str(value))
    return t.HeaderOp.make(side=side, op=verb, name=name, value=text, span=at, spans={})


def istio_rewrite(cx: Context, res: Resource, rw, at: Span, where: str):
    """(Rewrite, the prefix a `uriRegexRewrite` replaces or None), or None when
    not expressible. `rewrite.uri` replaces the matched prefix (or the whole
    exact path); `rewrite.authority` the Host."""
    if not isinstance(rw, YMap):
        return None
    for key in rw:
        if key not in ("uri", "authority", "uriRegexRewrite"):
            cx.refuse(res, f"{where}.rewrite.{key}", rw.key_at(key), "only `uri`, `authority` and a prefix "
                      "`uriRegexRewrite` are expressible; the rewrite is left out", "the paths services see")
            return None
    uri, authority = rw.get("uri"), rw.get("authority")
    regex = rw.get("uriRegexRewrite")
    if regex is not None:
        # `{match: "^P", rewrite: R}` replaces a leading P: the language's rewrite of the
        # matched prefix, when the route matches that same prefix (rewrite_fits checks it)
        stem = regex_prefix(str(regex.get("match")) + ".*") if isinstance(regex, YMap) and \
            str(regex.get("match") or "").startswith("^") else None
        target = regex.get("rewrite") if isinstance(regex, YMap) else None
        if stem is None or not isinstance(target, str) or "\\" in target or uri is not None:
            cx.refuse(res, f"{where}.rewrite.uriRegexRewrite", rw.at("uriRegexRewrite"), "only a rewrite of a "
                      "leading literal (`match: ^/prefix`) is expressible; the rewrite is left out",
                      "the paths services see")
            return None
        uri = target
        rw_prefix = stem
    else:
        rw_prefix = None
    if uri is not None and not str(uri).startswith("/"):
        cx.refuse(res, f"{where}.rewrite.uri", rw.at("uri"), "does not start with `/`", "the paths services see")
        return None
    if authority is not None and _bad_host(cx, res, str(authority), rw.at("authority"), f"{where}.rewrite.authority"):
        return None
    cx.imported(res, f"{where}.rewrite")
    return t.Rewrite.make(path=None if uri is None else str(uri), host=None if authority is None else str(authority),
                          span=at, spans={}), rw_prefix


def _bad_host(cx: Context, res: Resource, host: str, at: Span, where: str) -> bool:
    from ..checks.hosts import host_problem

    why = host_problem(host, wildcard=False, port=True)
    if why is not None:
        cx.refuse(res, where, at, f"`{host}` {why}; left out", "routing")
    return why is not None


def rewrite_fits(cx: Context, res: Resource, m: t.Match, rewrite: t.Rewrite | None, at: Span, where: str,
                 stem: str | None = None) -> bool:
    """Istio rewrites the prefix the route matched (a route without a uri match
    matches the prefix `/`); a regex match has no prefix to rewrite."""
    if rewrite is None or rewrite.path is None:
        return True
    if stem is not None and not (len(m.paths) == 1 and m.paths[0].kind == "prefix" and m.paths[0].value == stem):
        cx.refuse(res, f"{where}.rewrite.uriRegexRewrite", at, f"replaces `{stem}` on a route that does not match "
                  "that prefix: the language replaces the matched part only; the match entry is left out", "routing")
        return False
    if any(p.kind == "regex" for p in m.paths):
        cx.refuse(res, f"{where}.rewrite.uri", at, "rewrites a path matched by regex: the language has no matched "
                  "part to replace; the match entry is left out", "routing")
        return False
    if not m.paths:  # Envoy's prefix_rewrite on the route's implicit `/` prefix
        m.paths.append(t.PathPattern.make(kind="prefix", value="/", span=m.span, spans={}))
    return True


def istio_cors(cx: Context, res: Resource, policy, at: Span, where: str) -> t.Cors | None:
    if not isinstance(policy, YMap):
        return None
    origins: list[str] = []
    raw = policy.get("allowOrigins")
    for i, o in enumerate(raw if isinstance(raw, YSeq) else []):
        exact = o.get("exact") if isinstance(o, YMap) else None
        if isinstance(o, YMap) and (o.get("regex") in (".*", "*") or o.get("prefix") == ""):
            exact = "*"
        if not isinstance(exact, str) or len(o) != 1:
            cx.refuse(res, f"{where}.corsPolicy.allowOrigins[{i}]", raw.at(i), "only exact origins (and `*`) are "
                      "expressible; the CORS policy is left out", "the responses browsers get")
            return None
        origins.append(exact)
    for o in items_of(policy.get("allowOrigin")):  # deprecated: exact strings
        origins.append(str(o))
    if not origins:
        cx.refuse(res, f"{where}.corsPolicy", at, "allows no origin; left out")
        return None
    credentials = policy.get("allowCredentials") is True
    if "*" in origins and credentials:
        cx.refuse(res, f"{where}.corsPolicy", at, "allows any origin with credentials (Envoy echoes the origin; "
                  "the language refuses `*` with `credentials`, as browsers do); the CORS policy is left out",
                  "the responses browsers get")
        return None
    cors = t.Cors.make(origins=origins, span=at, spans={})
    cors.methods = [str(m).upper() for m in items_of(policy.get("allowMethods"))]
    bad = [m for m in cors.methods if m not in t.HTTP_METHODS]
    if bad:
        cx.refuse(res, f"{where}.corsPolicy.allowMethods", policy.at("allowMethods"), f"method(s) "
                  f"{', '.join(bad)} cannot be written; the CORS policy is left out", "the responses browsers get")
        return None
    cors.headers = [str(h).lower() for h in items_of(policy.get("allowHeaders"))]
    cors.expose = [str(h).lower() for h in items_of(policy.get("exposeHeaders"))]
    bad = [h for h in cors.headers + cors.expose if h != "*" and header_name_problem(h)]
    if bad:
        cx.refuse(res, f"{where}.corsPolicy", at, f"`{bad[0]}` is not an HTTP header name; the CORS policy is left "
                  "out", "the responses browsers get")
        return None
    cors.credentials = credentials
    if "maxAge" in policy:
        cors.max_age_ms = cx.duration_ms(res, policy, "maxAge", f"{where}.corsPolicy")
    for key in policy:
        if key == "unmatchedPreflights" and policy[key] in ("FORWARD", "UNSPECIFIED"):
            continue  # Istio's default: other origins' preflights go on as requests, as the language's do
        if key not in ("allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders",
                       "allowCredentials", "maxAge"):
            cx.refuse(res, f"{where}.corsPolicy.{key}", policy.key_at(key), "the language has no equivalent")
    cx.imported(res, f"{where}.corsPolicy")
    return cors


def status_codes(conditions: list[str]) -> tuple[list[str], list[int], list[str]]:
    """Istio's `retryOn`: (named conditions, status codes, unknown entries)."""
    named, codes, unknown = [], [], []
    for c in conditions:
        if c.isdigit() and 100 <= int(c) <= 599:
            codes.append(int(c))
        elif c in t.RETRY_CONDITIONS:
            named.append(c)
        else:
            unknown.append(c)
    return named, codes, unknown


# ---- Gateway API
def gateway_queries(cx: Context, res: Resource, entry: YMap, where: str) -> list[t.QueryMatch] | None:
    params = entry.get("queryParams")
    out = []
    for i, q in enumerate(params if isinstance(params, YSeq) else []):
        qtype = str(q.get("type") or "Exact") if isinstance(q, YMap) else ""
        if qtype not in ("Exact", "RegularExpression") or not isinstance(q.get("value"), str) or not q.get("name"):
            cx.refuse(res, f"{where}.queryParams[{i}]", params.at(i), "only Exact and RegularExpression query "
                      "matches are expressible; the match is left out", "routing")
            return None
        out.append(t.QueryMatch.make(name=str(q["name"]), kind="exact" if qtype == "Exact" else "regex",
                                     value=q["value"], span=params.at(i), spans={}))
    cx.imported(res, f"{where}.queryParams")
    return out


def gateway_header_filter(cx: Context, res: Resource, f: YMap, side: str, at: Span,
                          where: str) -> list[t.HeaderOp] | None:
    """RequestHeaderModifier / ResponseHeaderModifier: remove, then set, then add."""
    body = f.get("requestHeaderModifier" if side == "request" else "responseHeaderModifier")
    if not isinstance(body, YMap):
        cx.refuse(res, where, at, "the filter has no modifier; left out")
        return None
    ops: list[t.HeaderOp] = []
    removes = body.get("remove")
    for i, name in enumerate(removes if isinstance(removes, YSeq) else []):
        op = _op(cx, res, side, "remove", str(name), None, removes.at(i), f"{where}.remove")
        if op is None:
            return None
        ops.append(op)
    for verb in ("set", "add"):
        pairs = body.get(verb)
        for i, pair in enumerate(pairs if isinstance(pairs, YSeq) else []):
            if not isinstance(pair, YMap) or "name" not in pair or "value" not in pair:
                cx.refuse(res, f"{where}.{verb}[{i}]", pairs.at(i), "needs `name` and `value`; the filter is left out")
                return None
            op = _op(cx, res, side, verb, str(pair["name"]), pair["value"], pairs.at(i), f"{where}.{verb}")
            if op is None:
                return None
            ops.append(op)
    cx.imported(res, where)
    return ops


def gateway_rewrite(cx: Context, res: Resource, f: YMap, at: Span, where: str):
    """URLRewrite: (Rewrite, path kind) with kind None, "full" or "prefix"; False when not expressible."""
    body = f.get("urlRewrite")
    if not isinstance(body, YMap):
        cx.refuse(res, where, at, "the filter has no `urlRewrite`; left out")
        return False
    host = body.get("hostname")
    path = body.get("path")
    kind, value = None, None
    if isinstance(path, YMap):
        ptype = path.get("type")
        if ptype == "ReplaceFullPath" and isinstance(path.get("replaceFullPath"), str):
            kind, value = "full", path["replaceFullPath"]
        elif ptype == "ReplacePrefixMatch" and isinstance(path.get("replacePrefixMatch"), str):
            kind, value = "prefix", path["replacePrefixMatch"]
        else:
            cx.refuse(res, f"{where}.urlRewrite.path", body.at("path"), "only ReplaceFullPath and "
                      "ReplacePrefixMatch are expressible; the rule is left out", "routing")
            return False
        if not value.startswith("/"):
            cx.refuse(res, f"{where}.urlRewrite.path", body.at("path"), "does not start with `/`; the rule is "
                      "left out", "routing")
            return False
    if host is None and kind is None:
        cx.refuse(res, where, at, "rewrites nothing; left out")
        return False
    if host is not None and _bad_host(cx, res, str(host), body.at("hostname"), f"{where}.urlRewrite.hostname"):
        return False
    cx.imported(res, where)
    return t.Rewrite.make(path=value, host=None if host is None else str(host), span=at, spans={}), kind


def split_for_prefix_rewrite(rule: t.RouteRule, replacement: str) -> list[t.RouteRule]:
    """Gateway API's ReplacePrefixMatch replaces the matched path *elements*:
    with `PathPrefix /foo`, `/foo` becomes the replacement and `/foo/x`
    becomes `<replacement>/x` (`/` + `x` when the replacement is `/`). The
    language replaces a glob's text before `**`, so the exact and the glob
    halves of the element-wise prefix become two rules with their own rewrite."""
    exact = [p for p in rule.match.paths if p.kind == "exact"]
    globs = [p for p in rule.match.paths if p.kind == "glob"]
    below = replacement.rstrip("/") + "/"
    out = []
    if exact:
        r = rule.model_copy(deep=True)
        r.match.paths = [p.model_copy() for p in exact]
        r.rewrite.path = replacement
        out.append(r)
    r = rule.model_copy(deep=True)
    r.match.paths = [p.model_copy() for p in globs] or [t.PathPattern.make(kind="glob", value="/**",
                                                                          span=rule.match.span, spans={})]
    r.rewrite.path = below
    out.append(r)
    return out
