"""VirtualServices -> routes.

Istio's rules for the mesh gateway (docs/import.md, "VirtualServices"):
a VirtualService applies to sidecars when `gateways` is absent or names
`mesh`; its `http` routes are tried in order and each `match` entry is an
alternative, so one Istio route with two matches becomes two rules with the
same action. When several VirtualServices name one host, sidecars use only
the oldest (IST0109). A route without `retries` gets Istio's default policy.
"""

from __future__ import annotations

import re

from ..codes import diag
from ..diagnostics import Label
from ..model import types as t
from ..span import Span
from .context import Context, percent
from .inventory import K8sService, Resource, labels_of, mesh_name, selects
from .services import ISTIO_DEFAULT_RETRY_ON
from .yamlmarks import YMap, YSeq

_RETRY_ON = set(t.RETRY_CONDITIONS)
_HEADER_KINDS = {"exact": "exact", "prefix": "prefix", "regex": "regex"}


def virtual_services(cx: Context, services: list[Resource]) -> None:
    owners: dict[str, Resource] = {}
    for res in sorted(services, key=lambda r: r.sort_key()):
        spec = res.spec
        gateways = spec.get("gateways")
        for i, g in enumerate(gateways if isinstance(gateways, YSeq) else []):
            ns, _, name = str(g).rpartition("/")
            if str(g) != "mesh" and not any(r.kind == "Gateway" and r.group.endswith("istio.io") and r.name == name
                                            and r.namespace == (ns or res.namespace) for r in cx.inv.resources):
                cx.diags.append(diag("MP918", f"{res.label}: gateway `{g}` is defined by no Gateway in the inputs",
                                     gateways.at(i)))
        if isinstance(gateways, YSeq) and gateways and "mesh" not in [str(g) for g in gateways]:
            continue  # gateways only: ingress (istio_ingress.py)
        hosts = spec.get("hosts")
        targets: list[K8sService] = []
        for i, host in enumerate(hosts if isinstance(hosts, YSeq) else []):
            for ksvc in cx.resolve(res, host, hosts.at(i)):
                if ksvc not in targets:
                    targets.append(ksvc)
        if not targets:
            continue
        cx.coverage.imported[res.kind] += 1
        if "exportTo" in spec and [str(x) for x in spec["exportTo"] or []] not in (["*"], []):
            cx.approximate(res, "spec.exportTo", spec.at("exportTo"),
                           "limits which namespaces see the routes; imported as seen by every caller")
        for key in ("tcp", "tls", "delegate"):
            if key in spec:
                cx.refuse(res, f"spec.{key}", spec.key_at(key), "only HTTP routes are imported")
        for ksvc in targets:
            svc = cx.service_for(ksvc)
            if svc.name in owners:
                first = owners[svc.name]
                cx.diags.append(diag("MP909", f"{res.label} and {first.label} both define host `{ksvc.resource.name}` "
                                              f"for the mesh; sidecars use only {first.label}", spec.at("hosts"),
                                     labels=[Label(first.spec.at("hosts"), "this one is used")]))
                continue
            owners[svc.name] = res
            rules = _http_routes(cx, res, ksvc, svc)
            if _whole_service_only(cx, rules):
                # one catch-all route to the whole Service is what no route means: every
                # version evenly, with the route's settings as the service's own (exact)
                only = rules[0]
                svc.timeout_ms, svc.retry, svc.fault = svc.settings_for(only)
                continue
            for rule in rules:
                whole = cx.whole_service.get(id(rule.action))
                if whole and len(svc.versions) > 1:
                    cx.approximate(*whole, "sends to the whole Service: imported as an even split across its "
                                   "versions (Istio balances across pods: exact when each version runs as many)")
            cx.routes[svc.name] = t.Route.make(service=t.Ref.make(name=svc.name, span=spec.at("hosts"), spans={}),
                                               rules=rules, span=spec.span, spans={})
            cx.mesh.routes.append(cx.routes[svc.name])
            cx.route_owner[svc.name] = res


