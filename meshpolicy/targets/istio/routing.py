"""VirtualService: the routing half of the policy, applied at callers' sidecars.

Every HTTP service gets one, so that services without a `retry` really are
never retried (Istio's default is 2 retries) and service-level timeout,
retry and fault apply. A `route` block becomes ordered http rules; each
rule's match lists OR-combine, which Istio spells as a list of
HTTPMatchRequests (the cartesian product of methods x paths x callers, each
carrying all header tests).
"""

from __future__ import annotations

import itertools
from urllib.parse import urlsplit

from ...model.types import Fault, HeaderMatch, Match, PathPattern, Retry, RouteRule, Service
from ...plan import plan_of
from ...semantics.patterns import glob_regex
from .context import Lowering
from .l7 import cors_policy, header_operations, query_params, rewrite
from .names import APP_LABEL, duration, fqdn, percent

# A header test that holds for any value, i.e. "the header is present".
ANY_VALUE = {"regex": ".*"}


def uri_match(p: PathPattern) -> dict:
    if p.kind == "exact":
        return {"exact": p.value}
    if p.kind == "prefix":
        return {"prefix": p.value}
    if p.kind == "glob":
        return {"regex": glob_regex(p.value)}
    return {"regex": p.value}


def header_value(h: HeaderMatch) -> dict:
    if h.kind in ("present", "absent"):
        return dict(ANY_VALUE)
    return {h.kind: h.value or ""}


def matches(lw: Lowering, svc: Service | None, m: Match, paths: list[PathPattern] | None = None) -> list[dict] | None:
    """The OR-list of HTTPMatchRequests for one rule (only `paths` of its
    paths when given); None for a catch-all."""
    if m.is_catch_all:
        return None
    paths = m.paths if paths is None else paths
    headers: dict[str, dict] = {}
    without: dict[str, dict] = {}
    for h in m.headers:
        into = without if h.kind == "absent" else headers
        if h.name in into:
            lw.unsupported(f"a second test of header `{h.name}`", h.span,
                           "an Istio match holds one test per header name")
            continue
        into[h.name] = header_value(h)
    queries = query_params(lw, m.queries)
    callers = []
    for ref in m.sources:
        caller = lw.mesh.service(ref.name)
        if caller is not None:
            callers.append({"sourceLabels": {APP_LABEL: caller.name}, "sourceNamespace": caller.namespace})
    out = []
    for method, path, caller in itertools.product(m.methods or [None], paths or [None], callers or [None]):
        req: dict = {}
        if method:
            req["method"] = {"exact": method}
        if path is not None:
            req["uri"] = uri_match(path)
        if headers:
            req["headers"] = dict(sorted(headers.items()))
        if without:
            req["withoutHeaders"] = dict(sorted(without.items()))
        if queries:
            req["queryParams"] = queries
        if caller:
            req.update(caller)
        out.append(req)
    return out


def retries(lw: Lowering, svc: Service, r: Retry | None) -> dict:
    """No `retry` means none: Istio's own default (2 attempts) is switched off."""
    if r is None or r.attempts == 0:
        return {"attempts": 0}
    out: dict = {"attempts": r.attempts}
    if r.per_try_ms is not None:
        out["perTryTimeout"] = duration(r.per_try_ms)
    if r.on or r.on_status:
        # Istio reads status codes among the conditions as retriable-status-codes.
        out["retryOn"] = ",".join([*r.on, *(str(s) for s in r.on_status)])
    if r.backoff_ms is not None:
        out["backoff"] = duration(r.backoff_ms)
        # Envoy caps backoff at 10x the base interval; Istio cannot set the cap.
        if r.backoff_max_ms is not None and r.backoff_max_ms != 10 * r.backoff_ms:
            lw.unsupported("a retry backoff `max` other than 10x the base interval", r.at("backoff_max_ms"),
                           "Istio sets only the base interval; Envoy then caps backoff at 10x it", key="retry-backoff")
    elif r.backoff_max_ms is not None:
        lw.unsupported("a retry backoff `max` without a base interval", r.at("backoff_max_ms"),
                       "Istio sets only the base backoff interval", key="retry-backoff")
    return out


def fault(f: Fault) -> dict:
    out: dict = {}
    if f.delay_ms is not None:
        out["delay"] = {"fixedDelay": duration(f.delay_ms), "percentage": {"value": percent(f.delay_percent or 0.0)}}
    if f.abort_status is not None:
        out["abort"] = {"httpStatus": f.abort_status, "percentage": {"value": percent(f.abort_percent or 0.0)}}
    return out


