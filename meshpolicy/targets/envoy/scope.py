"""Which services a workload's sidecar needs routes and clusters for: the
plan's answer to who may call whom (meshpolicy/plan/scopes.py), which is
conservative, so nothing the policy allows is ever missing; the
destination's RBAC still decides each request.
"""

from __future__ import annotations

from ...model.types import Mesh, Service
from ...plan import plan_of


def callable_services(mesh: Mesh, caller: Service) -> list[Service]:
    """The destinations `caller` may call, sorted by name."""
    return [mesh.service_map[n] for n in plan_of(mesh).callees(caller.name)]
