"""ServiceEntries -> external services; `outboundTrafficPolicy` -> the egress stance.

Istio (docs/import.md, "Egress"): a MESH_EXTERNAL ServiceEntry adds hosts
outside the mesh to the registry; HTTP ports are seen at L7 by the caller's
sidecar, HTTPS/TLS/TCP ports pass through (the application's own TLS); a
DestinationRule with `tls.mode: SIMPLE` for the host makes the sidecar
originate TLS, which is the language's `port N tls`. Istio authorizes
nothing on the way out (AuthorizationPolicies apply at destinations), so
each external gets `allow * -> E`. Undeclared hosts: MeshConfig's
`outboundTrafficPolicy.mode`, default ALLOW_ANY, which a Sidecar overrides
for its workloads; the language has one mesh-wide stance.
"""

from __future__ import annotations

import yaml

from ..checks.hosts import host_problem
from ..codes import diag
from ..model import types as t
from .context import Context
from .inventory import Resource, mesh_name
from .yamlmarks import YMap, YSeq

_PORT_KINDS = {"HTTP": "http", "HTTP2": "http", "GRPC": "http", "GRPC-WEB": "http", "HTTPS": "tcp", "TLS": "tcp",
               "TCP": "tcp", "MONGO": "tcp", "MYSQL": "tcp", "REDIS": "tcp"}


def service_entries(cx: Context, entries: list[Resource], rules: list[Resource]) -> None:
    by_host: dict[str, list[Resource]] = {}  # DestinationRules by host, oldest first: read once, not per port
    for dr in sorted(rules, key=lambda r: r.sort_key()):
        by_host.setdefault(str(dr.spec.get("host") or "").lower(), []).append(dr)
    rules = by_host
    taken = {s.name for s in cx.mesh.services} | {g.name for g in cx.mesh.ingresses}
    for res in sorted(entries, key=lambda r: r.sort_key()):
        spec = res.spec
        location = str(spec.get("location") or "MESH_EXTERNAL")
        if location != "MESH_EXTERNAL":
            cx.diags.append(diag("MP929", f"{res.label}: location {location} adds workloads to the mesh (VMs, "
                                          "other clusters); not imported", spec.at("location")))
            continue
        hosts = []
        raw = spec.get("hosts")
        for i, h in enumerate(raw if isinstance(raw, YSeq) else []):
            host = str(h).lower().rstrip(".")
            if host_problem(host, wildcard=False) is not None or not host:
                cx.diags.append(diag("MP929", f"{res.label}: host `{h}` is not a concrete DNS name (a wildcard or "
                                              "an address); the language's externals name hosts exactly",
                                     raw.at(i)))
                continue
            hosts.append(host)
        ports = []
        raw_ports = spec.get("ports")
        for i, p in enumerate(raw_ports if isinstance(raw_ports, YSeq) else []):
            if not isinstance(p, YMap) or not isinstance(p.get("number"), int):
                continue
            proto = str(p.get("protocol") or "TCP").upper()
            kind = _PORT_KINDS.get(proto)
            if kind is None:
                cx.diags.append(diag("MP929", f"{res.label}: port {p['number']} ({proto}) cannot be expressed",
                                     raw_ports.at(i)))
                continue
            if kind == "http" and _originates_tls(cx, res, rules, hosts, p["number"]):
                kind = "tls"
                target = p.get("targetPort")
                if isinstance(target, int) and target != p["number"]:
                    cx.diags.append(diag("MP933", f"{res.label}: port {p['number']} is sent to port {target} with "
                                                  f"TLS; imported as `port {p['number']} tls`", raw_ports.at(i)))
            if all(x.number != p["number"] for x in ports):
                ports.append(t.ExternalPort.make(number=p["number"], protocol=kind, span=raw_ports.at(i), spans={}))
        if not hosts or not ports:
            cx.diags.append(diag("MP929", f"{res.label}: no " + ("host" if not hosts else "port") + " that the "
                                          "language can express; not imported", res.body.key_at("spec")))
            continue
        for key, why in (("endpoints", "the addresses Istio sends to instead of the hosts' DNS answers"),
                         ("addresses", "virtual addresses callers may dial"),
                         ("exportTo", "which namespaces see it; imported as seen by every workload"),
                         ("workloadSelector", "workloads it selects")):
            if key in spec:
                cx.approximate(res, f"spec.{key}", spec.key_at(key), f"{why}: not expressible; the external is "
                               "reached by its host names")
        name = mesh_name(res.name)
        if name in taken:
            name = f"{name}-external"
        n = 2
        while name in taken:
            name, n = f"{mesh_name(res.name)}-external-{n}", n + 1
        taken.add(name)
        ext = t.ExternalService.make(name=name, namespace=res.namespace, hosts=hosts, ports=ports,
                                     span=res.body.span, spans={})
        cx.mesh.externals.append(ext)
        cx.externals_by_host.update({h: ext for h in hosts})
        cx.coverage.imported[res.kind] += 1
        cx.imported(res, "spec.hosts")
        # Istio authorizes nothing on the way out: every workload may call it
        cx.mesh.auth_rules.append(t.AuthRule.make(
            index=len(cx.mesh.auth_rules), effect="allow", sources=[t.Source.make(kind="any", span=ext.span, spans={})],
            target=t.Ref.make(name=ext.name, span=ext.span, spans={}), span=ext.span, spans={}))


