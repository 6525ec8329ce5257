"""Egress: external services and the rules that reach them, enforced by the
CALLER's sidecar (docs/semantics.md, "Ingress, tokens and egress").

- ServiceEntry per external (MESH_EXTERNAL, DNS resolution; NONE with a
  wildcard host), one port per `port`: `http` and `tls` ports are HTTP (the
  app speaks plain HTTP to its sidecar), `tcp` ports TCP.
- `tls` ports: a DestinationRule per host originating TLS on that port
  (`portLevelSettings: tls: {mode: SIMPLE, sni: host, subjectAltNames: [host]}`);
  Istio verifies the server certificate against the proxy's system roots
  when no caCertificates are given.
- A VirtualService per host on its HTTP ports holds the egress rules, which
  the caller's own sidecar evaluates (AuthorizationPolicy only acts on a
  workload's inbound side, so it cannot): every deny rule first (matches
  answer 403), then every allow rule (matches go out), then the mesh's
  default stance. Sources become `sourceLabels`/`sourceNamespace`, which
  Istio resolves per calling workload when it builds that workload's routes,
  and methods and paths are route matches: the same algebra as east-west
  (deny wins, then allow, else the default). Its timeout and retries are the
  external's (none written: none, as for services).
"""

from __future__ import annotations

import itertools

from ...model.types import AuthRule, ExternalService, Service, Source
from ...plan import plan_of
from ...semantics import admission
from .context import Lowering
from .names import APP_LABEL, duration
from .routing import retries, uri_match

DENIED = {"status": 403, "body": {"string": "RBAC: access denied"}}
_PROTOCOL = {"http": "HTTP", "tls": "HTTP", "tcp": "TCP"}


def is_wildcard(host: str) -> bool:
    return host.startswith("*")


def l7_ports(ext: ExternalService) -> list[int]:
    return [p.number for p in ext.ports if p.protocol in ("http", "tls")]


def service_entry(lw: Lowering, ext: ExternalService) -> dict:
    ports = [{"number": p.number, "name": f"{p.protocol}-{p.number}", "protocol": _PROTOCOL[p.protocol]}
             for p in ext.ports]
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": ext.name, "namespace": ext.namespace},
        "spec": {"hosts": list(ext.hosts), "location": "MESH_EXTERNAL",
                 "resolution": "NONE" if any(is_wildcard(h) for h in ext.hosts) else "DNS",
                 "ports": ports},
    }


def _per_host_name(ext: ExternalService, i: int) -> str:
    return ext.name if len(ext.hosts) == 1 else f"{ext.name}-{i + 1}"


def destination_rules(lw: Lowering, ext: ExternalService) -> list[dict]:
    tls = [p for p in ext.ports if p.protocol == "tls"]
    if not tls:
        return []
    out = []
    for i, host in enumerate(ext.hosts):
        if is_wildcard(host):
            lw.unsupported(f"`port {tls[0].number} tls` of external `{ext.name}` with the wildcard host `{host}`",
                           tls[0].span, "Istio's TLS origination sends one fixed SNI and checks one name, "
                                        "and a wildcard names no single host")
            continue
        settings = [{"port": {"number": p.number},
                     "tls": {"mode": "SIMPLE", "sni": host, "subjectAltNames": [host]}} for p in tls]
        out.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "DestinationRule",
            "metadata": {"name": _per_host_name(ext, i), "namespace": ext.namespace},
            "spec": {"host": host, "trafficPolicy": {"portLevelSettings": settings}},
        })
    return out


def _mesh_services(lw: Lowering) -> list[Service]:
    mesh = lw.mesh
    return [s for s in mesh.services if mesh.service(s.name) is s]


def source_conditions(lw: Lowering, s: Source) -> list[dict] | None:
    """The match conditions that select the callers a source names on the
    way out (its own sidecar knows the caller's identity: no mTLS involved).
    [{}]: every caller; []: none; a service: every service sharing its
    identity (one certificate, as east-west)."""
    if s.kind in ("any", "authenticated"):
        return [{}]
    if s.kind == "internet":
        return []  # an ingress sends only to services
    if s.kind == "namespace":
        return [{"sourceNamespace": s.name or ""}]
    return [{"sourceLabels": {APP_LABEL: o.name}, "sourceNamespace": o.namespace}
            for o in _mesh_services(lw) if admission.same_identity(lw.mesh, s.name or "", o.name)]


def _rule_matches(lw: Lowering, rule: AuthRule) -> list[dict]:
    conds = [c for s in rule.sources for c in (source_conditions(lw, s) or [])]
    out = []
    for cond, method, path in itertools.product(conds, rule.methods or [None], rule.paths or [None]):
        m = dict(cond)
        if method:
            m["method"] = {"exact": method}
        if path is not None:
            m["uri"] = uri_match(path)
        out.append(m)
    return out


