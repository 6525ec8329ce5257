"""Building the plan from a checked model, once per mesh.

Every meaning here comes from its one definition: rule settings from
`Service.settings_for`, weights and default shares from the reference
evaluator (semantics/evaluate.py), callers from plan/scopes.py (the
verifier's candidates), hosts from plan/hosts.py.
"""

from __future__ import annotations

from ..model.types import Mesh, RouteRule, Service, Version
from ..semantics import admission
from ..semantics.evaluate import default_weights, forward_weights
from .hosts import fqdn, hosts
from .scopes import admissions
from .types import Identity, Plan, RulePlan, ServicePlan, Workload


def version_settings(svc: Service, version: Version | None):
    """A version's circuit breaker, outlier detection and balancer, each
    falling back to the service's (docs/semantics.md, "Versions")."""
    return (
        (version.circuit if version is not None else None) or svc.circuit,
        (version.outlier if version is not None else None) or svc.outlier,
        (version.balance if version is not None else None) or svc.balance,
    )


def workloads_of(svc: Service) -> list[Workload]:
    """One per distinct version name (the first of duplicates), sorted by
    name; a service without versions is one workload with version None."""
    names = sorted({v.name for v in svc.versions})
    if not names:
        return [Workload(svc.name, None, {}, *version_settings(svc, None))]
    out = []
    for n in names:
        v = svc.version(n)
        out.append(Workload(svc.name, n, dict(v.labels), *version_settings(svc, v)))
    return out


def rule_plan(svc: Service, rule: RouteRule) -> RulePlan:
    s = svc.settings_for(rule)
    a = rule.action
    if a.kind == "forward":
        mirror = (a.mirror.version.name, a.mirror.percent) if a.mirror else None
        return RulePlan(rule, "forward", forward_weights(rule), mirror, *s)
    return RulePlan(rule, a.kind, {}, None, *s)


def default_plan(svc: Service) -> RulePlan:
    return RulePlan(None, "default", default_weights(svc), None, *svc.settings_for(None))


def build_plan(mesh: Mesh) -> Plan:
    services = {name: svc for name, svc in mesh.service_map.items()}
    ids = admission.identity_groups(mesh)
    identities = {
        key: Identity(key[0], key[1], f"spiffe://{mesh.settings.trust_domain}/ns/{key[0]}/sa/{key[1]}", tuple(names))
        for key, names in ids.items()
    }
    by_ns: dict[str, list[str]] = {}
    for s in mesh.services:
        by_ns.setdefault(s.namespace, []).append(s.name)
    names = [s.name for s in mesh.services]
    limits: dict[str, list] = {}
    for lim in mesh.rate_limits:
        limits.setdefault(lim.target.name, []).append(lim)
    out: dict[str, ServicePlan] = {}
    for name, svc in services.items():
        route = mesh.route_map.get(name)
        out[name] = ServicePlan(
            service=svc,
            hosts=hosts(svc),
            fqdn=fqdn(svc),
            identity=identities[(svc.namespace, svc.account)],
            mtls=mesh.mtls_of(svc),
            ports=list(svc.ports),
            workloads=workloads_of(svc),
            rules=[rule_plan(svc, r) for r in route.rules] if route is not None else None,
            default=default_plan(svc),
            callers=admissions(mesh, name, by_ns, names),
            rate_limits=limits.get(name, []),
        )
    s = mesh.settings
    return Plan(s.trust_domain, s.mtls, s.default, out, identities)
