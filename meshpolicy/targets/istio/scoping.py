"""Sidecar: each workload's sidecar learns only the services it may call,
the plan's answer (meshpolicy/plan/scopes.py: conservative, so nothing the
policy allows is left out), and the external hosts it may reach
(egress.py). Scoping is only emitted in default-deny meshes; with default
allow anyone may call anything, which is Istio's unscoped default.

The mesh's egress stance is `outboundTrafficPolicy.mode` of every Sidecar:
each service's own, and a mesh-wide default Sidecar in the root namespace
(no selector: every workload without a Sidecar of its own), always written,
since the language's default (`registry_only`) is not Istio's (ALLOW_ANY).
"""

from __future__ import annotations

from ...model.types import Service
from ...plan import plan_of
from .context import Lowering
from .egress import sidecar_hosts
from .names import ROOT_NAMESPACE, fqdn, selector

_MODE = {"registry_only": "REGISTRY_ONLY", "allow_any": "ALLOW_ANY"}


def callee_map(lw: Lowering) -> dict[str, list[Service]]:
    """caller name -> the services it may call (the plan's scope, itself
    left out), in declaration order."""
    mesh = lw.mesh
    plan = plan_of(mesh)
    order = {name: i for i, name in enumerate(mesh.service_map)}
    return {name: [mesh.service_map[d] for d in sorted(plan.callees(name), key=order.__getitem__) if d != name]
            for name in mesh.service_map}


def outbound_policy(lw: Lowering) -> dict:
    return {"mode": _MODE[lw.mesh.settings.egress]}


def mesh_default(lw: Lowering) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": ROOT_NAMESPACE},
        "spec": {"egress": [{"hosts": ["*/*"]}], "outboundTrafficPolicy": outbound_policy(lw)},
    }


def sidecars(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    out = [mesh_default(lw)]
    if mesh.settings.default != "deny":
        return out
    callees = callee_map(lw)
    for svc in mesh.services:
        if mesh.service(svc.name) is not svc:
            continue
        # The root namespace holds the control plane's own services.
        hosts = sorted({f"{d.namespace}/{fqdn(d)}" for d in callees[svc.name]} | set(sidecar_hosts(lw, svc)))
        hosts.append(f"{ROOT_NAMESPACE}/*")
        out.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"workloadSelector": {"labels": selector(svc)["matchLabels"]}, "egress": [{"hosts": hosts}],
                     "outboundTrafficPolicy": outbound_policy(lw)},
        })
    return out
