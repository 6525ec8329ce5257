"""Istio Gateways and the VirtualServices bound to them -> ingresses.

Istio's gateway is a workload (selected by the Gateway's `selector`, in any
namespace) configured by Gateway resources (its servers: ports, protocols,
hosts, TLS) and by the VirtualServices that name the Gateway in `gateways`
(their `hosts` pick which requests they route). The language's ingress has
one host list for its rules, so each (VirtualService, Gateway) pair is one
ingress: its hosts the VirtualService's hosts that the Gateway's servers
admit, its listeners the Gateway's servers, its identity the gateway
workload's, its rules the VirtualService's `http` routes, whose destinations
are services (each then routed by its own route: MP930 where Istio's gateway
would route otherwise). docs/import.md, "Gateways".
"""

from __future__ import annotations

from ..codes import diag
from ..model import types as t
from .context import Context
from .inventory import Resource, labels_of, mesh_name, selects
from .istio_routes import answer, http_rules
from .yamlmarks import YMap, YSeq, items_of

# Istio's default installation: the `istio: ingressgateway` workload in the root namespace.
DEFAULT_GATEWAY_ACCOUNT = "istio-ingressgateway-service-account"
_HTTP_PROTOCOLS = {"HTTP": "http", "HTTP2": "http", "GRPC": "http", "HTTPS": "https"}


def host_covers(pattern: str, host: str) -> bool:
    """Whether an Istio host pattern (`*`, `*.suffix`, an exact name) takes host (itself possibly a wildcard)."""
    pattern, host = pattern.lower(), host.lower()
    return pattern == "*" or pattern == host or (pattern.startswith("*.") and host.endswith(pattern[1:]))


def gateway_identity(cx: Context, res: Resource, root_ns: str) -> tuple[str, str, dict[str, str]]:
    """(namespace, account, labels) of the workload an Istio Gateway configures."""
    sel = res.spec.get("selector")
    labels = labels_of(sel) if isinstance(sel, YMap) else {}
    key = tuple(sorted(labels.items()))
    if key not in cx.gateway_workloads:  # many Gateways share one selector (istio: ingressgateway)
        cx.gateway_workloads[key] = cx.inv.workloads_in(None, labels) if labels else []
    found = cx.gateway_workloads[key]
    if found:
        ids = sorted({(w.resource.namespace, w.account) for w in found})
        if len(ids) > 1:
            cx.approximate(res, "spec.selector", res.spec.at("selector"), "selects gateway workloads with several "
                           f"identities; imported as `{ids[0][0]}/{ids[0][1]}`")
        return ids[0][0], ids[0][1], labels
    if labels.get("istio") == "ingressgateway" or not labels:
        cx.diags.append(diag("MP921", f"{res.label}: no workload in the inputs has the selector's labels; "
                                      f"taken as Istio's default ingress gateway ({root_ns}/{DEFAULT_GATEWAY_ACCOUNT})",
                             res.spec.at("selector") if "selector" in res.spec else res.body.key_at("spec")))
        return root_ns, DEFAULT_GATEWAY_ACCOUNT, labels
    account = mesh_name(labels.get("app") or labels.get("istio") or res.name)
    cx.diags.append(diag("MP921", f"{res.label}: no workload in the inputs has the selector's labels; taken as "
                                  f"running as `{res.namespace}/{account}`", res.spec.at("selector")))
    return res.namespace, account, labels


class IstioGateway:
    """One Gateway resource read once: its identity and servers."""

    def __init__(self, cx: Context, res: Resource, root_ns: str, emitting: bool) -> None:
        self.res = res
        self.namespace, self.account, self.labels = gateway_identity(cx, res, root_ns)
        self.servers: list[tuple[t.Listener, list[tuple[str, str]]]] = []  # (listener, [(ns part, host)])
        servers = res.spec.get("servers")
        for i, server in enumerate(servers if isinstance(servers, YSeq) else []):
            if isinstance(server, YMap):
                got = _server(cx, res, server, servers.at(i), f"spec.servers[{i}]", emitting)
                if got is not None:
                    self.servers.append(got)
        cx.coverage.imported[res.kind] += 1

    def hosts_for(self, vs: Resource, hosts: list[str]) -> list[str]:
        """The VirtualService hosts the servers admit (Istio: a server host
        `ns/host` admits VirtualServices of ns; `./` the Gateway's; `*/` any)."""
        out: list[str] = []
        for _, admitted in self.servers:
            for ns, pattern in admitted:
                if ns not in ("*", vs.namespace) and not (ns == "." and vs.namespace == self.res.namespace):
                    continue
                for h in hosts:
                    got = h if host_covers(pattern, h) else pattern if host_covers(h, pattern) else None
                    if got is not None and got not in out:
                        out.append(got)
        return out


