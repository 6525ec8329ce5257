"""The resolved plan (docs/targets.md, "The resolved plan"): built once per
mesh from the checked model, read by every target, `meshc up` and the
language server.

`plan_of(mesh)` returns the plan of a mesh, built on first use and kept
while the mesh is one of the few most recent (a compile asks for it from
several places; the language server rebuilds models as files change).
"""

from __future__ import annotations

from ..model.types import Mesh
from .build import build_plan, ingress_settings, version_settings, workloads_of
from .cert_layout import CertLayout
from .hosts import CLUSTER_DOMAIN, fqdn, hosts, name_fqdn
from .scopes import Admission
from .types import (ExternalPlan, Identity, IngressPlan, InternetSource, Plan, RulePlan, ServicePlan,
                    Workload)

__all__ = ["Admission", "CLUSTER_DOMAIN", "CertLayout", "ExternalPlan", "Identity", "IngressPlan", "InternetSource",
           "Plan", "RulePlan", "ServicePlan", "Workload", "build_plan", "fqdn", "hosts", "ingress_settings",
           "name_fqdn", "plan_of", "version_settings", "workloads_of"]

_RECENT: list[tuple[Mesh, Plan]] = []
_KEEP = 4


def plan_of(mesh: Mesh) -> Plan:
    for m, p in _RECENT:
        if m is mesh:
            return p
    from ..gc_pause import gc_paused

    # Millions of small objects while the model stays alive: without the pause
    # the cyclic GC rescans the model again and again (half of the plan's CPU
    # at 10,000 services: docs/performance.md).
    with gc_paused():
        p = build_plan(mesh)
    _RECENT.insert(0, (mesh, p))
    del _RECENT[_KEEP:]
    return p