def _whole_service_only(cx: Context, rules: list[t.RouteRule]) -> bool:
    return (len(rules) == 1 and rules[0].match.is_catch_all and id(rules[0].action) in cx.whole_service
            and rules[0].action.mirror is None)


def _http_routes(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service) -> list[t.RouteRule]:
    return http_rules(cx, res, lambda route, where: _action(cx, res, ksvc, svc, route, where),
                      default_retry=svc.retry is not None)


def http_rules(cx: Context, res: Resource, action_for, *, default_retry: bool,
               ingress: bool = False) -> list[t.RouteRule]:
    """A VirtualService's `http` routes as rules: one per match entry, each
    with the route's action, overrides and L7 options (route_options.py).
    `ingress`: the rules of a gateway, where `sourceLabels` has no meaning."""
    from . import route_options as ro

    rules: list[t.RouteRule] = []
    http = res.spec.get("http")
    for i, route in enumerate(http if isinstance(http, YSeq) else []):
        if not isinstance(route, YMap):
            continue
        where = f"spec.http[{i}]"
        action = action_for(route, where)
        if action is None:
            continue
        timeout = cx.duration_ms(res, route, "timeout", where) if "timeout" in route else None
        retry = _retry(cx, res, route, where) if "retries" in route else None
        fault = _fault(cx, res, route.get("fault"), where) if "fault" in route else None
        if fault is not None and retry is None and default_retry:
            # Istio turns its default retries off on a route that injects a fault
            retry = t.Retry.make(attempts=0, span=route.at("fault"), spans={})
        headers = ro.istio_header_ops(cx, res, route["headers"], where) if isinstance(route.get("headers"), YMap) \
            else []
        forwards = isinstance(action, t.Forward)
        got = ro.istio_rewrite(cx, res, route.get("rewrite"), route.at("rewrite"), where) \
            if "rewrite" in route and forwards else None
        rewrite, stem = got if got is not None else (None, None)
        cors = ro.istio_cors(cx, res, route.get("corsPolicy"), route.at("corsPolicy"), where) \
            if "corsPolicy" in route and forwards else None
        for key in ("rewrite", "corsPolicy"):
            if key in route and not forwards:  # Istio applies neither to a redirect or direct response
                cx.approximate(res, f"{where}.{key}", route.key_at(key), "has no effect on a route that answers "
                               "itself (redirect, directResponse); left out (exact)")
        if "delegate" in route:
            cx.refuse(res, f"{where}.delegate", route.key_at("delegate"), "delegation cannot be expressed")
        matches = route.get("match")
        if not isinstance(matches, YSeq) or not matches:
            matches_built = [t.Match.make(span=route.span, spans={})]
        else:
            matches_built = [m for j, entry in enumerate(matches)
                             if (m := _match(cx, res, entry, matches.at(j), f"{where}.match[{j}]", ingress))
                             is not None]
        for m in matches_built:  # each match entry is its own rule, reported at its own line
            if not ro.rewrite_fits(cx, res, m, rewrite, route.at("rewrite"), where, stem):
                continue
            rules.append(t.RouteRule.make(index=len(rules), match=m, action=action, timeout_ms=timeout, retry=retry,
                                          fault=fault, headers=[h.model_copy() for h in headers or []],
                                          rewrite=rewrite.model_copy() if rewrite else None,
                                          cors=cors.model_copy(deep=True) if cors else None, span=m.span, spans={}))
    return rules


