"""Gateway API HTTPRoutes attached to a Service (GAMMA, east-west) -> routes.

Gateway API orders matches by precedence, not by where they are written
(HTTPRoute spec, "Rules"): an Exact path before a PathPrefix, longer
prefixes first, then a method match, then more header matches, then more
query matches; ties go to the oldest route, then namespace/name order, then
rule order. Each match becomes one rule here, sorted that way, so the first
rule that matches is the one Gateway API picks. A PathPrefix matches whole
path elements (`/foo` matches `/foo` and `/foo/x`, not `/foobar`).
A backendRef to another Service that selects a subset of the parent's pods
(`reviews-v2` selecting `app: reviews, version: v2`) is a version of it.
"""

from __future__ import annotations

from ..codes import diag
from ..model import types as t
from ..span import Span
from .context import Context
from .inventory import K8sService, Resource, mesh_name, selects
from .yamlmarks import YMap, YSeq, empty_map, items_of


def http_routes(cx: Context, routes: list[Resource]) -> None:
    """HTTPRoutes and GRPCRoutes attached to Services, in one precedence order per parent."""
    per_parent: dict[str, list[tuple[tuple, t.RouteRule]]] = {}
    parents: dict[str, tuple[K8sService, Resource]] = {}
    for order, res in enumerate(sorted(routes, key=lambda r: (r.created or "~", r.namespace, r.name))):
        spec = res.spec
        refs = spec.get("parentRefs")
        targets = []
        for i, ref in enumerate(refs if isinstance(refs, YSeq) else []):
            if not isinstance(ref, YMap):
                continue
            if ref.get("kind") != "Service":
                if res.kind == "HTTPRoute" and ref.get("kind", "Gateway") == "Gateway":
                    continue  # ingress: gateway_ingresses
                cx.diags.append(diag("MP903", f"{res.label}: its parent `{ref.get('name')}` is a "
                                              f"{ref.get('kind') or 'Gateway'}: only HTTPRoutes attached to a "
                                              "Gateway or a Service are imported", refs.at(i)))
                continue
            if "port" in ref:
                cx.approximate(res, f"spec.parentRefs[{i}].port", ref.at("port"), "imported for every port")
            ns = str(ref.get("namespace") or res.namespace)
            found = cx.inv.services.get((ns, str(ref.get("name"))))
            if found is None:
                cx.diags.append(diag("MP906", f"{res.label}: parent Service `{ns}/{ref.get('name')}` is not in "
                                              "the inputs", ref.at("name")))
                continue
            targets.append(found)
        if not targets:
            continue
        cx.coverage.imported[res.kind] += 1
        for ksvc in targets:
            svc = cx.service_for(ksvc)
            if svc.name in cx.routes and svc.name not in per_parent:
                cx.diags.append(diag("MP909", f"{res.label}: `{ksvc.resource.name}` already has a VirtualService "
                                              "route; this HTTPRoute is not merged with it", spec.at("parentRefs")))
                continue
            parents[svc.name] = (ksvc, res)
            rules = spec.get("rules")
            for i, rule in enumerate(rules if isinstance(rules, YSeq) else [empty_map(spec)]):
                if isinstance(rule, YMap):
                    for key, built in _rule(cx, res, ksvc, svc, rule, f"spec.rules[{i}]",
                                            rules.at(i) if isinstance(rules, YSeq) else spec.span):
                        per_parent.setdefault(svc.name, []).append(((*key, order, i), built))
    for name, entries in per_parent.items():
        ksvc, res = parents[name]
        ordered = [r for _, r in sorted(entries, key=lambda e: e[0])]
        for i, r in enumerate(ordered):
            r.index = i
        route = t.Route.make(service=t.Ref.make(name=name, span=res.spec.at("parentRefs"), spans={}),
                             rules=ordered, span=res.spec.span, spans={})
        cx.routes[name] = route
        cx.mesh.routes.append(route)


