"""Which services a workload's sidecar needs routes and clusters for.

Conservative: a caller may call a destination when some `allow` rule for it
names a source the caller could be (the service, its namespace,
`authenticated` or `*`), or when the mesh allows by default. Deny rules,
methods and paths are ignored here, so nothing the policy allows is ever
missing; the destination's RBAC still decides each request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...model.types import Mesh, Service


@dataclass
class Scope:
    """Per destination, who its allow rules could admit; built once per mesh."""

    everyone: list[Service] = field(default_factory=list)
    by_service: dict[str, list[Service]] = field(default_factory=dict)
    by_namespace: dict[str, list[Service]] = field(default_factory=dict)

    @classmethod
    def of(cls, mesh: Mesh) -> "Scope":
        out = cls()
        if mesh.settings.default == "allow":
            out.everyone = list(mesh.service_map.values())
            return out
        for name, rules in mesh.rules_by_target.items():
            dest = mesh.service(name)
            if dest is None:
                continue
            sources = [s for r in rules if r.effect == "allow" for s in r.sources]
            if any(s.kind in ("any", "authenticated") for s in sources):
                out.everyone.append(dest)
                continue
            for s in sources:
                table = out.by_service if s.kind == "service" else out.by_namespace
                bucket = table.setdefault(s.name or "", [])
                if all(d.name != dest.name for d in bucket):
                    bucket.append(dest)
        return out

    def callable_from(self, caller: Service) -> list[Service]:
        found = {d.name: d for d in self.everyone}
        for d in self.by_service.get(caller.name, []):
            found[d.name] = d
        for d in self.by_namespace.get(caller.namespace, []):
            found[d.name] = d
        return [found[k] for k in sorted(found)]


def callable_services(mesh: Mesh, caller: Service) -> list[Service]:
    """The destinations `caller` may call, sorted by name."""
    return Scope.of(mesh).callable_from(caller)