def _match(cx: Context, res: Resource, entry, span: Span, where: str, ingress: bool = False) -> t.Match | None:
    if not isinstance(entry, YMap):
        return t.Match.make(span=span, spans={})
    m = t.Match.make(span=span, spans={})
    for key, value in entry.items():
        at = entry.at(key)
        if key == "uri" and isinstance(value, YMap):
            kind, text = next(iter(value.items()), (None, None))
            if kind in ("exact", "prefix", "regex") and isinstance(text, str):
                from .route_options import regex_prefix

                stem = regex_prefix(text) if kind == "regex" else None
                if stem is not None:  # `<literal>.*`, as meshc's own Istio output writes a prefix
                    kind, text = "prefix", stem
                m.paths.append(t.PathPattern.make(kind=kind, value=text, span=at, spans={}))
                cx.imported(res, f"{where}.uri")
                continue
        elif key == "method" and isinstance(value, YMap) and isinstance(value.get("exact"), str):
            m.methods.append(value["exact"].upper())
            cx.imported(res, f"{where}.method")
            continue
        elif key == "headers" and isinstance(value, YMap):
            ok = True
            for name, test in value.items():
                kind, text = next(iter(test.items()), (None, None)) if isinstance(test, YMap) else (None, None)
                if _any_value(test):
                    m.headers.append(t.HeaderMatch.make(name=str(name).lower(), kind="present", span=value.at(name),
                                                        spans={}))
                elif kind in _HEADER_KINDS and isinstance(text, str) and len(test) == 1:
                    m.headers.append(t.HeaderMatch.make(name=str(name).lower(), kind=_HEADER_KINDS[kind], value=text,
                                                        span=value.at(name), spans={}))
                else:
                    ok = False
            if ok:
                cx.imported(res, f"{where}.headers")
                continue
        elif key == "withoutHeaders" and isinstance(value, YMap) and all(_any_value(v) for v in value.values()):
            for name in value:
                m.headers.append(t.HeaderMatch.make(name=str(name).lower(), kind="absent", span=value.at(name),
                                                    spans={}))
            cx.imported(res, f"{where}.withoutHeaders")
            continue
        elif key == "queryParams":
            from .route_options import istio_queries

            got = istio_queries(cx, res, value, at, where)
            if got is not None:
                m.queries = got
                continue
        elif key in ("sourceLabels", "sourceNamespace") and not ingress:
            continue  # below, together
        elif key in ("gateways", "port") and ingress:
            continue  # the gateway builder has already read them
        elif key in ("name", "ignoreUriCase") and (key == "name" or value is False):
            continue
        cx.refuse(res, f"{where}.{key}", at, "the language cannot express this match; the whole match entry is left "
                  "out, so requests it would take go to the later rules", "routing")
        return None
    if not ingress and ("sourceLabels" in entry or "sourceNamespace" in entry):
        selector = labels_of(entry.get("sourceLabels"))
        ns = entry.get("sourceNamespace")
        callers = [k for k in cx.inv.services.values()
                   if (ns is None or k.resource.namespace == ns)
                   and (not selector or any(selects(selector, w.labels) for w in k.workloads)
                        or (not k.workloads and selects(selector, k.selector)))]
        if not callers:
            cx.refuse(res, f"{where}.sourceLabels", entry.at("sourceLabels" if selector else "sourceNamespace"),
                      "selects no workload of a Service in the inputs; the match entry can never be taken")
            return None
        m.sources = [t.Ref.make(name=k.name, span=span, spans={}) for k in callers]
        cx.imported(res, f"{where}.source")
    return m


def _any_value(test) -> bool:
    """A header test every value passes (`{}`, `regex: .*`, `prefix: ""`): the header is present."""
    return isinstance(test, YMap) and (not test or test == {"regex": ".*"} or test == {"prefix": ""})


def _version_of(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, dest: YMap, where: str,
                span: Span) -> t.Ref | None | bool:
    """The version a destination names: a Ref, None for the whole service, False when unusable."""
    host = dest.get("host")
    found = cx.resolve(res, host, dest.at("host")) if host is not None else []
    if not found:
        return False
    if found[0] is not ksvc:
        cx.diags.append(diag("MP912", f"{res.label}: `{where}` sends `{ksvc.resource.name}` traffic to "
                                      f"`{found[0].resource.name}`", dest.at("host")))
        return False
    if len(ksvc.ports) > 1 and not isinstance(dest.get("port"), YMap):
        cx.diags.append(diag("MP914", f"{res.label}: `{where}` sends to `{ksvc.resource.name}`, which has "
                                      f"{len(ksvc.ports)} ports, without `port`", dest.at("host")))
    subset = dest.get("subset")
    if subset is None:
        return None
    name = mesh_name(str(subset))
    if svc.version(name) is None:
        cx.diags.append(diag("MP907", f"{res.label}: subset `{subset}` of `{ksvc.resource.name}` is defined by no "
                                      "DestinationRule", dest.at("subset")))
        return False
    return t.Ref.make(name=name, span=dest.at("subset"), spans={})