def _server(cx: Context, res: Resource, server: YMap, at, where: str, emitting: bool):
    port = server.get("port")
    number = port.get("number") if isinstance(port, YMap) else None
    proto = str(port.get("protocol") or "").upper() if isinstance(port, YMap) else ""
    if not isinstance(number, int) or not 0 < number < 65536:
        cx.refuse(res, f"{where}.port", server.at("port") if "port" in server else at, "no port number; the server "
                  "is left out")
        return None
    tls = server.get("tls") if isinstance(server.get("tls"), YMap) else None
    mode = str(tls.get("mode") or "SIMPLE") if tls is not None else None
    kind = _HTTP_PROTOCOLS.get(proto)
    if kind == "https" and mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL") or kind is None:
        cx.diags.append(diag("MP922", f"{res.label}: server on port {number} ({proto or 'no protocol'}"
                                      f"{', TLS ' + mode if mode else ''}) is not imported: the language's ingress "
                                      "terminates HTTP and HTTPS only", at))
        return None
    listener = t.Listener.make(port=number, protocol="http", span=at, spans={})
    if kind == "https":
        if mode in ("MUTUAL", "OPTIONAL_MUTUAL"):
            cx.approximate(res, f"{where}.tls.mode", tls.at("mode"), f"{mode}: client certificates are not "
                           "expressible; imported as TLS without them (the listener admits more callers)")
        secret = tls.get("credentialName")
        names = items_of(tls.get("credentialNames"))
        if secret is None and names:
            secret = names[0]
            if len(names) > 1:
                cx.approximate(res, f"{where}.tls.credentialNames", tls.at("credentialNames"), "names several "
                               "certificates (RSA and ECDSA); imported with the first")
        files = [str(tls.get("serverCertificate") or ""), str(tls.get("privateKey") or "")]
        if secret is None and all(files):
            cx.approximate(res, f"{where}.tls", server.at("tls"), "names certificate files on the gateway's "
                           "file system; imported with those paths, which must exist where meshc reads the policy")
        else:
            secret_ns, _, secret_name = str(secret or res.name).rpartition("/")
            base = f"tls/{mesh_name(secret_ns or res.namespace)}/{mesh_name(secret_name)}"
            files = [base + ".crt", base + ".key"]
            cx.diags.append(diag("MP920", f"{res.label}: port {number} terminates TLS with Secret "
                                          f"`{secret or '(none)'}`: " +
                                 (f"provide its certificate chain and key as `{files[0]}` and `{files[1]}`"
                                  if emitting else "the listener is taken as terminating TLS; its files are not "
                                  "checked (`meshc import` writes where to put them)"),
                                 tls.at("credentialName") if "credentialName" in tls else server.at("tls")))
        if emitting or secret is None and all(files):
            listener.protocol = "https"
            listener.cert_file, listener.key_file = files
    elif tls is not None and tls.get("httpsRedirect") is True:
        cx.approximate(res, f"{where}.tls.httpsRedirect", tls.at("httpsRedirect"), "answers every request on this "
                       "port with a redirect to HTTPS; imported as a plain listener routed like the others")
    admitted = []
    hosts = server.get("hosts")
    for h in hosts if isinstance(hosts, YSeq) else []:
        ns, _, host = str(h).rpartition("/")
        admitted.append((ns or "*", host))
    for key in server:
        if key not in ("port", "hosts", "tls", "name", "bind", "defaultEndpoint"):
            cx.refuse(res, f"{where}.{key}", server.key_at(key), "the language has no equivalent")
    cx.imported(res, where)
    return listener, admitted