def _originates_tls(cx: Context, res: Resource, rules: dict[str, list[Resource]], hosts: list[str],
                    port: int) -> bool:
    """Whether a DestinationRule for one of the hosts sets `tls.mode: SIMPLE` for this port (port-level first)."""
    for dr in [d for h in hosts for d in rules.get(h, [])]:
        policy = dr.spec.get("trafficPolicy")
        if not isinstance(policy, YMap):
            continue
        mode = None
        levels = policy.get("portLevelSettings")
        for lvl in levels if isinstance(levels, YSeq) else []:
            if isinstance(lvl, YMap) and isinstance(lvl.get("port"), YMap) and lvl["port"].get("number") == port \
                    and isinstance(lvl.get("tls"), YMap):
                mode = lvl["tls"].get("mode")
        if mode is None and isinstance(policy.get("tls"), YMap):
            mode = policy["tls"].get("mode")
        if mode == "SIMPLE":
            return True
        if mode in ("MUTUAL", "ISTIO_MUTUAL"):
            cx.approximate(dr, "spec.trafficPolicy.tls.mode", dr.spec.at("trafficPolicy"), f"{mode}: a client "
                           "certificate towards an external host is not expressible; the port is imported as "
                           "written in the ServiceEntry")
    return False


def external_destination_rules(cx: Context, rules: list[Resource]) -> None:
    """DestinationRules for external hosts: `tls` was read with the ports;
    the rest (pools, outlier detection) has no equivalent on an external."""
    for res in rules:
        ext = cx.externals_by_host.get(str(res.spec.get("host") or "").lower())
        if ext is None:
            continue
        cx.coverage.imported[res.kind] += 1
        policy = res.spec.get("trafficPolicy")
        for key in (policy if isinstance(policy, YMap) else {}):
            if key == "tls":
                cx.imported(res, "spec.trafficPolicy.tls")
            elif key == "portLevelSettings":
                for lvl in policy[key] if isinstance(policy[key], YSeq) else []:
                    for k in (lvl if isinstance(lvl, YMap) else {}):
                        if k not in ("port", "tls"):
                            cx.refuse(res, f"spec.trafficPolicy.portLevelSettings.{k}", lvl.key_at(k),
                                      "the language has no equivalent on an external service")
            else:
                cx.refuse(res, f"spec.trafficPolicy.{key}", policy.key_at(key), "the language has no equivalent "
                          "on an external service")
        if "subsets" in res.spec:
            cx.refuse(res, "spec.subsets", res.spec.key_at("subsets"), "an external service has no versions")