def _rule(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, rule: YMap, where: str, span: Span):
    return rules_of(cx, res, rule, where, span, lambda: _backends(cx, res, ksvc, svc, rule, where))


def rules_of(cx: Context, res: Resource, rule: YMap, where: str, span: Span, backends):
    """(precedence key, rule) for each match of an HTTPRouteRule, with its
    timeouts, retry and filters; `backends` gives the action."""
    from . import route_options as ro

    options = _filters(cx, res, rule, where)
    if options is None:
        return []
    headers, rewrite, rewrite_kind = options
    action = backends()
    if action is None:
        return []
    timeout = None
    timeouts = rule.get("timeouts")
    if isinstance(timeouts, YMap):
        if "request" in timeouts:
            timeout = cx.duration_ms(res, timeouts, "request", f"{where}.timeouts")
        if "backendRequest" in timeouts:
            cx.refuse(res, f"{where}.timeouts.backendRequest", timeouts.key_at("backendRequest"),
                      "a per-attempt timeout needs retries; the language writes it as `retry N per_try D`")
    retry = _retry(cx, res, rule.get("retry"), where) if "retry" in rule else None
    out = []
    matches = rule.get("matches")
    entries = list(enumerate(matches)) if isinstance(matches, YSeq) and matches else [(0, None)]
    match = _grpc_match if res.kind == "GRPCRoute" else _match
    for j, entry in entries:
        built = match(cx, res, entry, matches.at(j) if isinstance(matches, YSeq) else span, f"{where}.matches[{j}]")
        if built is None:
            continue
        m, key = built
        made = t.RouteRule.make(index=0, match=m, action=action, timeout_ms=timeout, retry=retry,
                                headers=[h.model_copy() for h in headers],
                                rewrite=rewrite.model_copy() if rewrite else None, span=span, spans={})
        if rewrite is not None and not isinstance(action, t.Forward):
            made.rewrite = None  # a redirect or a 500 rewrites nothing
        if made.rewrite is not None and rewrite_kind == "full" and any(p.kind != "exact" for p in m.paths):
            cx.refuse(res, f"{where}.filters", rule.at("filters"), "ReplaceFullPath on a prefix or regex match: the "
                      "language replaces only the matched part of the path; the match is left out", "routing")
            continue
        if made.rewrite is not None and rewrite_kind == "prefix":
            if any(p.kind == "regex" for p in m.paths):
                cx.refuse(res, f"{where}.filters", rule.at("filters"), "ReplacePrefixMatch needs a PathPrefix "
                          "match; the match is left out", "routing")
                continue
            if any(p.kind == "glob" for p in m.paths) or not m.paths:
                out += [(key, r) for r in ro.split_for_prefix_rewrite(made, rewrite.path)]
                continue
        out.append((key, made))
    return out


def _filters(cx: Context, res: Resource, rule: YMap, where: str):
    """(header operations, rewrite, rewrite kind) of a rule's header and URL
    filters; None when one cannot be expressed (the rule is left out)."""
    from . import route_options as ro

    headers: list[t.HeaderOp] = []
    rewrite, kind = None, None
    filters = rule.get("filters")
    for i, f in enumerate(filters if isinstance(filters, YSeq) else []):
        ftype = f.get("type") if isinstance(f, YMap) else None
        at, here = filters.at(i), f"{where}.filters[{i}]"
        if ftype in ("RequestHeaderModifier", "ResponseHeaderModifier"):
            ops = ro.gateway_header_filter(cx, res, f, "request" if ftype.startswith("Request") else "response",
                                           at, here)
            if ops is None:
                return None
            headers += ops
        elif ftype == "URLRewrite":
            got = ro.gateway_rewrite(cx, res, f, at, here)
            if got is False:
                return None
            rewrite, kind = got
    return headers, rewrite, kind