def answer(cx: Context, res: Resource, route: YMap, where: str):
    """A route that answers itself: a Redirect or DirectResponse; False when
    it cannot be expressed (said so); None when the route forwards."""
    if isinstance(route.get("redirect"), YMap):
        red = route["redirect"]
        uri = str(red.get("uri") or "")
        if red.get("authority"):  # an absolute target: Istio keeps scheme and authority apart from the path
            uri = f"{red.get('scheme') or 'http'}://{red['authority']}{uri}"
        if set(red) - {"uri", "redirectCode", "authority", "scheme"} or not uri or \
                (red.get("scheme") and not red.get("authority")):
            cx.refuse(res, f"{where}.redirect", route.at("redirect"), "only `uri`, `authority`, `scheme` and "
                      "`redirectCode` are expressible; the route is left out", "routing")
            return False
        cx.imported(res, f"{where}.redirect")
        return t.Redirect.make(uri=uri, status=int(red.get("redirectCode") or 301), span=route.at("redirect"),
                               spans={})
    if isinstance(route.get("directResponse"), YMap):
        dr = route["directResponse"]
        body = dr.get("body")
        text = body.get("string") if isinstance(body, YMap) else None
        if isinstance(body, YMap) and text is None:
            cx.refuse(res, f"{where}.directResponse.body", dr.at("body"), "only a string body is expressible")
        cx.imported(res, f"{where}.directResponse")
        return t.DirectResponse.make(status=int(dr.get("status") or 200), body=text, span=route.at("directResponse"),
                                     spans={})
    return None


def _action(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, route: YMap, where: str):
    answered = answer(cx, res, route, where)
    if answered is not None:
        return answered or None
    dests = route.get("route")
    if not isinstance(dests, YSeq) or not dests:
        cx.refuse(res, where, route.span, "a route without `route`, `redirect` or `directResponse`")
        return None
    weighted: list[t.WeightedVersion] = []
    whole = False
    for j, d in enumerate(dests):
        dest = d.get("destination") if isinstance(d, YMap) else None
        if not isinstance(dest, YMap):
            continue
        ref = _version_of(cx, res, ksvc, svc, dest, f"{where}.route[{j}]", dests.at(j))
        if ref is False:
            return None
        if "headers" in d:  # per-destination header operations: no equivalent on a split share
            cx.refuse(res, f"{where}.route[{j}].headers", d.key_at("headers"), "header operations on one "
                      "destination of a split cannot be expressed; left out", "the headers services see")
        weight = d.get("weight")
        if ref is None:
            whole = True
            continue
        weighted.append(t.WeightedVersion.make(version=ref, weight=float(weight) if weight is not None else None,
                                               span=dests.at(j), spans={}))
    if whole:
        if len(dests) > 1:
            cx.refuse(res, f"{where}.route", route.at("route"), "mixes the whole Service with subsets")
            return None
        if not svc.versions:
            svc.versions.append(t.Version.make(name="default", labels={}, span=ksvc.resource.body.span, spans={}))
        weighted = [t.WeightedVersion.make(version=t.Ref.make(name=v.name, span=dests.span, spans={}),
                                           weight=share if len(svc.versions) > 1 else None,
                                           span=dests.span, spans={})
                    for v, share in zip(svc.versions, even_shares(len(svc.versions)))]
    cx.imported(res, f"{where}.route")
    mirror = _mirror(cx, res, ksvc, svc, route, where)
    action = t.Forward.make(destinations=weighted, mirror=mirror, span=route.at("route"), spans={})
    if whole:
        cx.whole_service[id(action)] = (res, f"{where}.route", route.at("route"))
    return action


def even_shares(n: int) -> list[float]:
    """n shares of 100% in hundredths that the language can write and that total
    exactly 100 (the last takes the remainder): 33.33, 33.33, 33.34."""
    base = int(10000 / n) / 100
    return [base] * (n - 1) + [round(100 - base * (n - 1), 2)]


