"""Egress as Linkerd (2.16+) carries it: an EgressNetwork per namespace of
mesh services and HTTPRoutes attached to it.

Linkerd decides egress in the client's proxy, by the EgressNetwork of the
client's namespace (a namespace-local one takes priority over the global
egress namespace's): `trafficPolicy: Deny` refuses what no route attached
to it matches (HTTP: 403 from the client's proxy, route
`http-egress-deny`), `Allow` lets it through. So:

- the stance: `egress registry_only` is `Deny`, `allow_any` is `Allow`, in
  every namespace holding a mesh service;
- an external `http` port: an HTTPRoute `egress-<external>-<port>` on that
  EgressNetwork (parentRef port), `hostnames` the external's hosts, one
  rule forwarding to the original destination (backendRef: the
  EgressNetwork), with the external's timeout and its retry annotations;
  written in each namespace whose services may call the external.

Who may call an external is the plan's (`ExternalPlan.callers`, the egress
rules or the default stance). Linkerd has no per-workload egress
authorization, only the namespace's EgressNetwork: an external some
services of a namespace may call and others not is MP701, and so is any
refusal under `allow_any` (an `Allow` EgressNetwork lets every host
through; a route cannot refuse). Methods and paths on egress rules are
MP701 (not lowered). `tls` ports are the manifest's MP701 (Linkerd
originates no TLS); `tcp` ports need `allow_any` (a TCPRoute names no
host: under `Deny` it would open the port to every host).
"""

from __future__ import annotations

from collections.abc import Callable

from ...model.types import Mesh
from ...plan import Plan
from ..constructs import constructs_used
from ..http_routes import Dialect, duration
from .routes import retry_policy

NAME = "egress"  # the EgressNetwork of each namespace
GROUP = "policy.linkerd.io"


def uses_egress(mesh: Mesh) -> bool:
    """The mesh says something about egress (the constructs list's rule:
    written, `allow_any`, or an external declared)."""
    return any(u.construct.startswith("egress-") for u in constructs_used(mesh))


def documents(mesh: Mesh, plan: Plan, route_api: str, d: Dialect,
              reject: Callable[[str, object, str], None]) -> list[dict]:
    if not uses_egress(mesh):
        return []
    allow_any = mesh.settings.egress == "allow_any"
    by_ns: dict[str, list[str]] = {}
    for sp in plan.services.values():
        by_ns.setdefault(sp.service.namespace, []).append(sp.name)
    docs: list[dict] = [{
        "apiVersion": f"{GROUP}/v1alpha1", "kind": "EgressNetwork",
        "metadata": {"name": NAME, "namespace": ns},
        "spec": {"trafficPolicy": "Allow" if allow_any else "Deny"},
    } for ns in sorted(by_ns)]
    for name, ep in plan.externals.items():
        ext = ep.external
        rules = mesh.rules_by_target.get(name, [])
        scoped = next((r for r in rules if r.methods or r.paths), None)
        if scoped is not None:
            reject(f"the methods or paths of {scoped.effect} rule #{scoped.index + 1} (to external `{name}`)",
                   scoped.span, "egress rules with methods or paths are not lowered by this target yet: "
                   "Linkerd's routes on an EgressNetwork could hold them, meshc does not write them")
            continue
        where = rules[0].span if rules else ext.span
        admitted: list[str] = []
        ok = True
        for ns, names in sorted(by_ns.items()):
            yes = sorted(n for n in names if n in ep.callers)
            if yes and len(yes) < len(names):
                no = sorted(set(names) - set(yes))
                reject(f"egress to external `{name}` from some services of namespace `{ns}`", where,
                       f"Linkerd decides egress per client namespace (its EgressNetwork), not per workload: "
                       f"{', '.join(yes)} may call it and {', '.join(no)} may not")
                ok = False
            elif not yes and allow_any:
                reject(f"refusing external `{name}` to namespace `{ns}` under `egress allow_any`", where,
                       "an `Allow` EgressNetwork lets every host through and a route on it cannot refuse one")
                ok = False
            elif yes:
                admitted.append(ns)
        http = [p for p in ep.ports if p.protocol == "http"]
        if any(p.protocol == "tcp" for p in ep.ports) and not allow_any:
            p = next(p for p in ep.ports if p.protocol == "tcp")
            reject(f"`port {p.number} tcp` of external `{name}` under `egress registry_only`", p.span,
                   "a TCPRoute on an EgressNetwork names no host: it would open the port to every host")
            ok = False
        if not http and (ext.timeout_ms is not None or ext.retry is not None):
            reject(f"the timeout or retry of external `{name}`", ext.at("timeout") if ext.timeout_ms else ext.retry.span,
                   "only an HTTPRoute carries them, and the external has no http port")
            ok = False
        ann: dict[str, str] | None = {}
        if ext.retry is not None and ext.retry.attempts > 0:
            ann = retry_policy(ext.retry, False, d, f"external `{name}`")
        if not ok or ann is None:
            continue
        for ns in admitted:
            for p in http:
                rule: dict = {"backendRefs": [{"group": GROUP, "kind": "EgressNetwork", "name": NAME}]}
                if ext.timeout_ms is not None:
                    rule["timeouts"] = {"request": duration(ext.timeout_ms)}
                meta: dict = {"name": f"egress-{name}-{p.number}", "namespace": ns}
                if ann:
                    meta["annotations"] = dict(ann)
                docs.append({
                    "apiVersion": route_api, "kind": "HTTPRoute", "metadata": meta,
                    "spec": {"parentRefs": [{"group": GROUP, "kind": "EgressNetwork", "name": NAME, "port": p.number}],
                             "hostnames": list(ext.hosts), "rules": [rule]},
                })
    return docs
