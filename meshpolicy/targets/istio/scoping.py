"""Sidecar: each workload's sidecar learns only the services it may call.

Conservative: a service may call a destination when some allow rule's
sources could match it (by name, namespace, `authenticated` or `*`) and no
deny rule for that destination matches it whatever the request. Scoping is
only emitted in default-deny meshes; with default allow anyone may call
anything, which is Istio's unscoped default.
"""

from __future__ import annotations

from ...model.types import AuthRule, Service, Source
from .context import Lowering
from .names import ROOT_NAMESPACE, fqdn, selector


def _could_match(lw: Lowering, s: Source, caller: Service) -> bool:
    if s.kind == "any":
        return True
    if s.kind == "authenticated":
        return True
    if s.kind == "namespace":
        return caller.namespace == s.name
    return caller.name == s.name


def _denies_everything(lw: Lowering, r: AuthRule, caller: Service) -> bool:
    return r.effect == "deny" and not r.methods and not r.paths and any(
        _could_match(lw, s, caller) for s in r.sources)


def callees(lw: Lowering, caller: Service) -> list[Service]:
    mesh = lw.mesh
    out = []
    for dest in mesh.services:
        if dest is caller or mesh.service(dest.name) is not dest:
            continue
        rules = mesh.rules_by_target.get(dest.name, [])
        if any(_denies_everything(lw, r, caller) for r in rules):
            continue
        if any(r.effect == "allow" and any(_could_match(lw, s, caller) for s in r.sources) for r in rules):
            out.append(dest)
    return out


def sidecars(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    if mesh.settings.default != "deny":
        return []
    out = []
    for svc in mesh.services:
        if mesh.service(svc.name) is not svc:
            continue
        # The root namespace holds the control plane's own services.
        hosts = sorted({f"{d.namespace}/{fqdn(d)}" for d in callees(lw, svc)}) + [f"{ROOT_NAMESPACE}/*"]
        out.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"workloadSelector": {"labels": selector(svc)["matchLabels"]}, "egress": [{"hosts": hosts}]},
        })
    return out