def external_virtual_services(cx: Context, services: list[Resource]) -> None:
    """A mesh VirtualService for an external host. Its routes decide at the
    caller's sidecar, first match wins: routes that forward to the host
    followed by at most one catch-all `directResponse` are egress
    authorization (each forward's match is an `allow`, with `sourceLabels`
    / `sourceNamespace` as the callers; the answer is a refusal), which is how
    meshc's own Istio output writes `allow X -> E ...`; their shared `timeout`
    and `retries` are the external's. Anything else is MP904."""
    from .istio_routes import _match, _retry

    for res in sorted(services, key=lambda r: r.sort_key()):
        gateways = res.spec.get("gateways")
        if isinstance(gateways, YSeq) and gateways and "mesh" not in [str(g) for g in gateways]:
            continue
        hosts = res.spec.get("hosts")
        for i, h in enumerate(hosts if isinstance(hosts, YSeq) else []):
            ext = cx.externals_by_host.get(str(h).lower())
            if ext is None or ext.name in cx.external_routed:
                continue
            cx.external_routed.add(ext.name)
            http = res.spec.get("http")
            routes = [r for r in http if isinstance(r, YMap)] if isinstance(http, YSeq) else []
            rules = _egress_rules(cx, res, ext, routes)
            if rules is None:
                cx.refuse(res, "spec.http", res.spec.key_at("http") if "http" in res.spec else res.spec.span,
                          f"routes for external host `{h}`: only forwards to the host (with method, uri and "
                          "source matches) and a final catch-all directResponse are expressible", "egress")
                continue
            cx.coverage.imported[res.kind] += 1
            forwards = [r for r in routes if "route" in r]
            if rules is not False:  # the routes decide who may call: they replace `allow * -> E`
                cx.mesh.auth_rules = [a for a in cx.mesh.auth_rules if a.target.name != ext.name]
                for built in rules:
                    built.index = len(cx.mesh.auth_rules)
                    cx.mesh.auth_rules.append(built)
            settings = {(str(r.get("timeout")), str(r.get("retries"))) for r in forwards}
            if len(settings) > 1:
                cx.approximate(res, "spec.http", res.spec.key_at("http"), "routes with different timeouts or "
                               "retries: the external takes the first route's")
            if forwards:
                first = forwards[0]
                if "timeout" in first:
                    ext.timeout_ms = cx.duration_ms(res, first, "timeout", "spec.http[0]")
                if "retries" in first:
                    ext.retry = _retry(cx, res, first, "spec.http[0]")


