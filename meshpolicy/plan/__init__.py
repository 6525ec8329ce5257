"""The resolved plan (docs/targets.md, "The resolved plan"): built once per
mesh from the checked model, read by every target, `meshc up` and the
language server.

`plan_of(mesh)` returns the plan of a mesh, built on first use and kept
while the mesh is one of the few most recent (a compile asks for it from
several places; the language server rebuilds models as files change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.types import Mesh
from .hosts import CLUSTER_DOMAIN, fqdn, hosts, name_fqdn  # small; and `hosts` must be the function, not the module

if TYPE_CHECKING:
    from .build import build_plan, ingress_settings, version_settings, workloads_of
    from .cert_layout import CertLayout
    from .scopes import Admission
    from .types import (ExternalPlan, Identity, IngressPlan, InternetSource, Plan, RulePlan, ServicePlan,
                        Workload)

# Loaded on first use (PEP 562): `meshc verify` needs only plan/hosts.py (the
# names a service answers to), and importing a submodule runs this file
# first; the rest of the plan cost a pre-commit run about 4 ms for nothing.
_LAZY = {"build_plan": "build", "ingress_settings": "build", "version_settings": "build", "workloads_of": "build",
         "CertLayout": "cert_layout", "Admission": "scopes", "ExternalPlan": "types", "Identity": "types",
         "IngressPlan": "types", "InternetSource": "types", "Plan": "types", "RulePlan": "types",
         "ServicePlan": "types", "Workload": "types"}

__all__ = sorted([*_LAZY, "CLUSTER_DOMAIN", "fqdn", "hosts", "name_fqdn", "plan_of"])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


_RECENT: list[tuple[Mesh, Plan]] = []
_KEEP = 4


def plan_of(mesh: Mesh) -> Plan:
    for m, p in _RECENT:
        if m is mesh:
            return p
    from ..gc_pause import gc_paused
    from .build import build_plan

    # Millions of small objects while the model stays alive: without the pause
    # the cyclic GC rescans the model again and again (half of the plan's CPU
    # at 10,000 services: docs/performance.md).
    with gc_paused():
        p = build_plan(mesh)
    _RECENT.insert(0, (mesh, p))
    del _RECENT[_KEEP:]
    return p
