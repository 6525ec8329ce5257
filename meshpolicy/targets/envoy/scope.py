"""Which services a workload's sidecar needs routes and clusters for.

Conservative: a caller may call a destination when some `allow` rule for it
names a source the caller could be (the service, its namespace,
`authenticated` or `*`), or when the mesh allows by default. Deny rules,
methods and paths are ignored here, so nothing the policy allows is ever
missing; the destination's RBAC still decides each request.
"""

from __future__ import annotations

from ...model.types import Mesh, Service, Source


def source_may_be(s: Source, caller: Service) -> bool:
    if s.kind in ("any", "authenticated"):
        return True
    if s.kind == "service":
        return s.name == caller.name
    return s.name == caller.namespace


def callable_services(mesh: Mesh, caller: Service) -> list[Service]:
    """The destinations `caller` may call, sorted by name."""
    if mesh.settings.default == "allow":
        return sorted(mesh.service_map.values(), key=lambda s: s.name)
    out = []
    for name, rules in mesh.rules_by_target.items():
        dest = mesh.service(name)
        if dest is None:
            continue
        if any(r.effect == "allow" and any(source_may_be(s, caller) for s in r.sources) for r in rules):
            out.append(dest)
    return sorted(out, key=lambda s: s.name)