def _mirror(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, route: YMap, where: str):
    mirror = route.get("mirror")
    pct = percent(route.get("mirrorPercentage")) if "mirrorPercentage" in route else percent(route.get("mirrorPercent"))
    if "mirrors" in route:
        mirrors = route["mirrors"]
        if isinstance(mirrors, YSeq) and len(mirrors) == 1 and isinstance(mirrors[0], YMap):
            mirror = mirrors[0].get("destination")
            pct = percent(mirrors[0].get("percentage"))
        else:
            cx.refuse(res, f"{where}.mirrors", route.at("mirrors"), "only one mirror is expressible")
            return None
    if not isinstance(mirror, YMap):
        return None
    ref = _version_of(cx, res, ksvc, svc, mirror, f"{where}.mirror", route.at("mirror") if "mirror" in route
                      else route.at("mirrors"))
    if not isinstance(ref, t.Ref):
        if ref is None:
            cx.refuse(res, f"{where}.mirror", mirror.span, "a mirror to the whole Service cannot be expressed")
        return None
    cx.imported(res, f"{where}.mirror")
    return t.Mirror.make(version=ref, percent=100.0 if pct is None else pct, span=mirror.span, spans={})


def _retry(cx: Context, res: Resource, route: YMap, where: str) -> t.Retry | None:
    r = route.get("retries")
    if not isinstance(r, YMap):
        return None
    attempts = r.get("attempts")
    if not isinstance(attempts, int):
        attempts = 2 if r.get("perTryTimeout") or r.get("retryOn") else 0
    retry = t.Retry.make(attempts=attempts, span=route.at("retries"), spans={})
    if attempts == 0:
        cx.imported(res, f"{where}.retries")
        return retry
    retry.per_try_ms = cx.duration_ms(res, r, "perTryTimeout", f"{where}.retries") if "perTryTimeout" in r else None
    conditions = [c.strip() for c in str(r.get("retryOn") or ",".join(ISTIO_DEFAULT_RETRY_ON)).split(",") if c.strip()]
    from .route_options import status_codes

    kept, codes, dropped = status_codes(conditions)
    if dropped:
        cx.refuse(res, f"{where}.retries.retryOn", r.at("retryOn"),
                  f"condition(s) {', '.join(dropped)} cannot be expressed; the others are imported",
                  "retry amplification")
    retry.on = kept
    retry.on_status = codes
    for key in r:
        if key not in ("attempts", "perTryTimeout", "retryOn"):
            cx.refuse(res, f"{where}.retries.{key}", r.key_at(key), "the language has no equivalent")
    cx.imported(res, f"{where}.retries")
    return retry


def _fault(cx: Context, res: Resource, fault, where: str) -> t.Fault | None:
    if not isinstance(fault, YMap):
        return None
    kw = {}
    delay, abort = fault.get("delay"), fault.get("abort")
    if isinstance(delay, YMap):
        ms = cx.duration_ms(res, delay, "fixedDelay", f"{where}.fault.delay")
        pct = percent(delay.get("percentage")) if "percentage" in delay else percent(delay.get("percent"))
        if ms is not None:
            kw.update(delay_ms=ms, delay_percent=100.0 if pct is None else pct)
    if isinstance(abort, YMap):
        status = abort.get("httpStatus")
        pct = percent(abort.get("percentage")) if "percentage" in abort else percent(abort.get("percent"))
        if isinstance(status, int):
            kw.update(abort_status=status, abort_percent=100.0 if pct is None else pct)
        else:
            cx.refuse(res, f"{where}.fault.abort", fault.at("abort"), "only `httpStatus` aborts are expressible")
    if not kw:
        return None
    cx.imported(res, f"{where}.fault")
    return t.Fault.make(span=fault.span, spans={}, **kw)


def glob_from_template(path: str) -> str | None:
    """Istio's path templates (`/a/{*}/b`, `/a/{**}`) as the language's globs."""
    if "{" not in path:
        return None
    out = path.replace("{**}", "**").replace("{*}", "*")
    return out if "{" not in out and re.fullmatch(r"(/[^/]*)*", out) else None