def _forward(lw: Lowering, ext: ExternalService, host: str, name: str, match: list[dict] | None) -> dict:
    http: dict = {"name": name}
    if match is not None:
        http["match"] = match
    http["route"] = [{"destination": {"host": host}}]
    if ext.timeout_ms is not None:
        http["timeout"] = duration(ext.timeout_ms)
    http["retries"] = retries(lw, None, ext.retry)
    return http


def egress_http_rules(lw: Lowering, ext: ExternalService, host: str) -> list[dict]:
    """Deny rules, then allow rules, then the default: first match wins."""
    rules = lw.mesh.rules_by_target.get(ext.name, [])
    out: list[dict] = []
    for effect in ("deny", "allow"):
        for r in rules:
            if r.effect != effect:
                continue
            matches = _rule_matches(lw, r)
            if not matches:
                continue
            name = f"{effect}-{r.index}"
            if effect == "deny":
                out.append({"name": name, "match": matches, "directResponse": dict(DENIED)})
            else:
                out.append(_forward(lw, ext, host, name, matches))
    if lw.mesh.settings.default == "deny":
        out.append({"name": "default", "directResponse": dict(DENIED)})
    else:
        out.append(_forward(lw, ext, host, "default", None))
    # A match without any condition (`*`) makes every later rule unreachable:
    # stop there, as Istio's own route builder does.
    for i, http in enumerate(out):
        if any(m == {} for m in http.get("match", [])):
            head = {k: v for k, v in http.items() if k != "match"}
            return out[:i] + [head]
    return out


def virtual_services(lw: Lowering, ext: ExternalService) -> list[dict]:
    if not l7_ports(ext):
        for what, value in (("timeout", ext.timeout_ms), ("retry", ext.retry)):
            if value is not None:
                lw.unsupported(f"`{what}` on external `{ext.name}`",
                               ext.at("timeout") if what == "timeout" else value.span,
                               "Istio applies timeouts and retries to HTTP routes, and its ports are all tcp")
        return []
    out = []
    for i, host in enumerate(ext.hosts):
        out.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": _per_host_name(ext, i), "namespace": ext.namespace},
            "spec": {"hosts": [host], "http": egress_http_rules(lw, ext, host)},
        })
    return out


def may_reach(lw: Lowering, caller: Service, ext: ExternalService) -> bool:
    """The plan's answer (conservative: methods and paths are decided per
    request, by the VirtualService)."""
    ep = plan_of(lw.mesh).external(ext.name)
    return ep is not None and caller.name in ep.callers


def sidecar_hosts(lw: Lowering, caller: Service) -> list[str]:
    """The external hosts `caller`'s Sidecar imports. Under `egress
    allow_any` a host left out would pass through unchecked, so every
    external with an HTTP port is imported (its VirtualService decides);
    otherwise only those it may reach (the others are refused: 502)."""
    out = []
    for ext in lw.mesh.external_map.values():
        if may_reach(lw, caller, ext) or (lw.mesh.settings.egress == "allow_any" and l7_ports(ext)):
            out += [f"{ext.namespace}/{h}" for h in ext.hosts]
    return out


def check_tcp_scoping(lw: Lowering) -> None:
    """A `tcp` port has no routes to decide per caller: only the caller's
    Sidecar can keep it out, and only under registry_only in a mesh whose
    services have their own Sidecars (default deny)."""
    mesh = lw.mesh
    for ext in mesh.external_map.values():
        tcp = [p for p in ext.ports if p.protocol == "tcp"]
        if not tcp:
            continue
        refused = [s.name for s in _mesh_services(lw) if not may_reach(lw, s, ext)]
        if not refused:
            continue
        if mesh.settings.egress == "allow_any" or mesh.settings.default == "allow":
            why = ("under `egress allow_any` a host a Sidecar leaves out still passes through"
                   if mesh.settings.egress == "allow_any" else
                   "with `default allow` services share the mesh-wide Sidecar, which cannot leave one host out")
            lw.unsupported(f"refusing `{refused[0]}` the `tcp` port {tcp[0].number} of external `{ext.name}`",
                           tcp[0].span, why)


def externals(lw: Lowering) -> list[dict]:
    out: list[dict] = []
    for ext in lw.mesh.external_map.values():
        out.append(service_entry(lw, ext))
        out += destination_rules(lw, ext)
        out += virtual_services(lw, ext)
    check_tcp_scoping(lw)
    return out