def gateway_virtual_services(cx: Context, gateways: list[Resource], services: list[Resource], root_ns: str,
                             emitting: bool) -> None:
    """Reads every Istio Gateway and adds one ingress per (VirtualService, Gateway) it binds."""
    read = {(g.namespace, g.name): IstioGateway(cx, g, root_ns, emitting) for g in gateways}
    bound: set[tuple[str, str]] = set()
    served: dict[tuple[str, str, str], Resource] = {}  # (gateway, host) -> the first VirtualService routing it
    taken = {s.name for s in cx.mesh.services}
    for res in sorted(services, key=lambda r: r.sort_key()):
        names = res.spec.get("gateways")
        refs = [str(g) for g in names] if isinstance(names, YSeq) else []
        hosts = [str(h) for h in items_of(res.spec.get("hosts"))] if isinstance(res.spec.get("hosts"), YSeq) else []
        for g in refs:
            if g == "mesh":
                continue
            ns, _, name = g.rpartition("/")
            gw = read.get((ns or res.namespace, name))
            if gw is None:
                continue  # MP918, reported with the mesh routes
            bound.add((gw.res.namespace, gw.res.name))
            admitted = _valid_hosts(cx, res, gw.hosts_for(res, hosts))
            if not admitted:
                cx.approximate(res, "spec.hosts", res.spec.at("hosts"), f"none of its hosts is served by "
                               f"{gw.res.label}; Istio ignores it there (exact)")
                continue
            for h in admitted:
                first = served.setdefault((gw.res.namespace, gw.res.name, h), res)
                if first is not res:
                    cx.approximate(res, "spec.hosts", res.spec.at("hosts"), f"host `{h}` is also routed through "
                                   f"{gw.res.label} by {first.label}; Istio merges their routes (the oldest "
                                   "first), the import keeps two ingresses for it")
                    break
            ingress_name = _unique(mesh_name(res.name if len(refs) - ("mesh" in refs) == 1
                                             else f"{res.name}-{gw.res.name}"), taken)
            ingress = t.Ingress.make(name=ingress_name, namespace=gw.namespace, account=gw.account,
                                     listeners=_merged_listeners(cx, gw), hosts=admitted, file=res.path,
                                     span=res.spec.at("gateways"), spans={})
            ingress.rules = http_rules(cx, res, lambda route, where: _ingress_action(cx, res, route, where),
                                       default_retry=False, ingress=True)
            for key in ("tcp", "tls"):
                if key in res.spec:
                    cx.refuse(res, f"spec.{key}", res.spec.key_at(key), "only HTTP routes are imported")
            cx.mesh.ingresses.append(ingress)
            cx.gateway_of[ingress.name] = gw
    for g in gateways:
        if (g.namespace, g.name) not in bound:
            cx.approximate(g, "spec", g.body.key_at("spec"), "no VirtualService in the inputs routes through this "
                           "Gateway: it answers every request 404, and no ingress is imported for it (exact)")


def _valid_hosts(cx: Context, res: Resource, hosts: list[str]) -> list[str]:
    """Lower-cased hosts the language can hold (MP240's rule); the others are said (MP904)."""
    from ..checks.hosts import host_problem

    out = []
    for h in hosts:
        h = h.lower().rstrip(".")
        why = host_problem(h, wildcard=True)
        if why is not None or not h:
            cx.refuse(res, "spec.hosts", res.spec.at("hosts") if "hosts" in res.spec else res.span,
                      f"host `{h}` {why or 'is empty'}; left out", "routing")
        elif h not in out:
            out.append(h)
    return out