def _match(cx: Context, res: Resource, entry, span: Span, where: str):
    """(match, precedence key) of one HTTPRouteMatch; None when not expressible."""
    m = t.Match.make(span=span, spans={})
    path = entry.get("path") if isinstance(entry, YMap) else None
    kind = str(path.get("type") or "PathPrefix") if isinstance(path, YMap) else "PathPrefix"
    value = str(path.get("value") or "/") if isinstance(path, YMap) else "/"
    at = entry.at("path") if isinstance(entry, YMap) and "path" in entry else span
    if kind == "Exact":
        m.paths.append(t.PathPattern.make(kind="exact", value=value, span=at, spans={}))
        rank = (0, -len(value))
    elif kind == "PathPrefix":
        stem = value.rstrip("/")
        if stem:  # element-wise: the path itself and everything below it
            m.paths += [t.PathPattern.make(kind="exact", value=stem, span=at, spans={}),
                        t.PathPattern.make(kind="glob", value=stem + "/**", span=at, spans={})]
        rank = (1, -len(stem))
    elif kind == "RegularExpression":
        m.paths.append(t.PathPattern.make(kind="regex", value=value, span=at, spans={}))
        rank = (2, 0)
    else:
        cx.refuse(res, f"{where}.path.type", at, f"unknown path match type `{kind}`")
        return None
    if not isinstance(entry, YMap):
        return m, (*rank, 1, 0, 0)
    if "queryParams" in entry:
        from .route_options import gateway_queries

        queries = gateway_queries(cx, res, entry, where)
        if queries is None:
            return None
        m.queries = queries
    method = entry.get("method")
    if isinstance(method, str):
        m.methods.append(method.upper())
    if not _headers(cx, res, entry, m, where):
        return None
    cx.imported(res, where)
    return m, (*rank, 0 if method else 1, -len(m.headers), -len(m.queries))


def _headers(cx: Context, res: Resource, entry, m: t.Match, where: str) -> bool:
    """An HTTP or gRPC route match's header tests into m; False (and said so) when one is not expressible."""
    headers = entry.get("headers") if isinstance(entry, YMap) else None
    for i, h in enumerate(headers if isinstance(headers, YSeq) else []):
        htype = str(h.get("type") or "Exact") if isinstance(h, YMap) else ""
        if htype not in ("Exact", "RegularExpression") or not isinstance(h.get("value"), str):
            cx.refuse(res, f"{where}.headers[{i}]", headers.at(i), "only Exact and RegularExpression header "
                      "matches are expressible; the match is left out", "routing")
            return False
        m.headers.append(t.HeaderMatch.make(name=str(h.get("name")).lower(),
                                            kind="exact" if htype == "Exact" else "regex", value=h["value"],
                                            span=headers.at(i), spans={}))
    return True


def _grpc_match(cx: Context, res: Resource, entry, span: Span, where: str):
    """A GRPCRouteMatch: gRPC calls are POSTs to `/<service>/<method>`. Precedence:
    longer service, then longer method, then more header matches."""
    m = t.Match.make(span=span, spans={})
    method = entry.get("method") if isinstance(entry, YMap) else None
    service_name = str(method.get("service") or "") if isinstance(method, YMap) else ""
    method_name = str(method.get("method") or "") if isinstance(method, YMap) else ""
    kind = str(method.get("type") or "Exact") if isinstance(method, YMap) else "Exact"
    at = entry.at("method") if isinstance(entry, YMap) and "method" in entry else span
    if kind == "RegularExpression":
        m.paths.append(t.PathPattern.make(kind="regex", value=f"/{service_name or '[^/]+'}/{method_name or '[^/]+'}",
                                          span=at, spans={}))
    elif service_name and method_name:
        m.paths.append(t.PathPattern.make(kind="exact", value=f"/{service_name}/{method_name}", span=at, spans={}))
    elif service_name:
        m.paths.append(t.PathPattern.make(kind="glob", value=f"/{service_name}/*", span=at, spans={}))
    elif method_name:
        m.paths.append(t.PathPattern.make(kind="glob", value=f"/*/{method_name}", span=at, spans={}))
    if not _headers(cx, res, entry, m, where):
        return None
    cx.imported(res, where)
    return m, (0, -len(service_name), -len(method_name), -len(m.headers), 0)


