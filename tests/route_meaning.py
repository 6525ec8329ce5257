"""Evaluators of what the gateway-api and linkerd targets' documents mean,
read only from the YAML plus the documented deployment convention (pods
labelled `app: <service>` and their version's labels, running as the
service's account; Service `<service>-<version>` selects a version's pods).

- routes(): Gateway API route semantics (GAMMA): the route whose parentRef
  is the destination Service, in the caller's namespace (a consumer
  route) or else the Service's own; among every match of every rule that holds,
  the most specific wins (Exact path, then longer PathPrefix, then a
  method, then more headers; a RegularExpression ranks lowest here, as the
  spec leaves it open), ties to the earlier rule; no match is 404.
  backendRef weights become version shares.
- linkerd_allowed(): Linkerd inbound policy: a Server for the port; allowed
  when some AuthorizationPolicy targeting it has all its authentications
  satisfied (MeshTLSAuthentication: the client's service account or `*`;
  NetworkAuthentication: any client), else by the Server's accessPolicy.
  Meshed clients (mesh services) always present their identity.
"""

from __future__ import annotations

import re2


def _holds(m: dict, req) -> bool:
    headers = req.header_map
    path = m.get("path", {"type": "PathPrefix", "value": "/"})
    v = path["value"]
    if path["type"] == "Exact" and req.path != v:
        return False
    if path["type"] == "PathPrefix":
        p = v.rstrip("/")
        if p and not (req.path == p or req.path.startswith(p + "/")):
            return False
    if path["type"] == "RegularExpression" and re2.fullmatch(v, req.path) is None:
        return False
    if "method" in m and m["method"] != req.method:
        return False
    for h in m.get("headers", []):
        got = headers.get(h["name"].lower())
        if got is None:
            return False
        if h.get("type", "Exact") == "Exact" and got != h["value"]:
            return False
        if h.get("type") == "RegularExpression" and re2.fullmatch(h["value"], got) is None:
            return False
    return True


def _rank(m: dict, regex_rank: bool = False) -> tuple:
    """regex_rank: Istio's order (pilot's sortHTTPRoutes): a longer regular
    expression ranks higher; otherwise all of them rank alike, lowest."""
    path = m.get("path", {"type": "PathPrefix", "value": "/"})
    kind = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}[path["type"]]
    length = len(path["value"]) if kind > 1 or regex_rank else 0
    return (kind, length, "method" in m, len(m.get("headers", [])))


def route_of(docs: list[dict], service: str, namespace: str, caller_namespace: str | None = None) -> dict | None:
    """The route a caller in caller_namespace meets (GAMMA): its own
    namespace's route for the Service (a consumer route), else the
    Service's own route (the producer route, in the Service's namespace)."""
    def attached(d: dict, ns: str) -> bool:
        return d["kind"] in ("HTTPRoute", "GRPCRoute") and d["metadata"]["namespace"] == ns and any(
            p["name"] == service and p.get("kind", "Service") == "Service" and p.get("namespace", ns) == namespace
            for p in d["spec"]["parentRefs"])

    for ns in dict.fromkeys(n for n in (caller_namespace, namespace) if n):
        for d in docs:
            if attached(d, ns):
                return d
    return None


def routes(docs: list[dict], mesh, req, regex_rank: bool = False) -> tuple:
    """(kind, rule index or None, weights, mirror, status) like the reference's."""
    svc = mesh.service(req.destination)
    caller = mesh.service(req.source) if req.source else None
    route = route_of(docs, svc.name, svc.namespace, caller.namespace if caller is not None else None)
    if route is None:
        shares = {v.name: 100.0 / len(svc.versions) for v in svc.versions}
        return ("default", None, shares, None, None)
    best = None
    for i, rule in enumerate(route["spec"]["rules"]):
        for m in rule.get("matches") or [{}]:
            if _holds(m, req):
                key = (_rank(m, regex_rank), -i)
                if best is None or key > best[0]:
                    best = (key, i, rule)
    if best is None:
        return ("no_route", None, {}, None, 404)
    _, i, rule = best
    # a named rule says which policy rule it is (routes may leave rules out)
    name = rule.get("name", "")
    i = int(name[5:]) - 1 if name.startswith("rule-") else None if name == "default" else i
    for f in rule.get("filters", []):
        if f["type"] == "RequestRedirect":
            return ("redirect", i, {}, None, f["requestRedirect"].get("statusCode", 302))
    refs = rule.get("backendRefs", [])
    total = sum(r.get("weight", 1) for r in refs)
    weights: dict[str, float] = {}
    for r in refs:
        version = r["name"][len(svc.name) + 1:] if r["name"] != svc.name else None
        weights[version] = weights.get(version, 0.0) + 100.0 * r.get("weight", 1) / total
    mirror = None
    for f in rule.get("filters", []):
        if f["type"] == "RequestMirror":
            body = f["requestMirror"]
            pct = body.get("percent", 100) if "fraction" not in body else \
                100.0 * body["fraction"]["numerator"] / body["fraction"].get("denominator", 100)
            mirror = (body["backendRef"]["name"][len(svc.name) + 1:], float(pct))
    return ("forward", i, weights, mirror, None)


def linkerd_allowed(docs: list[dict], mesh, req) -> bool:
    dest = mesh.service(req.destination)
    port = dest.ports[0].number
    server = next(d for d in docs if d["kind"] == "Server" and d["metadata"]["namespace"] == dest.namespace
                  and d["spec"]["podSelector"]["matchLabels"].get("app") == dest.name and d["spec"]["port"] == port)
    caller = mesh.service(req.source) if req.source is not None else None
    by_name = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs}

    def satisfied(ref: dict) -> bool:
        auth = by_name[(ref["kind"], ref.get("namespace", dest.namespace), ref["name"])]
        if ref["kind"] == "NetworkAuthentication":
            return True
        if caller is None:
            return False
        spec = auth["spec"]
        if "*" in spec.get("identities", []):
            return True
        return any(r["kind"] == "ServiceAccount" and r["name"] == caller.account
                   and r.get("namespace", auth["metadata"]["namespace"]) == caller.namespace
                   for r in spec.get("identityRefs", []))

    for d in docs:
        if d["kind"] == "AuthorizationPolicy" and d["metadata"]["namespace"] == dest.namespace \
                and d["spec"]["targetRef"]["kind"] == "Server" and d["spec"]["targetRef"]["name"] == server["metadata"]["name"]:
            if all(satisfied(r) for r in d["spec"]["requiredAuthenticationRefs"]):
                return True
    policy = server["spec"].get("accessPolicy", "deny")
    if policy == "all-unauthenticated":
        return True
    if policy == "all-authenticated":
        return caller is not None
    return False
