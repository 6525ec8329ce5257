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


class _Everyone:
    """Sources that match any caller (`*`, `authenticated`)."""

    def __contains__(self, name) -> bool:
        return True


def _matching(sources: list[Source], by_namespace: dict[str, set[str]]):
    """The names of the callers some source could match (conservatively)."""
    out: set[str] = set()
    for s in sources:
        if s.kind in ("any", "authenticated"):
            return _Everyone()
        if s.kind == "namespace":
            out |= by_namespace.get(s.name or "", set())
        else:
            out.add(s.name or "")
    return out


def callee_map(lw: Lowering) -> dict[str, list[Service]]:
    """caller name -> the services it may call, in declaration order."""
    mesh = lw.mesh
    services = [s for s in mesh.services if mesh.service(s.name) is s]
    by_namespace: dict[str, set[str]] = {}
    for s in services:
        by_namespace.setdefault(s.namespace, set()).add(s.name)
    out: dict[str, list[Service]] = {s.name: [] for s in services}
    for dest in services:
        rules: list[AuthRule] = mesh.rules_by_target.get(dest.name, [])
        allowed = [_matching(r.sources, by_namespace) for r in rules if r.effect == "allow"]
        # A deny for every method and path shuts a caller out whatever it asks.
        # Without mTLS only `*` can match, since no caller identity is visible.
        visible = mesh.mtls_of(dest) != "off"
        denied = [_matching([s for s in r.sources if visible or s.kind == "any"], by_namespace) for r in rules
                  if r.effect == "deny" and not r.methods and not r.paths]
        if not allowed:
            continue
        if any(isinstance(a, _Everyone) for a in allowed):
            candidates = [c.name for c in services]
        else:
            candidates = sorted(set().union(*allowed))
        for name in candidates:
            if name != dest.name and name in out and not any(name in d for d in denied):
                out[name].append(dest)
    return out


def sidecars(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    if mesh.settings.default != "deny":
        return []
    out = []
    callees = callee_map(lw)
    for svc in mesh.services:
        if mesh.service(svc.name) is not svc:
            continue
        # The root namespace holds the control plane's own services.
        hosts = sorted({f"{d.namespace}/{fqdn(d)}" for d in callees[svc.name]}) + [f"{ROOT_NAMESPACE}/*"]
        out.append({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": svc.name, "namespace": svc.namespace},
            "spec": {"workloadSelector": {"labels": selector(svc)["matchLabels"]}, "egress": [{"hosts": hosts}]},
        })
    return out
