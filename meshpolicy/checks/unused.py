"""MP401 versions no route rule sends to, MP402 services nobody may call."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh, MeshSettings
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


def _callers(mesh: Mesh) -> tuple[str | None, frozenset[str], frozenset[str]]:
    """(the first mesh block's default, if any; services an allow rule names
    as target or caller; namespaces an allow rule names as callers)."""
    named: set[str] = set()
    namespaces: set[str] = set()
    for ar in mesh.auth_rules:
        if ar.effect == "allow":
            named.add(ar.target.name)
            for s in ar.sources:
                if s.kind == "service":
                    named.add(s.name)
                elif s.kind == "namespace":
                    namespaces.add(s.name)
    return mesh.mesh_blocks[0].default if mesh.mesh_blocks else None, frozenset(named), frozenset(namespaces)


def _merge_callers(parts: list) -> tuple[str | None, frozenset[str], frozenset[str]]:
    default = next((p[0] for p in parts if p[0] is not None), None)
    return default, frozenset().union(*(p[1] for p in parts)), frozenset().union(*(p[2] for p in parts))


@rule("MP402", per_file=True, context=_callers, merge=_merge_callers)
def uncallable_services(mesh: Mesh, callers: tuple[str | None, frozenset[str], frozenset[str]]):
    """An entry point (an ingress gateway, a job) is called from outside the
    mesh and calls into it: no warning for a service an allow rule names as
    a caller, by name or namespace."""
    default, named, caller_namespaces = callers
    if (default or MeshSettings.make().default) != "deny":  # no mesh block: the defaults
        return
    for svc in mesh.services:
        if svc.name not in named and svc.namespace not in caller_namespaces:
            yield diag("MP402", f"no allow rule targets service `{svc.name}`, and the mesh denies by default",
                       svc.at("name"))
