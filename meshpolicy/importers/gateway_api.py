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
from .yamlmarks import YMap, YSeq, empty_map


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
                cx.diags.append(diag("MP903", f"{res.label}: its parent `{ref.get('name')}` is a "
                                              f"{ref.get('kind') or 'Gateway'}: ingress is not imported", refs.at(i)))
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
    action = _backends(cx, res, ksvc, svc, rule, where)
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
        out.append((key, t.RouteRule.make(index=0, match=m, action=action, timeout_ms=timeout, retry=retry,
                                          span=span, spans={})))
    return out


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
        cx.refuse(res, f"{where}.queryParams", entry.key_at("queryParams"), "query-parameter matches cannot be "
                  "expressed yet; the match is left out", "routing")
        return None
    method = entry.get("method")
    if isinstance(method, str):
        m.methods.append(method.upper())
    if not _headers(cx, res, entry, m, where):
        return None
    cx.imported(res, where)
    return m, (*rank, 0 if method else 1, -len(m.headers), 0)


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
        cx.refuse(res, f"{where}.filters[{i}]", filters.at(i) if isinstance(filters, YSeq) else rule.span,
                  f"filter `{ftype}` cannot be expressed yet", "routing")
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