def _backends(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, rule: YMap, where: str):
    filters = rule.get("filters")
    mirror = None
    for i, f in enumerate(filters if isinstance(filters, YSeq) else []):
        ftype = f.get("type") if isinstance(f, YMap) else None
        if ftype == "RequestRedirect":
            red = f.get("requestRedirect") or {}
            path = red.get("path") if isinstance(red, YMap) else None
            extra = set(red) - {"path", "statusCode"} if isinstance(red, YMap) else set()
            if isinstance(path, YMap) and path.get("type") == "ReplaceFullPath" and not extra:
                cx.imported(res, f"{where}.filters[{i}]")
                return t.Redirect.make(uri=str(path.get("replaceFullPath")), status=int(red.get("statusCode") or 302),
                                       span=filters.at(i), spans={})
            cx.refuse(res, f"{where}.filters[{i}]", filters.at(i), "only a full-path redirect is expressible; the "
                      "rule is left out", "routing")
            return None
        if ftype == "RequestMirror":
            ref = _version(cx, res, ksvc, svc, (f.get("requestMirror") or {}).get("backendRef"), filters.at(i))
            if not isinstance(ref, t.Ref):
                cx.refuse(res, f"{where}.filters[{i}]", filters.at(i), "a mirror must name a version of the service")
                continue
            pct = (f.get("requestMirror") or {}).get("percent")
            mirror = t.Mirror.make(version=ref, percent=float(pct) if isinstance(pct, (int, float)) else 100.0,
                                   span=filters.at(i), spans={})
            cx.imported(res, f"{where}.filters[{i}]")
            continue
        if ftype in ("RequestHeaderModifier", "ResponseHeaderModifier", "URLRewrite"):
            continue  # _filters
        cx.refuse(res, f"{where}.filters[{i}]", filters.at(i) if isinstance(filters, YSeq) else rule.span,
                  f"filter `{ftype}` cannot be expressed", "routing")
    refs = rule.get("backendRefs")
    if not isinstance(refs, YSeq) or not refs:
        # no backends: Gateway API answers 500
        return t.DirectResponse.make(status=500, span=rule.span, spans={})
    weighted: list[tuple[t.Ref, float, Span]] = []
    for i, b in enumerate(refs):
        ref = _version(cx, res, ksvc, svc, b, refs.at(i))
        if ref is False:
            return None
        weight = b.get("weight", 1) if isinstance(b, YMap) else 1
        if ref is None:
            if len(refs) > 1:
                cx.refuse(res, f"{where}.backendRefs", rule.at("backendRefs"), "mixes the parent Service with "
                          "version Services")
                return None
            if not svc.versions:
                svc.versions.append(t.Version.make(name="default", labels={}, span=ksvc.resource.body.span, spans={}))
            if len(svc.versions) > 1:
                cx.approximate(res, f"{where}.backendRefs", rule.at("backendRefs"), "sends to the whole Service: "
                               "imported as an even split across its versions")
            share = 100 / len(svc.versions)
            weighted = [(t.Ref.make(name=v.name, span=refs.at(i), spans={}), share, refs.at(i)) for v in svc.versions]
            break
        weighted.append((ref, float(weight), refs.at(i)))
    total = sum(w for _, w, _ in weighted)
    if total <= 0:
        return t.DirectResponse.make(status=500, span=rule.span, spans={})
    dests = [t.WeightedVersion.make(version=r, weight=None if len(weighted) == 1 else round(w * 100 / total, 4),
                                    span=sp, spans={}) for r, w, sp in weighted]
    cx.imported(res, f"{where}.backendRefs")
    return t.Forward.make(destinations=dests, mirror=mirror, span=rule.at("backendRefs"), spans={})