def _egress_rules(cx: Context, res: Resource, ext: t.ExternalService, routes: list[YMap]):
    """The rules the routes mean, first match wins: leading directResponses with
    matches are `deny` rules (a deny wins, as a first match does), then forwards
    to the host are `allow` rules, then at most one catch-all: a directResponse
    (refused: the mesh's `default deny`) or a forward (`allow * -> E`).
    False: a single catch-all forward (every caller allowed: nothing to write);
    None: not expressible."""
    from .istio_routes import _match

    out: list[t.AuthRule] = []
    seen_forward = False
    for n, route in enumerate(routes):
        where = f"spec.http[{n}]"
        last = n == len(routes) - 1
        answers = "directResponse" in route
        if answers:
            status = route["directResponse"].get("status") if isinstance(route["directResponse"], YMap) else None
            if status != 403:
                cx.approximate(res, f"{where}.directResponse", route.at("directResponse"), f"answers {status}; "
                               "imported as a refusal (403)")
            if not route.get("match"):
                return out if last else None  # a catch-all answer: the rest is refused
            if seen_forward:  # a refusal after an allow it may overlap: first match is not deny-wins
                return None
            effect = "deny"
        else:
            dests = route.get("route")
            if set(route) - {"name", "match", "route", "timeout", "retries"} or not isinstance(dests, YSeq) or \
                    len(dests) != 1 or not isinstance(dests[0], YMap) or \
                    not isinstance(dests[0].get("destination"), YMap) or \
                    str(dests[0]["destination"].get("host") or "").lower() not in ext.hosts or \
                    dests[0]["destination"].get("subset") is not None:
                return None
            seen_forward = True
            effect = "allow"
            if not route.get("match"):
                if len(routes) == 1:
                    return False
                if not last:
                    return None
        matches = route.get("match")
        entries = list(enumerate(matches)) if isinstance(matches, YSeq) and matches else [(0, None)]
        for j, entry in entries:
            m = _match(cx, res, entry, matches.at(j) if isinstance(matches, YSeq) else route.span,
                       f"{where}.match[{j}]") if entry is not None else t.Match.make(span=route.span, spans={})
            if m is None or m.headers or m.queries:
                return None
            sources = [t.Source.make(kind="service", name=r.name, span=r.span, spans={}) for r in m.sources] or \
                [t.Source.make(kind="any", span=m.span, spans={})]
            out.append(t.AuthRule.make(index=0, effect=effect, sources=sources,
                                       target=t.Ref.make(name=ext.name, span=m.span, spans={}),
                                       methods=list(m.methods), paths=[x.model_copy() for x in m.paths],
                                       span=m.span, spans={}))
    # no catch-all: an unmatched request has no route (Istio answers 404), a refusal too
    return out


def egress_stance(cx: Context, sidecars: list[Resource], resources: list[Resource], root_ns: str) -> None:
    """MeshConfig's mode (the `istio` ConfigMap or an IstioOperator's meshConfig;
    Istio's default ALLOW_ANY), then the root namespace's Sidecar without a
    selector; other Sidecars setting another mode are MP928."""
    mode, where = None, None
    for r in resources:
        cfg = None
        if r.kind == "ConfigMap" and r.name == "istio" and r.namespace == root_ns:
            data = r.body.get("data")
            text = data.get("mesh") if isinstance(data, YMap) else None
            try:
                cfg = yaml.safe_load(text) if isinstance(text, str) and len(text) < 1_000_000 else None
            except yaml.YAMLError:
                cfg = None
        elif r.kind == "IstioOperator":
            cfg = r.spec.get("meshConfig")
        policy = cfg.get("outboundTrafficPolicy") if isinstance(cfg, dict) else None
        if isinstance(policy, dict) and policy.get("mode") in ("ALLOW_ANY", "REGISTRY_ONLY"):
            mode, where = policy["mode"], r
    scoped = []
    for r in sorted(sidecars, key=lambda r: r.sort_key()):
        policy = r.spec.get("outboundTrafficPolicy")
        m = policy.get("mode") if isinstance(policy, YMap) else None
        if m not in ("ALLOW_ANY", "REGISTRY_ONLY"):
            continue
        if r.namespace == root_ns and not r.spec.get("workloadSelector"):
            mode, where = m, r
        else:
            scoped.append((r, m, policy))
    if mode is None:
        mode = "ALLOW_ANY"
        cx.diags.append(diag("MP927", "no Sidecar or MeshConfig in the inputs sets `outboundTrafficPolicy`: "
                                      "imported as Istio's default, `egress allow_any`",
                             sidecars[0].body.span if sidecars else None))
    cx.mesh.settings.egress = "allow_any" if mode == "ALLOW_ANY" else "registry_only"
    if where is not None:
        cx.coverage.imported[where.kind] += where.kind == "Sidecar"
    for r, m, policy in scoped:
        if m != mode:
            cx.diags.append(diag("MP928", f"{r.label}: `outboundTrafficPolicy.mode: {m}` for its workloads; the "
                                          f"mesh-wide mode {mode} is imported", policy.span))
        else:
            cx.imported(r, "spec.outboundTrafficPolicy")
