"""Route rules as Gateway API-style HTTPRoute and GRPCRoute rules, shared by
the gateway-api target (gateway.networking.k8s.io) and the linkerd target
(policy.linkerd.io HTTPRoute, the same shape).

Policy route rules are first-match in order; a Gateway-style route picks
the most specific match instead (an exact path over a prefix, a longer
prefix over a shorter one, then a method, then more headers; rule order
only breaks ties, and regular expressions rank as the implementation
likes: Istio below every other match, longer first). `order_problems` finds
rules whose order the route would not keep for some request both could
match; each is MP701, never a silent reorder.

Versions are reached through one Service per version, `<service>-<version>`
(selecting the service's pods by `app` and the version's labels), because a
backendRef names a Service, not a subset.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..model.types import HeaderMatch, PathPattern, RouteRule, Service
from ..plan import RulePlan, ServicePlan
from ..plan.hosts import version_service
from ..semantics.patterns import glob_regex
from ..span import Span
from .envoy.values import integer_weights
from .meshproxy.lower import anchored, literal

MAX_RULES = 16  # per route (the CRDs' maxItems)
MAX_MATCHES = 64  # per rule
MAX_ROUTE_MATCHES = 128  # across a route's rules (CEL rule of the CRDs)


@dataclass
class Dialect:
    """What the resource kind and the implementation can hold."""

    target: str
    regex: bool  # RegularExpression matches (a flavour, or Linkerd)
    mirror: bool
    redirect_codes: tuple[int, ...]
    timeouts: bool = True
    # the implementation's order of RegularExpression matches is known (Istio's, see _rank)
    regex_rank: bool = False
    reject: Callable[[str, Span | None, str], None] = lambda construct, span, why: None
    # Waived constructs ([compile.<target>] waive) and where their uses are reported (MP706).
    waive: tuple[str, ...] = ()
    waived: Callable[[str, str, Span | None], None] = lambda key, construct, span: None

    def drop(self, key: str, construct: str, span: Span | None, why: str) -> bool:
        """A use of `key` this dialect cannot hold: True when it is waived
        (reported; the caller leaves it out and goes on), else MP701 and False."""
        if key in self.waive:
            self.waived(key, construct, span)
            return True
        self.reject(construct, span, why)
        return False


def duration(ms: int) -> str:
    """A Gateway API duration (GEP-2257): at most 4 parts of at most 5 digits."""
    out = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0s"


def path_match(p: PathPattern, d: Dialect, where: str) -> dict | None:
    if p.kind == "exact":
        return {"type": "Exact", "value": p.value}
    if p.kind == "prefix" and p.value == "/":
        return {"type": "PathPrefix", "value": "/"}
    if not d.regex:
        d.reject(f"the {p.kind} path `{p.value}` {where}", p.span,
                 "it needs a RegularExpression match, whose dialect the standard channel leaves open")
        return None
    if p.kind == "prefix":
        rx = "^" + literal(p.value) + "(?s:.*)$"
    elif p.kind == "glob":
        rx = anchored(glob_regex(p.value, escape=literal))
    else:
        rx = anchored(p.value)
    return {"type": "RegularExpression", "value": rx}


def header_match(h: HeaderMatch, d: Dialect, where: str) -> dict | None:
    if h.kind == "exact":
        return {"type": "Exact", "name": h.name, "value": h.value}
    if h.kind == "absent":
        d.reject(f"the absent header `{h.name}` {where}", h.span, "a route cannot match a header's absence")
        return None
    if not d.regex:
        d.reject(f"the header test `{h.name}` ({h.kind}) {where}", h.span,
                 "it needs a RegularExpression match, whose dialect the standard channel leaves open")
        return None
    rx = {"prefix": "^" + literal(h.value or "") + "(?s:.*)$", "regex": anchored(h.value or ""),
          "present": "(?s:.*)"}[h.kind]
    return {"type": "RegularExpression", "name": h.name, "value": rx}


def http_matches(rule: RouteRule, d: Dialect, where: str, callers_chosen: bool = False) -> list[dict] | None:
    """The rule's match as HTTPRouteMatches (methods x paths, headers on each);
    [] matches everything. None after an MP701. callers_chosen: the route
    holding this rule serves only callers its `from` names (a GAMMA
    consumer route), so the `from` is already decided."""
    m = rule.match
    if m.sources and not callers_chosen:
        d.reject(f"`from` {where}", m.span, "a route cannot match on the caller")
        return None
    names = [h.name for h in m.headers]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        d.reject(f"a second test of header `{dup}` {where}", m.span, "a route match holds one test per header name")
        return None
    headers = [header_match(h, d, where) for h in m.headers]
    paths = [path_match(p, d, where) for p in m.paths]
    if None in headers or None in paths:
        return None
    if not (m.methods or paths or headers):
        return []
    out = []
    for method, path in itertools.product(list(dict.fromkeys(m.methods)) or [None], paths or [None]):
        one: dict = {}
        if path is not None:
            one["path"] = path
        if method is not None:
            one["method"] = method
        if headers:
            one["headers"] = headers
        out.append(one)
    if len(out) > MAX_MATCHES:
        d.reject(f"{len(out)} method and path combinations {where}", m.span,
                 f"a route rule holds at most {MAX_MATCHES} matches")
        return None
    return out


# ---- precedence ---------------------------------------------------------------------

def _rank(m: dict, regex_rank: bool = False) -> tuple | None:
    """Gateway API precedence of a match, higher first; None: implementation-specific
    (a regex path), unless regex_rank: Istio's GAMMA translation (pilot's
    sortHTTPRoutes, one route per match) ranks Exact over PathPrefix over
    RegularExpression, then the longer value (a regex's length too), then a
    method, then more headers; equal ranks keep rule order."""
    path = m.get("path", {"type": "PathPrefix", "value": "/"})
    if path["type"] == "RegularExpression" and not regex_rank:
        return None
    kind = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}[path["type"]]
    return (kind, len(path["value"]), "method" in m, len(m.get("headers", [])))


_RX_META = set(".^$*+?()[]{}|\\")


def _lead(rx: str) -> str:
    """A literal every string matching the anchored regex rx starts with
    ("" when none is certain: no anchor, an alternation, a flag group)."""
    if not rx.startswith("^") or "|" in rx:
        return ""
    i = 1
    if rx.startswith("(?:", i):  # the group the targets wrap a glob or regex in
        i += 3
    if rx.startswith("^", i):  # a policy regex's own anchor, at the start already
        i += 1
    out: list[str] = []
    while i < len(rx):
        c = rx[i]
        if c == "\\" and i + 1 < len(rx) and not rx[i + 1].isalnum():
            out.append(rx[i + 1])
            i += 2
            continue
        if c in _RX_META:
            if c in "*?{+" and out:
                out.pop()  # the last character is quantified: maybe absent or repeated
            if c == ")" and rx[i + 1:i + 2] in ("*", "?", "{", "+"):
                return ""  # the wrapping group itself is quantified
            break
        out.append(c)
        i += 1
    return "".join(out)


def _paths_disjoint(x: dict, y: dict) -> bool:
    """No path matches both (one of them a RegularExpression): they start
    with literals neither of which extends the other."""
    if x["type"] != "RegularExpression":
        x, y = y, x
    if x["type"] != "RegularExpression":
        return False
    lx = _lead(x["value"])
    if y["type"] == "RegularExpression":
        ly = _lead(y["value"])
    elif y["type"] == "Exact":
        return not y["value"].startswith(lx)
    else:  # PathPrefix: every path it matches starts with the prefix (without a trailing slash)
        ly = y["value"].rstrip("/")
    return not (lx.startswith(ly) or ly.startswith(lx))


def _disjoint(a: dict, b: dict) -> bool:
    """Provably no request matches both."""
    if "method" in a and "method" in b and a["method"] != b["method"]:
        return True
    pa, pb = a.get("path"), b.get("path")
    if pa and pb and _paths_disjoint(pa, pb):
        return True
    if pa and pb and pa["type"] == pb["type"] == "Exact" and pa["value"] != pb["value"]:
        return True
    for x, y in ((pa, pb), (pb, pa)):
        if x and y and x["type"] == "Exact" and y["type"] == "PathPrefix" and not _segment_prefix(y["value"], x["value"]):
            return True
    ha = {h["name"]: h["value"] for h in a.get("headers", []) if h["type"] == "Exact"}
    for h in b.get("headers", []):
        if h["type"] == "Exact" and h["name"] in ha and ha[h["name"]] != h["value"]:
            return True
    return False


def _segment_prefix(prefix: str, path: str) -> bool:
    p = prefix.rstrip("/")
    return not p or path == p or path.startswith(p + "/")


def _covered(a: dict, b: dict, earlier: list[dict], regex_rank: bool) -> bool:
    """The earlier rule holds a match of exactly the requests both a (one of
    its matches, without a path) and b match, ranked at least as b: it
    takes them (istio_layout adds such matches)."""
    path = a.get("path")
    if b.get("path") is None or not (path is None or (path["type"] == "PathPrefix" and not path["value"].rstrip("/"))):
        return False
    meet = _meet(a, b)
    if meet is None or meet not in earlier:
        return False
    km, kb = _rank(meet, regex_rank), _rank(b, regex_rank)
    return km is not None and kb is not None and km >= kb


def order_problems(rules: list[tuple[RouteRule, list[dict]]],
                   regex_rank: bool = False) -> list[tuple[RouteRule, RouteRule]]:
    """Pairs (earlier, later) where some request matching both would be taken
    by the later rule: it ranks higher, or the two cannot be ranked."""
    out = []
    for (ri, mi), (rj, mj) in itertools.combinations(rules, 2):
        for a, b in itertools.product(mi or [{}], mj or [{}]):
            if _disjoint(a, b) or _covered(a, b, mi, regex_rank):
                continue
            ka, kb = _rank(a, regex_rank), _rank(b, regex_rank)
            if ka is None or kb is None or kb > ka:
                out.append((ri, rj))
                break
    return out


# Every path, as a regular expression: what a catch-all (no path, PathPrefix
# "/") is rewritten to when it must rank below earlier regular expressions.
EVERY_PATH_RX = "^(?s:.*)$"


def _path_as_regex(path: dict | None) -> dict | None:
    """A PathPrefix (or no path) as the regular expression matching the same
    paths; None for other kinds."""
    if path is None or (path["type"] == "PathPrefix" and not path["value"].rstrip("/")):
        return {"type": "RegularExpression", "value": EVERY_PATH_RX}
    if path["type"] == "PathPrefix":
        return {"type": "RegularExpression", "value": "^" + literal(path["value"].rstrip("/")) + "(?:/(?s:.*))?$"}
    return None


def _meet(e: dict, l: dict) -> dict | None:
    """One match holding exactly the requests both e (which tests no path)
    and l match, with l's path; None when a match cannot hold it (two
    different tests of one header)."""
    out: dict = {"path": l["path"]}
    if e.get("method") or l.get("method"):
        out["method"] = e.get("method") or l.get("method")
    headers = {h["name"]: h for h in l.get("headers", [])}
    for h in e.get("headers", []):
        if h["name"] in headers and headers[h["name"]] != h:
            return None
        headers[h["name"]] = h
    if headers:
        out["headers"] = list(headers.values())
    return out


def istio_layout(rules: list[tuple[RouteRule, dict]]) -> list[tuple[RouteRule, list[dict]]]:
    """First-match order in Istio's order (see _rank), where a rewrite that
    keeps every rule's requests can get it: a later rule's PathPrefix (or
    catch-all) that outranks an earlier regular expression it overlaps is
    written as the same paths' regular expression, shorter than most; an
    earlier rule without a path that a later rule's path outranks gets that
    path as one more match of its own (exactly the requests both match,
    which then tie and keep rule order). What this leaves is still
    checked by order_problems. Returns the (rule, matches) pairs."""
    for _ in range(4):
        changed = False
        for (_re, ed), (_rl, ld) in itertools.combinations(rules, 2):
            em, lm = ed.get("matches") or [{}], ld.get("matches") or [{}]
            for e, j in itertools.product(list(em), range(len(lm))):
                l = lm[j]
                if _disjoint(e, l) or _rank(l, True) <= _rank(e, True):
                    continue
                ep, lp = e.get("path"), l.get("path")
                if ep is not None and ep["type"] == "RegularExpression" and (rx := _path_as_regex(lp)) is not None:
                    lm[j] = {**l, "path": rx}
                    ld["matches"] = lm
                    changed = True
                elif (ep is None or (ep["type"] == "PathPrefix" and not ep["value"].rstrip("/"))) and lp is not None:
                    meet = _meet(e, l)
                    if meet is not None and meet not in em:
                        em.append(meet)
                        ed["matches"] = em
                        changed = True
        if not changed:
            break
    return [(r, d.get("matches", [])) for r, d in rules]


# ---- actions ---------------------------------------------------------------------------

def backend_refs(sp: ServicePlan, weights: dict[str, float], port: int, d: Dialect, span, where: str) -> list[dict] | None:
    """Weighted refs to the per-version Services (the Service itself when it has no versions)."""
    if not weights:
        return [{"name": sp.name, "port": port}]
    names = list(weights)
    if len(names) == 1:
        return [{"name": version_service(sp.name, names[0]), "port": port}]
    values = [weights[v] for v in names]
    # equal shares (every version of a route-less service) are 1:1:1, whatever 100/n is in decimals
    ints = [1] * len(values) if len(set(values)) == 1 else integer_weights(values)
    if ints is None:
        d.reject(f"the split {where}", span, "route weights are integers: a weight with more than six decimals")
        return None
    return [{"name": version_service(sp.name, v), "port": port, "weight": w} for v, w in zip(names, ints)]


def mirror_filter(sp: ServicePlan, mirror: tuple[str, float], port: int) -> dict:
    version, percent = mirror
    ref = {"name": version_service(sp.name, version), "port": port}
    body: dict = {"backendRef": ref}
    if percent != 100.0:
        if percent == int(percent):
            body["percent"] = int(percent)
        else:
            body["fraction"] = {"numerator": int(round(percent * 10000)), "denominator": 1_000_000}
    return {"type": "RequestMirror", "requestMirror": body}


def redirect_filter(uri: str, status: int, d: Dialect, span, where: str) -> dict | None:
    parts = urlsplit(uri)
    if parts.query or parts.fragment or uri.endswith("?") or uri.endswith("#"):
        d.reject(f"the redirect to `{uri}` {where}", span, "a redirect holds a path only, not a query or fragment")
        return None
    if status not in d.redirect_codes:
        d.reject(f"the redirect status {status} {where}", span,
                 "a redirect's status is one of " + ", ".join(map(str, d.redirect_codes)))
        return None
    body: dict = {"statusCode": status}
    if parts.scheme and parts.netloc:
        body["scheme"] = parts.scheme
        body["hostname"] = parts.hostname
        if parts.port:
            body["port"] = parts.port
    if parts.path:
        body["path"] = {"type": "ReplaceFullPath", "replaceFullPath": parts.path}
    return {"type": "RequestRedirect", "requestRedirect": body}


def http_rule(sp: ServicePlan, rp: RulePlan, port: int, d: Dialect, callers_chosen: bool = False) -> dict | None:
    """One HTTPRoute rule for a rule plan (the route's rule, or the default one)."""
    svc: Service = sp.service
    rule = rp.rule
    where = f"in rule {rule.index + 1} of route `{svc.name}`" if rule is not None else f"of service `{svc.name}`"
    span = rule.span if rule is not None else svc.span
    out: dict = {}
    if rule is not None:
        matches = http_matches(rule, d, where, callers_chosen)
        if matches is None:
            return None
        if matches:
            out["matches"] = matches
    if rp.kind in ("forward", "default"):
        refs = backend_refs(sp, rp.weights, port, d, span, where)
        if refs is None:
            return None
        out["backendRefs"] = refs
        if rp.mirror is not None:
            if not d.mirror:
                if not d.drop("mirror", f"`mirror` {where}", rule.action.mirror.span,
                              "the target has no request mirroring"):
                    return None
            else:
                out["filters"] = [mirror_filter(sp, rp.mirror, port)]
        if rp.timeout_ms is not None:
            if not d.timeouts:
                if not d.drop("timeout", f"`timeout` {where}",
                              rule.at("timeout") if rule and rule.timeout_ms else svc.at("timeout"),
                              "this route kind has no timeouts"):
                    return None
            else:
                out["timeouts"] = {"request": duration(rp.timeout_ms)}
    elif rp.kind == "redirect":
        f = redirect_filter(rule.action.uri, rule.action.status, d, rule.action.span, where)
        if f is None:
            return None
        out["filters"] = [f]
    else:
        d.reject(f"`respond` {where}", rule.action.span, "a route cannot answer by itself")
        return None
    return out


def http_rules(sp: ServicePlan, port: int, d: Dialect, plans: list[RulePlan] | None = None,
               callers_chosen: bool = False) -> list[dict] | None:
    """Every rule of the service's route (or the default one), or of `plans`
    (the rules one group of callers meets, see http_matches), in order;
    None after an MP701."""
    rules, pairs, failed = [], [], False
    plans = sp.rule_plans if plans is None else plans
    for rp in plans:
        r = http_rule(sp, rp, port, d, callers_chosen)
        if r is None:
            failed = True
            continue
        rules.append(r)
        if rp.rule is not None:
            pairs.append((rp.rule, r.get("matches", [])))
    if failed:
        return None
    if d.regex_rank:  # Istio's order is known: lay the matches out for it where that keeps their meaning
        pairs = istio_layout([(rp.rule, r) for rp, r in zip(plans, rules) if rp.rule is not None])
    for earlier, later in order_problems(pairs, d.regex_rank):
        d.reject(f"the order of rules {earlier.index + 1} and {later.index + 1} of route `{sp.name}`", later.span,
                 f"a request both match would take rule {later.index + 1}: routes prefer the more specific match "
                 "(exact path, longer prefix, a method, more headers; regular expressions rank as the mesh likes), "
                 "not the first")
        failed = True
    if len(rules) > MAX_RULES or sum(len(r.get("matches", [])) for r in rules) > MAX_ROUTE_MATCHES \
            or any(len(r.get("matches", [])) > MAX_MATCHES for r in rules):
        d.reject(f"the {len(rules)} rules of route `{sp.name}`", sp.service.span,
                 f"a route holds at most {MAX_RULES} rules and {MAX_ROUTE_MATCHES} matches")
        failed = True
    return None if failed else rules


def grpc_rules(sp: ServicePlan, port: int, d: Dialect) -> list[dict] | None:
    """GRPCRoute rules: gRPC methods are POSTs to `/package.Service/Method`."""
    rules, failed = [], False
    for rp in sp.rule_plans:
        rule = rp.rule
        where = f"in rule {rule.index + 1} of route `{sp.name}`" if rule else f"of service `{sp.name}`"
        if rule is not None and rule.match.methods and "POST" not in rule.match.methods:
            continue  # never holds for a gRPC call
        out: dict = {}
        if rule is not None:
            m = rule.match
            if m.sources:
                d.reject(f"`from` {where}", m.span, "a route cannot match on the caller")
                failed = True
                continue
            methods = [_grpc_method(p) for p in m.paths]
            if None in methods:
                bad = m.paths[methods.index(None)]
                d.reject(f"the path `{bad.value}` {where}", bad.span,
                         "a GRPCRoute matches an exact `/package.Service/Method` or a whole service `/package.Service/`")
                failed = True
                continue
            headers = [header_match(h, d, where) for h in m.headers]
            if None in headers:
                failed = True
                continue
            matches = [{**({"method": mm} if mm else {}), **({"headers": headers} if headers else {})}
                       for mm in (methods or [None])]
            matches = [x for x in matches if x]
            if matches:
                out["matches"] = matches
        if rp.kind not in ("forward", "default"):
            d.reject(f"`{rp.kind}` {where}", rule.action.span, "a GRPCRoute only forwards")
            failed = True
            continue
        if rp.timeout_ms is not None and not d.drop(
                "timeout", f"`timeout` {where}", rule.at("timeout") if rule and rule.timeout_ms
                else sp.service.at("timeout"), "GRPCRoute has no timeouts in the standard channel"):
            failed = True
            continue
        refs = backend_refs(sp, rp.weights, port, d, rule.span if rule else sp.service.span, where)
        if refs is None:
            failed = True
            continue
        out["backendRefs"] = refs
        if rp.mirror is not None:
            if not d.mirror:
                if not d.drop("mirror", f"`mirror` {where}", rule.action.mirror.span,
                              "the target has no request mirroring"):
                    failed = True
                    continue
            else:
                out["filters"] = [mirror_filter(sp, rp.mirror, port)]
        rules.append(out)
    return None if failed else rules


def _grpc_method(p: PathPattern) -> dict | None:
    v = p.value
    parts = v.split("/")
    if p.kind == "exact" and len(parts) == 3 and parts[0] == "" and parts[1] and parts[2]:
        return {"type": "Exact", "service": parts[1], "method": parts[2]}
    if p.kind in ("prefix", "glob") and len(parts) == 3 and parts[0] == "" and parts[1] \
            and parts[2] in (("",) if p.kind == "prefix" else ("*",)):
        return {"type": "Exact", "service": parts[1]}
    return None


def version_services(sp: ServicePlan, selector_key: str) -> list[dict]:
    """A Service per version, so routes can weigh versions (backendRefs name Services)."""
    svc = sp.service
    out = []
    for w in sp.workloads:
        if w.version is None:
            continue
        labels = {selector_key: svc.name, **w.labels}
        out.append({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": version_service(svc.name, w.version), "namespace": svc.namespace,
                         "labels": {selector_key: svc.name}},
            "spec": {"selector": labels,
                     "ports": [{"name": f"{p.protocol}-{p.number}", "port": p.number, "targetPort": p.number,
                                **({"appProtocol": "kubernetes.io/h2c"} if p.protocol in ("http2", "grpc") else {})}
                               for p in svc.ports]},
        })
    return out
