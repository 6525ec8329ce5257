"""Ingress gateways: a Gateway (one server per listener) and a VirtualService
bound to it (docs/targets/istio.md, "Ingress: Gateway and VirtualService").

The meaning (docs/semantics.md, "Ingress, tokens and egress"): an ingress
rule picks a SERVICE, and that service's own `route` then applies (versions,
splits, timeouts, retries) with the ingress as the caller. Istio's gateway
applies only the VirtualService bound to it, never the destination's mesh
VirtualService, and a sidecar does not route inbound requests again. So each
ingress rule is MERGED with the routed service's rules: for every rule R of
the service's route, in order, one http rule whose match is the ingress
rule's match and R's match (R's read on the request the ingress rule
delivers: its path rewritten, its request headers changed), whose action
and settings are R's, whose rewrite is the two rewrites composed into one,
and whose header operations are the ingress rule's then R's (responses: R's
then the ingress rule's); the ingress rule's own timeout, retry and fault
replace the service's (plan.ingress_settings). First match wins at both steps, and the product
keeps that order: the first ingress rule that matches, then the first of
the service's rules. What one Istio match cannot hold is MP701 naming it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import NamedTuple

import re2

from ...model.types import HeaderMatch, HeaderOp, Ingress, Match, PathPattern, RouteRule, Service
from ...plan import ingress_settings
from ...semantics.patterns import header_matches, path_matches
from ...semantics.rewrite import fixed_part
from .context import Lowering
from .l7 import cors_policy, fold, header_operations_of
from .names import APP_LABEL, duration, fqdn, percent
from .routing import action, matches, retries, fault

NOT_FOUND = {"status": 404}


def gateway_selector(g: Ingress) -> dict:
    """The gateway's pods: `app: <ingress>` (Istio's gateway Helm chart labels
    a release's pods `app: <release>`; install it under the ingress's name)."""
    return {APP_LABEL: g.name}


def gateway_principal(lw: Lowering, g: Ingress) -> str:
    return f"{lw.mesh.settings.trust_domain}/ns/{g.namespace}/sa/{g.account or g.name}"


def credential_name(g: Ingress, port: int) -> str:
    """The TLS Secret an https listener reads (written by the user: see the docs)."""
    return f"{g.name}-tls-{port}"


def gateway(lw: Lowering, g: Ingress) -> dict | None:
    hosts = list(g.hosts) or ["*"]
    servers = []
    for ls in g.listeners:
        server: dict = {"port": {"number": ls.port, "name": f"{ls.protocol}-{ls.port}",
                                 "protocol": ls.protocol.upper()}, "hosts": hosts}
        if ls.protocol == "https":
            server["tls"] = {"mode": "SIMPLE", "credentialName": credential_name(g, ls.port)}
        servers.append(server)
    if not servers:
        return None
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": g.name, "namespace": g.namespace},
        "spec": {"selector": gateway_selector(g), "servers": servers},
    }


# ---- paths: the service's rules read the path the ingress rule delivers ---------

class _Rewrite:
    """A path rewrite as a function of the path: paths starting with `fixed`
    get it replaced by `to`; `whole`: the whole path becomes `to`."""

    def __init__(self, fixed: str, to: str, whole: bool):
        self.fixed, self.to, self.whole = fixed, to, whole


def _rewrite_of(rule: RouteRule, path: PathPattern | None) -> _Rewrite | None:
    rw = rule.rewrite
    if rw is None or rw.path is None:
        return None
    if path is None:
        return _Rewrite("", rw.path, True)  # no path test: the whole path (semantics/rewrite.py)
    return _Rewrite(fixed_part(path.kind, path.value) or "", rw.path, path.kind == "exact")


def _compose(first: _Rewrite | None, then: _Rewrite | None) -> _Rewrite | None:
    """One rewrite doing `first` and then `then` on paths both matched."""
    if first is None:
        return then
    if then is None:
        return first
    if then.whole:
        return _Rewrite("", then.to, True)
    if first.whole:  # first gives a constant path, which `then` matched
        return _Rewrite("", then.to + first.to[len(then.fixed):], True)
    if len(then.fixed) <= len(first.to):
        return _Rewrite(first.fixed, then.to + first.to[len(then.fixed):], False)
    return _Rewrite(first.fixed + then.fixed[len(first.to):], then.to, False)


def _rewrite_field(rw: _Rewrite | None, host: str | None) -> dict | None:
    out: dict = {}
    if rw is not None:
        out["uriRegexRewrite"] = {"match": "^.*" if rw.whole else "^" + re2.escape(rw.fixed),
                                  "rewrite": rw.to.replace("\\", "\\\\")}
    if host is not None:
        out["authority"] = host
    return out or None


def _literal_prefix(p: PathPattern) -> str | None:
    """A string every path the pattern matches starts with (None: regex)."""
    return None if p.kind == "regex" else fixed_part(p.kind, p.value)


def _as_prefix(p: PathPattern) -> str | None:
    """The prefix a pattern is equivalent to, if it is one: `prefix "x"`,
    or a glob whose only wildcard is a trailing `**`."""
    if p.kind == "prefix":
        return p.value
    if p.kind == "glob" and p.value.endswith("**") and "*" not in p.value[:-2]:
        return p.value[:-2]
    return None


def _implies(a: PathPattern, b: PathPattern) -> bool:
    """Every path `a` matches, `b` matches too (sufficient, not necessary)."""
    if (a.kind, a.value) == (b.kind, b.value):
        return True
    pre, lit = _as_prefix(b), _literal_prefix(a)
    return pre is not None and lit is not None and lit.startswith(pre)


def _delivered_pattern(p: PathPattern, rw: _Rewrite | None) -> PathPattern | bool:
    """A pattern of the service's rule, read on the delivered path, as a
    pattern of the original path; True/False when the rewrite decides it."""
    if rw is None:
        return p
    if rw.whole:
        return path_matches(p, rw.to)  # every delivered path is `rw.to`
    if p.kind == "regex":
        raise _Inexpressible("a regex path after the ingress rule's rewrite")
    lit = fixed_part(p.kind, p.value) or ""
    if lit.startswith(rw.to):  # delivered = to + rest, original = fixed + rest
        return PathPattern.make(kind=p.kind, value=rw.fixed + p.value[len(rw.to):])
    if p.kind == "exact":
        return False  # delivered paths start with `to`, the exact path does not
    if rw.to.startswith(lit):
        # Every delivered path starts with `to`, which already passes the
        # pattern's literal part: a prefix (or `prefix**` glob) always holds.
        if _as_prefix(p) is not None:
            return True
        raise _Inexpressible(f"the path `{p.value}` after the ingress rule's rewrite to `{rw.to}`")
    return False  # the delivered path never starts with the pattern's literal part


class _Inexpressible(Exception):
    pass


def _path_and(ingress_path: PathPattern | None, service_path: PathPattern | None) -> PathPattern | None | bool:
    """One pattern matching exactly the paths both match; False when none
    can (the service's rule never holds after this ingress path)."""
    if ingress_path is None:
        return service_path
    if service_path is None:
        return ingress_path
    for exact, other in ((ingress_path, service_path), (service_path, ingress_path)):
        if exact.kind == "exact":  # one path at most
            return exact if path_matches(other, exact.value) else False
    if _implies(service_path, ingress_path):
        return service_path
    if _implies(ingress_path, service_path):
        return ingress_path
    a, b = _literal_prefix(ingress_path), _literal_prefix(service_path)
    if a is not None and b is not None and not a.startswith(b) and not b.startswith(a):
        return False  # no path starts with both
    raise _Inexpressible(f"the path `{ingress_path.value}` and the route's path `{service_path.value}` together")


# ---- headers, methods, queries: the match of one merged http rule --------------

def _header_tests(ingress_rule: RouteRule, r: RouteRule) -> list[HeaderMatch] | None:
    """R's header tests read on the delivered request: a header the ingress
    rule sets or removes is known (the test is decided); None: R never holds."""
    out = []
    for h in r.match.headers:
        ops = [o for o in ingress_rule.headers if o.side == "request" and o.name == h.name]
        if not ops:
            out.append(h)
            continue
        drop, values = fold(ops)
        if not drop:
            raise _Inexpressible(f"the header test `{h.name}` after the ingress rule adds to it")
        if not header_matches(h, {h.name: values[0]} if values else {}):
            return None
    return out


def _merged_match(g: Ingress, ingress_rule: RouteRule, r: RouteRule | None, path: PathPattern | None,
                  rw: _Rewrite | None, r_path: PathPattern | None) -> Match | None:
    """The match of one merged http rule; None when no request can meet both."""
    im = ingress_rule.match
    methods = list(im.methods)
    headers = list(im.headers)
    queries = list(im.queries)
    pattern = path
    if r is not None:
        m = r.match
        if m.sources and g.name not in {s.name for s in m.sources}:
            return None  # `from X` names a service; the caller here is the ingress
        if m.methods:
            methods = [x for x in methods if x in m.methods] if methods else list(m.methods)
            if not methods:
                return None
        tests = _header_tests(ingress_rule, r)
        if tests is None:
            return None
        for h in tests:
            if any(x.name == h.name and (x.kind, x.value) != (h.kind, h.value) for x in headers):
                raise _Inexpressible(f"two tests of header `{h.name}` (the ingress rule's and the route's)")
            if not any(x.name == h.name for x in headers):
                headers.append(h)
        for q in m.queries:
            if any(x.name == q.name and (x.kind, x.value) != (q.kind, q.value) for x in queries):
                raise _Inexpressible(f"two tests of query parameter `{q.name}` (the ingress rule's and the route's)")
            if not any(x.name == q.name for x in queries):
                queries.append(q)
        if r_path is not None:
            got = _delivered_pattern(r_path, rw)
            if got is False:
                return None
            if got is not True:
                pattern = _path_and(path, got)
                if pattern is False:
                    return None
    return Match.make(methods=methods, paths=[pattern] if pattern is not None else [], headers=headers,
                      queries=queries)


# ---- the merged http rules --------------------------------------------------------

def _route_rules(lw: Lowering, svc: Service) -> list[RouteRule | None | str]:
    """The service's rules in order: RouteRules; None for a service without
    a route (every version); "no-route" when the last rule is not a catch-all."""
    route = lw.mesh.route_map.get(svc.name)
    if route is None:
        return [None]
    out: list[RouteRule | None | str] = list(route.rules)
    if not route.rules or not route.rules[-1].match.is_catch_all:
        out.append("no-route")
    return out


def _service_action(lw: Lowering, svc: Service, ingress_rule: RouteRule, r: RouteRule | None | str,
                    http: dict) -> None:
    if r == "no-route":
        http["directResponse"] = dict(NOT_FOUND)
        return
    if r is None:
        http["route"] = [{"destination": {"host": fqdn(svc)}}]
    else:
        action(lw, svc, r, http)
    if "route" in http:
        # the ingress rule's own setting, else the service's (plan.ingress_settings)
        timeout, retry, f = ingress_settings(ingress_rule, svc, r if isinstance(r, RouteRule) else None)
        if timeout is not None:
            http["timeout"] = duration(timeout)
        http["retries"] = retries(lw, svc, retry)
        if f is not None:
            http["fault"] = fault(f)


class Merged(NamedTuple):
    """One rule of the merge of an ingress rule and a service's route:
    `route_rule` is the service's rule (a RouteRule; None for a service
    without a route; "no-route" past a route without a catch-all), `rule`
    the same as a RouteRule or None, `rule_path` the route rule's path that
    matched and `rw_i` the ingress rule's rewrite for its path."""

    match: Match
    route_rule: "RouteRule | None | str"
    rule: RouteRule | None
    rule_path: PathPattern | None
    rw_i: "_Rewrite | None"


def merged_rules(lw: Lowering, g: Ingress, ingress_rule: RouteRule, svc: Service, where: str,
                 why: str) -> Iterator[Merged | None]:
    """The merged rules of an ingress rule and `svc`'s route, in order (the
    meaning: the module's docstring). Yields None, after an MP701 (`why`
    says what holds a match), when a merged match cannot be written."""
    ipaths: list[PathPattern | None] = list(ingress_rule.match.paths) or [None]
    if ingress_rule.rewrite is None or ingress_rule.rewrite.path is None:
        groups: list[list[PathPattern | None]] = [ipaths]  # one rewrite (none) for every path
    else:
        groups = [[p] for p in ipaths]  # the rewrite depends on the path that matched
    for group in groups:
        rw_i = _rewrite_of(ingress_rule, group[0]) if len(group) == 1 else None
        for r in _route_rules(lw, svc):
            rule = r if isinstance(r, RouteRule) else None
            rpaths: list[PathPattern | None] = list(rule.match.paths) if rule is not None and rule.match.paths \
                else [None]
            for ip, rp in itertools.product(group, rpaths):
                try:
                    match = _merged_match(g, ingress_rule, rule, ip, rw_i, rp)
                except _Inexpressible as exc:
                    lw.unsupported(f"{exc} {where}", ingress_rule.span, why)
                    yield None
                    return
                if match is not None:
                    yield Merged(match, r, rule, rp, rw_i)


def merged_rewrite(ingress_rule: RouteRule, m: Merged) -> tuple["_Rewrite | None", str | None]:
    """The one path rewrite (the ingress rule's, then the route rule's) and
    the host a merged rule's requests get."""
    rule = m.rule
    rw_r = _rewrite_of(rule, m.rule_path) if rule is not None else None
    host = (rule.rewrite.host if rule is not None and rule.rewrite is not None else None) \
        or (ingress_rule.rewrite.host if ingress_rule.rewrite is not None else None)
    return _compose(m.rw_i, rw_r), host


def merged_header_ops(ingress_rule: RouteRule, rule: RouteRule | None) -> list[HeaderOp]:
    """Requests: the ingress rule's operations, then the route rule's;
    responses: the route rule's, then the ingress rule's."""
    ops: list[HeaderOp] = [o for o in ingress_rule.headers if o.side == "request"]
    ops += [o for o in (rule.headers if rule is not None else []) if o.side == "request"]
    ops += [o for o in (rule.headers if rule is not None else []) if o.side == "response"]
    ops += [o for o in ingress_rule.headers if o.side == "response"]
    return ops


def _entries(lw: Lowering, g: Ingress, ingress_rule: RouteRule, svc: Service,
             where: str) -> list[tuple[Match, dict]] | None:
    """The merged rules of an ingress rule and `svc`'s route, in order: each
    its match and its http rule without name and match. None after MP701."""
    out: list[tuple[Match, dict]] = []
    for m in merged_rules(lw, g, ingress_rule, svc, where,
                          "one Istio match holds one path, one test per header and per query "
                          "parameter; the ingress rule and the service's route rule must fit in it"):
        if m is None:
            return None
        rule = m.rule
        http: dict = {}
        _service_action(lw, svc, ingress_rule, m.route_rule, http)
        if "route" in http:
            rw_r = _rewrite_of(rule, m.rule_path) if rule is not None else None
            rw = _rewrite_field(*merged_rewrite(ingress_rule, m))
            if rw:
                http["rewrite"] = rw
            headers = header_operations_of(lw, merged_header_ops(ingress_rule, rule), where)
            if headers:
                http["headers"] = headers
            c = ingress_rule.cors or svc.cors_for(rule)
            if c is not None:
                http["corsPolicy"] = cors_policy(lw, c)
            if not _ingress_mirror(lw, ingress_rule, http, rw_r, where):
                return None
        out.append((m.match, http))
    return out


def _named(lw: Lowering, ingress_rule: RouteRule, entries: list[tuple[Match, dict]]) -> list[dict]:
    out = []
    for n, (match, body) in enumerate(entries, 1):
        http: dict = {"name": f"ingress-{ingress_rule.index}-{n}"}
        m = matches(lw, None, match)
        if m is not None:
            http["match"] = m
        http.update(body)
        out.append(http)
    return out


def _merge(lw: Lowering, g: Ingress, ingress_rule: RouteRule, svc: Service, where: str) -> list[dict]:
    entries = _entries(lw, g, ingress_rule, svc, where)
    return [] if entries is None else _named(lw, ingress_rule, entries)


def _match_and(a: Match, b: Match) -> Match | None:
    """Both matches at once (None: no request meets both); _Inexpressible
    when one Istio match cannot hold it."""
    methods = [x for x in a.methods if x in b.methods] if a.methods and b.methods else list(a.methods or b.methods)
    if (a.methods and b.methods) and not methods:
        return None
    path = _path_and(a.paths[0] if a.paths else None, b.paths[0] if b.paths else None)
    if path is False:
        return None
    headers, queries = list(a.headers), list(a.queries)
    for mine, theirs, what in ((headers, b.headers, "header"), (queries, b.queries, "query parameter")):
        for t in theirs:
            same = [x for x in mine if x.name == t.name]
            if same and (same[0].kind, same[0].value) != (t.kind, t.value):
                raise _Inexpressible(f"two tests of {what} `{t.name}` from the services of a split")
            if not same:
                mine.append(t)
    return Match.make(methods=methods, paths=[path] if path is not None else [], headers=headers, queries=queries)


def _ingress_mirror(lw: Lowering, ingress_rule: RouteRule, http: dict, rw_r: "_Rewrite | None", where: str) -> bool:
    """An ingress rule's `mirror SERVICE P%` on a merged http rule: the copy
    goes to the whole service (its own route cannot apply at the gateway, so
    a mirrored service with a `route` is MP701), carrying what the ingress
    rule delivers (so not with the route rule's own rewrite or mirror).
    False after MP701."""
    m = ingress_rule.action.mirror
    if m is None:
        return True
    target = lw.mesh.service(m.version.name)
    why = None
    if target is None or lw.mesh.route_map.get(target.name) is not None:
        why = "the mirrored service's own route cannot apply to the copy at the gateway"
    elif "mirror" in http:
        why = "the merged http rule holds one mirror, and the service's route rule mirrors too"
    elif rw_r is not None:
        why = "the copy must carry the ingress rule's rewrite only, and the merged rule rewrites once"
    if why is not None:
        lw.unsupported(f"`mirror {m.version.name}` {where}", m.span, why)
        return False
    http["mirror"] = {"host": fqdn(target)}
    http["mirrorPercentage"] = {"value": percent(m.percent)}
    return True


def _split(lw: Lowering, g: Ingress, ingress_rule: RouteRule, where: str) -> list[dict]:
    """A split across services, then each service's own route. Istio
    matches before it splits, so the services' merged rule lists are
    combined: one http rule per combination of one rule of each service, in
    lexicographic order, matching where all of them match. As each list ends
    with a rule that holds wherever the ingress rule does, the first
    combination that matches pairs the first rule of each service that
    matches, which is what the services would pick. Each combination must
    forward (a share answered directly cannot be split) with the same
    settings, rewrite, header operations and CORS; the shares (service
    weight x version weight) must be whole percents."""
    from ...semantics.evaluate import forward_weights

    weights = forward_weights(ingress_rule)
    lists = []
    for name in weights:
        svc = lw.mesh.service(name)
        if svc is None or not svc.http:
            return []
        entries = _entries(lw, g, ingress_rule, svc, where)
        if entries is None:
            return []
        lists.append((name, entries))
    out: list[tuple[Match, dict]] = []
    for combo in itertools.product(*(entries for _, entries in lists)):
        try:
            match: Match | None = combo[0][0]
            for m, _ in combo[1:]:
                match = _match_and(match, m) if match is not None else None
        except _Inexpressible as exc:
            lw.unsupported(f"{exc} {where}", ingress_rule.action.span,
                           "Istio matches before it splits: each combination of the services' rules must be one "
                           "Istio match")
            return []
        if match is None:
            continue
        bodies = [body for _, body in combo]
        if any("route" not in b for b in bodies):
            lw.unsupported(f"a split across services {where}", ingress_rule.action.span,
                           "Istio matches before it splits, so a share that a service's route answers itself "
                           "(respond, redirect, no route) cannot be split off")
            return []
        rest = [{k: v for k, v in b.items() if k != "route"} for b in bodies]
        if any(r != rest[0] for r in rest[1:]):
            lw.unsupported(f"a split across services {where}", ingress_rule.action.span,
                           "Istio matches before it splits, so the services' routes must apply the same timeout, "
                           "retries, fault, rewrite, header operations, mirror and CORS where they meet")
            return []
        route = []
        for (name, _), body in zip(lists, bodies):
            for d in body["route"]:
                share = weights[name] * d.get("weight", 100) / 100
                if share != int(share):
                    lw.unsupported(f"the share {share:g}% of `{name}` in a split across services {where}",
                                   ingress_rule.action.span, "Istio route weights are whole percents")
                    return []
                if share:
                    route.append({"destination": d["destination"], "weight": int(share)})
        out.append((match, {"route": route, **rest[0]}))
    return _named(lw, ingress_rule, out)


def ingress_http_rules(lw: Lowering, g: Ingress) -> list[dict]:
    out: list[dict] = []
    for ir in g.rules:
        where = f"in rule {ir.index + 1} of ingress `{g.name}`"
        a = ir.action
        if a.kind != "forward":
            http: dict = {"name": f"ingress-{ir.index}"}
            m = matches(lw, None, ir.match)
            if m is not None:
                http["match"] = m
            action(lw, None, ir, http)
            out.append(http)
            continue
        names = list(dict.fromkeys(d.version.name for d in a.destinations))
        if len(names) > 1:
            out += _split(lw, g, ir, where)
            continue
        svc = lw.mesh.service(names[0])
        if svc is None:
            continue  # the checker reports an ingress destination that is not a service
        if not svc.http:
            lw.unsupported(f"forwarding to the tcp service `{svc.name}` {where}", a.span,
                           "an ingress rule is an HTTP route")
            continue
        out += _merge(lw, g, ir, svc, where)
    if not g.rules or not g.rules[-1].match.is_catch_all:
        out.append({"name": "no-route", "directResponse": dict(NOT_FOUND)})
    return out


def virtual_service(lw: Lowering, g: Ingress) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": g.name, "namespace": g.namespace},
        "spec": {"hosts": list(g.hosts) or ["*"], "gateways": [f"{g.namespace}/{g.name}"],
                 "http": ingress_http_rules(lw, g)},
    }


def gateway_authorization(lw: Lowering, g: Ingress) -> dict | None:
    """A default-deny mesh's allow-nothing policy (root namespace) applies to
    gateway pods too; an ingress has no authorization step of its own (host,
    token and rules decide), so its pods allow every request."""
    if lw.mesh.settings.default != "deny":
        return None
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"{g.name}-ingress", "namespace": g.namespace},
        "spec": {"selector": {"matchLabels": gateway_selector(g)}, "action": "ALLOW", "rules": [{}]},
    }


def ingresses(lw: Lowering) -> list[dict]:
    out: list[dict] = []
    for g in lw.mesh.ingress_map.values():
        gw = gateway(lw, g)
        if gw is None:
            continue
        out += [gw, virtual_service(lw, g)]
        ap = gateway_authorization(lw, g)
        if ap is not None:
            out.append(ap)
    return out
