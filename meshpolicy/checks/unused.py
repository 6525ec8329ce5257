"""MP401 versions no route rule sends to, MP402 services nobody may call."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule


@rule("MP401")
def unused_versions(mesh: Mesh):
    targeted: dict[str, set[str]] = {}
    for route in mesh.routes:
        used = targeted.setdefault(route.service.name, set())
        for r in route.rules:
            if r.action.kind == "forward":
                used.update(d.version.name for d in r.action.destinations)
                if r.action.mirror is not None:
                    used.add(r.action.mirror.version.name)
    for svc in mesh.services:
        used = targeted.get(svc.name)
        if used is None:
            continue  # no route block: every version shares the traffic
        if used - {v.name for v in svc.versions}:
            continue  # a rule names an undeclared version (MP102), most likely a typo of an unused one
        for v in svc.versions:
            if v.name not in used:
                yield diag("MP401", f"no rule of route `{svc.name}` sends traffic to version `{v.name}`",
                           v.at("name"))


@rule("MP402")
def uncallable_services(mesh: Mesh):
    """An entry point (an ingress gateway, a job) is called from outside the
    mesh and calls into it: no warning for a service an allow rule names as
    a caller, by name or namespace."""
    if mesh.settings.default != "deny":
        return
    allowed = {ar.target.name for ar in mesh.auth_rules if ar.effect == "allow"}
    callers: set[str] = set()
    caller_namespaces: set[str] = set()
    for ar in mesh.auth_rules:
        if ar.effect == "allow":
            callers.update(s.name for s in ar.sources if s.kind == "service")
            caller_namespaces.update(s.name for s in ar.sources if s.kind == "namespace")
    for svc in mesh.services:
        if svc.name not in allowed and svc.name not in callers and svc.namespace not in caller_namespaces:
            yield diag("MP402", f"no allow rule targets service `{svc.name}`, and the mesh denies by default",
                       svc.at("name"))