def action(lw: Lowering, svc: Service, rule: RouteRule, http: dict) -> None:
    a = rule.action
    if a.kind == "forward":
        host = fqdn(svc)
        dests = []
        weights = plan_of(lw.mesh).services[svc.name].rules[rule.index].weights  # the evaluator's shares
        written = {d.version.name: d for d in a.destinations}
        for version, w in weights.items():
            dest = {"destination": {"host": host, "subset": version}}
            d = written[version]
            if d.weight is not None or len(weights) > 1:
                if w != int(w):
                    lw.unsupported(f"the weight {w}% of `{version}`", d.at("weight") if d.spans else d.span,
                                   "Istio route weights are whole percents")
                dest["weight"] = int(w)
            dests.append(dest)
        http["route"] = dests
        if a.mirror is not None:
            http["mirror"] = {"host": host, "subset": a.mirror.version.name}
            http["mirrorPercentage"] = {"value": percent(a.mirror.percent)}
    elif a.kind == "redirect":
        redirect: dict = {}
        uri = a.uri
        parts = urlsplit(a.uri)
        if not a.uri.startswith("/") and parts.scheme and parts.netloc:
            # An absolute URL: Istio sets scheme and authority apart from the path.
            redirect["scheme"] = parts.scheme
            redirect["authority"] = parts.netloc
            uri = a.uri[len(f"{parts.scheme}://{parts.netloc}"):]
        if uri:
            redirect["uri"] = uri
        redirect["redirectCode"] = a.status
        http["redirect"] = redirect
    else:
        http["directResponse"] = {"status": a.status}
        if a.body is not None:
            http["directResponse"]["body"] = {"string": a.body}


def l7_options(lw: Lowering, svc: Service, rule: RouteRule | None, path: PathPattern | None,
               http: dict, where: str) -> None:
    """Header operations, rewrite and CORS of the requests a rule forwards
    (redirects and direct responses forward nothing)."""
    if rule is not None:
        ops = header_operations(lw, rule, where)
        if ops:
            http["headers"] = ops
        rw = rewrite(lw, rule, path, where)
        if rw:
            http["rewrite"] = rw
    sp = plan_of(lw.mesh).services[svc.name]
    c = (sp.rules[rule.index] if rule is not None and sp.rules is not None else sp.default).cors
    if c is not None:
        http["corsPolicy"] = cors_policy(lw, c)


def path_groups(rule: RouteRule) -> list[list[PathPattern] | None]:
    """The rule's paths in runs that share one Istio rewrite (None: all of
    them). Istio's rewrite belongs to the http rule, not to each match, so a
    rule whose paths need different rewrites (a glob's anchored regex beside
    a prefix) becomes consecutive http rules, in written order: first match
    wins either way."""
    rw = rule.rewrite
    if rw is None or rw.path is None or len(rule.match.paths) <= 1:
        return [None]
    groups: list[tuple[tuple, list[PathPattern]]] = []
    for p in rule.match.paths:
        key = ("glob", p.value.split("*", 1)[0]) if p.kind == "glob" else (p.kind == "regex", "")
        if groups and groups[-1][0] == key:
            groups[-1][1].append(p)
        else:
            groups.append((key, [p]))
    return [None] if len(groups) == 1 else [g for _, g in groups]


def http_rule(lw: Lowering, svc: Service, name: str, m: list[dict] | None, rule: RouteRule | None,
              path: PathPattern | None = None, where: str = "") -> dict:
    http: dict = {"name": name}
    if m is not None:
        http["match"] = m
    if rule is not None:
        action(lw, svc, rule, http)
    else:
        http["route"] = [{"destination": {"host": fqdn(svc)}}]
    if "route" in http:
        # Redirects and direct responses never reach the service: no timeout, retries or faults.
        timeout, retry, f = svc.settings_for(rule)
        if timeout is not None:
            http["timeout"] = duration(timeout)
        http["retries"] = retries(lw, svc, retry)
        if f is not None:
            http["fault"] = fault(f)
        l7_options(lw, svc, rule, path, http, where)
    return http


def route_rules(lw: Lowering, svc: Service, rule: RouteRule, where: str) -> list[dict]:
    """One http rule per rule of a route (more when its paths need different rewrites)."""
    out = []
    for i, group in enumerate(path_groups(rule)):
        paths = group if group is not None else rule.match.paths
        name = f"rule-{rule.index}" if i == 0 else f"rule-{rule.index}-{i + 1}"
        out.append(http_rule(lw, svc, name, matches(lw, svc, rule.match, paths), rule,
                             paths[0] if paths else None, where))
    return out


def virtual_service(lw: Lowering, svc: Service) -> dict | None:
    if not svc.http:
        return None
    route = lw.mesh.route_map.get(svc.name)
    rules = []
    if route is None:
        rules.append(http_rule(lw, svc, "default", None, None))
    else:
        for rule in route.rules:
            rules += route_rules(lw, svc, rule, f"in rule {rule.index + 1} of route `{svc.name}`")
        if not route.rules or not route.rules[-1].match.is_catch_all:
            # Semantics: a routed request that no rule matches gets 404.
            rules.append({"name": "no-route", "directResponse": {"status": 404}})
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": svc.name, "namespace": svc.namespace},
        "spec": {"hosts": [fqdn(svc)], "http": rules},
    }