def _version(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, ref, at: Span):
    """A backendRef as a version of the parent: None for the parent itself, False when unusable."""
    if not isinstance(ref, YMap) or ref.get("kind", "Service") != "Service":
        cx.refuse(res, "backendRef", at, "only Service backends are expressible")
        return False
    ns = str(ref.get("namespace") or res.namespace)
    backend = cx.inv.services.get((ns, str(ref.get("name"))))
    if backend is None:
        cx.diags.append(diag("MP906", f"{res.label}: backend Service `{ns}/{ref.get('name')}` is not in the inputs",
                             at))
        return False
    if backend is ksvc:
        return None
    extra = {k: v for k, v in backend.selector.items() if ksvc.selector.get(k) != v}
    if not ksvc.selector or not selects(ksvc.selector, backend.selector) or not extra:
        cx.diags.append(diag("MP912", f"{res.label}: backend `{backend.resource.name}` is not a version of "
                                      f"`{ksvc.resource.name}` (its selector does not narrow the parent's)", at))
        return False
    name = mesh_name(extra.get("version") or backend.resource.name)
    version = svc.version(name)
    if version is None:
        version = t.Version.make(name=name, labels=extra, span=backend.resource.body.span, spans={})
        svc.versions.append(version)
    return t.Ref.make(name=name, span=at, spans={})


def _retry(cx: Context, res: Resource, retry, where: str) -> t.Retry | None:
    if not isinstance(retry, YMap):
        return None
    attempts = retry.get("attempts")
    codes = retry.get("codes")
    out = t.Retry.make(attempts=int(attempts) if isinstance(attempts, int) else 1, span=retry.span, spans={})
    if isinstance(codes, YSeq) and codes:
        if all(isinstance(c, int) and 500 <= c <= 599 for c in codes):
            out.on = ["5xx"]
            cx.approximate(res, f"{where}.retry.codes", retry.at("codes"), f"codes {', '.join(map(str, codes))} "
                           "imported as `5xx` (every 5xx): safe for amplification, which it can only overstate")
        else:
            cx.refuse(res, f"{where}.retry.codes", retry.at("codes"), "only 5xx codes are expressible")
    if "backoff" in retry:
        out.backoff_ms = cx.duration_ms(res, retry, "backoff", f"{where}.retry")
    cx.imported(res, f"{where}.retry")
    return out


# ---- Gateways (north-south)
class ApiGateway:
    """A Gateway API Gateway as the token and Service rules see it: Istio labels
    the pods it deploys with the Gateway's name."""

    def __init__(self, res: Resource, namespace: str) -> None:
        self.res = res
        self.namespace = namespace
        self.labels = {"gateway.networking.k8s.io/gateway-name": res.name}