def drop_gateway_services(cx: Context) -> None:
    """The Kubernetes Service in front of a gateway workload (istio-system's
    `istio-ingressgateway`) is the ingress itself, not a mesh service: kept,
    it would share the ingress's identity (MP108) and answer for it."""
    ids = {(g.namespace, g.account) for g in cx.mesh.ingresses}
    gateways = {id(gw): gw for gw in cx.gateway_of.values()}.values()
    for key, ksvc in list(cx.inv.services.items()):
        runs_as_gateway = ksvc.workloads and all((w.resource.namespace, w.account) in ids for w in ksvc.workloads)
        fronts = any(ksvc.selector and gw.labels and ksvc.resource.namespace == gw.namespace
                     and selects(gw.labels, ksvc.selector) for gw in gateways)
        if not (runs_as_gateway or fronts):
            continue
        svc = cx.services.pop(key)
        del cx.inv.services[key]
        cx.mesh.services = [s for s in cx.mesh.services if s is not svc]
        cx.mesh.routes = [r for r in cx.mesh.routes if r.service.name != svc.name]
        cx.routes.pop(svc.name, None)
        cx._by_identity = None
        cx.approximate(ksvc.resource, "spec.selector", ksvc.resource.spec.at("selector") if "selector" in
                       ksvc.resource.spec else ksvc.resource.span, "selects an ingress gateway's pods: it is the "
                       "ingress's own front, not imported as a mesh service (exact for requests through the gateway)")


def _unique(name: str, taken: set[str]) -> str:
    base = name if name not in taken else f"{name}-ingress"
    out, n = base, 2
    while out in taken:
        out, n = f"{base}-{n}", n + 1
    taken.add(out)
    return out


def _merged_listeners(cx: Context, gw: IstioGateway) -> list[t.Listener]:
    """One listener per port (servers that share a port differ by host or certificate: the first is kept)."""
    out: dict[int, t.Listener] = {}
    for ls, _ in gw.servers:
        first = out.setdefault(ls.port, ls.model_copy())
        if first is not ls and out[ls.port].cert_file != ls.cert_file and ls.cert_file is not None:
            cx.approximate(gw.res, "spec.servers", ls.span, f"port {ls.port} serves several certificates (by "
                           "SNI); the ingress is imported with the first")
    return list(out.values())


def _ingress_action(cx: Context, res: Resource, route: YMap, where: str):
    answered = answer(cx, res, route, where)
    if answered is not None:
        return answered or None
    dests = route.get("route")
    if not isinstance(dests, YSeq) or not dests:
        cx.refuse(res, where, route.span, "a route without `route`, `redirect` or `directResponse`")
        return None
    weighted = []
    for j, d in enumerate(dests):
        dest = d.get("destination") if isinstance(d, YMap) else None
        if not isinstance(dest, YMap) or dest.get("host") is None:
            continue
        found = cx.resolve(res, dest["host"], dest.at("host"))
        if not found:
            if cx.external_host(str(dest["host"])):
                cx.refuse(res, f"{where}.route[{j}]", dests.at(j), "sends gateway traffic to an external host; "
                          "the language's ingress forwards to services only; the route is left out", "routing")
            return None
        svc = cx.service_for(found[0])
        route_owner = cx.route_owner.get(svc.name)
        if dest.get("subset") is not None or (svc.name in cx.routes):
            what = f"subset `{dest['subset']}`" if dest.get("subset") is not None else "the whole Service"
            cx.diags.append(diag("MP930", f"{res.label}: `{where}.route[{j}]` sends gateway traffic to {what} of "
                                          f"`{found[0].resource.name}`; imported as a forward to the service, which "
                                          "then routes it by its own route"
                                 + (f" ({route_owner.label})" if route_owner else ""), dest.at("host")))
        if "headers" in d:  # per-destination header operations: no equivalent on a split share
            cx.refuse(res, f"{where}.route[{j}].headers", d.key_at("headers"), "header operations on one "
                      "destination of a split cannot be expressed; left out", "the headers services see")
        weight = d.get("weight")
        weighted.append(t.WeightedVersion.make(version=t.Ref.make(name=svc.name, span=dest.at("host"), spans={}),
                                               weight=float(weight) if isinstance(weight, (int, float)) and
                                               len(dests) > 1 else None, span=dests.at(j), spans={}))
    if not weighted:
        return None
    if len(weighted) > 1 and any(w.weight is None for w in weighted):
        cx.refuse(res, f"{where}.route", route.at("route"), "several destinations without weights; left out",
                  "routing")
        return None
    if "mirror" in route or "mirrors" in route:
        cx.refuse(res, f"{where}.mirror", route.key_at("mirror" if "mirror" in route else "mirrors"),
                  "mirroring at a gateway cannot be expressed (the language mirrors between versions of a service)")
    cx.imported(res, f"{where}.route")
    return t.Forward.make(destinations=weighted, span=route.at("route"), spans={})