def gateway_ingresses(cx: Context, gateways: list[Resource], routes: list[Resource], emitting: bool) -> None:
    """One ingress per (HTTPRoute, Gateway parent): the Gateway's HTTP/HTTPS
    listeners (sectionName picks some), the route's hostnames that the
    listeners admit, its rules in Gateway API's precedence, forwarding to
    Services. Istio deploys a Gateway of class `istio` as `<name>-istio`."""
    from .istio_ingress import _unique, host_covers

    by_key = {(g.namespace, g.name): g for g in gateways}
    taken = {s.name for s in cx.mesh.services} | {g.name for g in cx.mesh.ingresses}
    used: set = set()
    for order, res in enumerate(sorted(routes, key=lambda r: (r.created or "~", r.namespace, r.name))):
        refs = res.spec.get("parentRefs")
        parents = [(i, r) for i, r in enumerate(refs if isinstance(refs, YSeq) else [])
                   if isinstance(r, YMap) and r.get("kind", "Gateway") == "Gateway"]
        for i, ref in parents:
            gw = by_key.get((str(ref.get("namespace") or res.namespace), str(ref.get("name"))))
            if gw is None:
                cx.diags.append(diag("MP918", f"{res.label}: parent Gateway `{ref.get('name')}` is not in the inputs",
                                     refs.at(i)))
                continue
            used.add(id(gw))
            listeners, patterns = _listeners(cx, gw, ref.get("sectionName"), emitting)
            if not listeners:
                continue
            names = [str(h) for h in items_of(res.spec.get("hostnames"))] or ["*"]
            hosts = []
            for h in names:
                for p in patterns:
                    got = h if host_covers(p, h) else p if host_covers(h, p) else None
                    if got is not None and got not in hosts:
                        hosts.append(got)
            if not hosts:
                cx.approximate(res, "spec.hostnames", res.spec.at("hostnames"), f"no listener of {gw.label} admits "
                               "these hostnames: the route is not attached (exact)")
                continue
            cls = str(gw.spec.get("gatewayClassName") or "")
            account = f"{gw.name}-{cls}" if cls == "istio" else gw.name
            if cls != "istio":
                cx.diags.append(diag("MP921", f"{gw.label}: class `{cls}` deploys its gateway as its controller "
                                              f"decides; taken as running as `{gw.namespace}/{account}`",
                                     gw.spec.at("gatewayClassName") if "gatewayClassName" in gw.spec else gw.span))
            name = _unique(mesh_name(res.name if len(parents) == 1 else f"{res.name}-{gw.name}"), taken)
            ingress = t.Ingress.make(name=name, namespace=gw.namespace, account=mesh_name(account),
                                     listeners=listeners, hosts=hosts, file=res.path, span=refs.at(i), spans={})
            entries = []
            rules = res.spec.get("rules")
            for j, rule in enumerate(rules if isinstance(rules, YSeq) else [empty_map(res.spec)]):
                if isinstance(rule, YMap):
                    at = rules.at(j) if isinstance(rules, YSeq) else res.spec.span
                    for key, built in rules_of(cx, res, rule, f"spec.rules[{j}]", at,
                                               lambda rule=rule, j=j: _ingress_backends(cx, res, rule,
                                                                                        f"spec.rules[{j}]")):
                        entries.append(((*key, order, j), built))
            ingress.rules = [r for _, r in sorted(entries, key=lambda e: e[0])]
            for k, r in enumerate(ingress.rules):
                r.index = k
            cx.mesh.ingresses.append(ingress)
            cx.gateway_of[ingress.name] = ApiGateway(gw, ingress.namespace)
            cx.coverage.imported[res.kind] += 1
    for g in gateways:
        if id(g) not in used:
            cx.approximate(g, "spec", g.body.key_at("spec"), "no HTTPRoute in the inputs attaches to this Gateway: "
                           "no ingress is imported for it (exact: it routes nothing)")
        else:
            cx.coverage.imported[g.kind] += 1


def _listeners(cx: Context, gw: Resource, section, emitting: bool):
    out: dict[int, t.Listener] = {}
    patterns: list[str] = []
    raw = gw.spec.get("listeners")
    for i, ls in enumerate(raw if isinstance(raw, YSeq) else []):
        if not isinstance(ls, YMap) or (section is not None and ls.get("name") != section):
            continue
        proto, port = str(ls.get("protocol") or ""), ls.get("port")
        tls = ls.get("tls") if isinstance(ls.get("tls"), YMap) else None
        if proto not in ("HTTP", "HTTPS") or not isinstance(port, int) or \
                (tls is not None and tls.get("mode", "Terminate") != "Terminate"):
            cx.diags.append(diag("MP922", f"{gw.label}: listener `{ls.get('name')}` ({proto}) is not imported: the "
                                          "language's ingress terminates HTTP and HTTPS only", raw.at(i)))
            continue
        listener = t.Listener.make(port=port, protocol="http", span=raw.at(i), spans={})
        if proto == "HTTPS":
            refs = tls.get("certificateRefs") if tls is not None else None
            first = refs[0] if isinstance(refs, YSeq) and refs and isinstance(refs[0], YMap) else {}
            secret = str(first.get("name") or gw.name)
            base = f"tls/{mesh_name(str(first.get('namespace') or gw.namespace))}/{mesh_name(secret)}"
            cx.diags.append(diag("MP920", f"{gw.label}: listener `{ls.get('name')}` terminates TLS with Secret "
                                          f"`{secret}`: " + (f"provide `{base}.crt` and `{base}.key`" if emitting
                                                             else "its files are not checked"), raw.at(i)))
            if emitting:
                listener.protocol, listener.cert_file, listener.key_file = "https", base + ".crt", base + ".key"
        out.setdefault(port, listener)
        host = ls.get("hostname")
        patterns.append(str(host) if host else "*")
    return list(out.values()), patterns


def _ingress_backends(cx: Context, res: Resource, rule: YMap, where: str):
    for i, f in enumerate(items_of(rule.get("filters"))):
        ftype = f.get("type") if isinstance(f, YMap) else None
        if ftype == "RequestRedirect":
            red = f.get("requestRedirect") if isinstance(f.get("requestRedirect"), YMap) else {}
            path = red.get("path") if isinstance(red, YMap) else None
            if set(red) - {"path", "statusCode", "scheme", "hostname", "port"} or \
                    (path is not None and (not isinstance(path, YMap) or path.get("type") != "ReplaceFullPath")):
                cx.refuse(res, f"{where}.filters[{i}]", rule["filters"].at(i), "only a redirect with a full path, "
                          "scheme, hostname and port is expressible; the rule is left out", "routing")
                return None
            uri = str(path.get("replaceFullPath")) if isinstance(path, YMap) else ""
            if red.get("hostname"):
                port = f":{red['port']}" if red.get("port") else ""
                uri = f"{red.get('scheme') or 'http'}://{red['hostname']}{port}{uri or '/'}"
            if not uri:
                cx.refuse(res, f"{where}.filters[{i}]", rule["filters"].at(i), "a redirect that keeps the path "
                          "cannot be expressed; the rule is left out", "routing")
                return None
            cx.imported(res, f"{where}.filters[{i}]")
            return t.Redirect.make(uri=uri, status=int(red.get("statusCode") or 302), span=rule["filters"].at(i),
                                   spans={})
        if ftype not in ("RequestHeaderModifier", "ResponseHeaderModifier", "URLRewrite"):
            cx.refuse(res, f"{where}.filters[{i}]", rule["filters"].at(i), f"filter `{ftype}` cannot be expressed "
                      "at an ingress; the rule is left out", "routing")
            return None
    refs = rule.get("backendRefs")
    if not isinstance(refs, YSeq) or not refs:
        return t.DirectResponse.make(status=500, span=rule.span, spans={})
    weighted = []
    for i, b in enumerate(refs):
        if not isinstance(b, YMap) or b.get("kind", "Service") != "Service" or b.get("filters"):
            cx.refuse(res, f"{where}.backendRefs[{i}]", refs.at(i), "only Service backends without filters are "
                      "expressible; the rule is left out", "routing")
            return None
        ns = str(b.get("namespace") or res.namespace)
        found = cx.inv.services.get((ns, str(b.get("name"))))
        if found is None:
            cx.diags.append(diag("MP906", f"{res.label}: backend Service `{ns}/{b.get('name')}` is not in the inputs",
                                 refs.at(i)))
            return None
        weight = b.get("weight", 1)
        weighted.append((cx.service_for(found).name, float(weight) if isinstance(weight, (int, float)) else 1.0,
                         refs.at(i)))
    total = sum(w for _, w, _ in weighted)
    if total <= 0:
        return t.DirectResponse.make(status=500, span=rule.span, spans={})
    cx.imported(res, f"{where}.backendRefs")
    return t.Forward.make(destinations=[
        t.WeightedVersion.make(version=t.Ref.make(name=n, span=sp, spans={}),
                               weight=None if len(weighted) == 1 else round(w * 100 / total, 4), span=sp, spans={})
        for n, w, sp in weighted], span=rule.at("backendRefs"), spans={})
