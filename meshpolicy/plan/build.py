"""Building the plan from a checked model, once per mesh.

Every meaning here comes from its one definition: rule settings from
`Service.settings_for`, weights and default shares from the reference
evaluator (semantics/evaluate.py), callers from plan/scopes.py (the
verifier's candidates), hosts from plan/hosts.py.
"""

from __future__ import annotations

from ..model.types import Ingress, Mesh, RouteRule, RuleSettings, Service, Version
from ..semantics import admission
from ..semantics.evaluate import default_weights, forward_weights
from ..semantics.ingress import accepted_providers, forwards_to, validating_providers
from .hosts import fqdn, hosts
from .scopes import admissions, internet_providers
from .types import ExternalPlan, Identity, IngressPlan, InternetSource, Plan, RulePlan, ServicePlan, Workload


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
        return RulePlan(rule, "forward", forward_weights(rule), mirror, *s, svc.cors_for(rule))
    return RulePlan(rule, a.kind, {}, None, *s)


def default_plan(svc: Service) -> RulePlan:
    return RulePlan(None, "default", default_weights(svc), None, *svc.settings_for(None), svc.cors_for(None))


def ingress_rule_plan(rule: RouteRule) -> RulePlan:
    """An ingress rule: weights and mirror over services, its own settings."""
    a = rule.action
    own = (rule.timeout_ms, rule.retry, rule.fault)
    if a.kind == "forward":
        mirror = (a.mirror.version.name, a.mirror.percent) if a.mirror else None
        return RulePlan(rule, "forward", forward_weights(rule), mirror, *own, rule.cors)
    return RulePlan(rule, a.kind, {}, None, *own)


def ingress_settings(ingress_rule: RouteRule, svc: Service, svc_rule: RouteRule | None) -> RuleSettings:
    """The timeout, retry and fault of a request an ingress rule forwards to
    `svc`, where `svc`'s own route sends it by `svc_rule` (None: no route
    block): the ingress rule's own setting, else the service's
    (`Service.settings_for`), as a route rule's own replaces its service's."""
    inner = svc.settings_for(svc_rule)
    return RuleSettings(
        ingress_rule.timeout_ms if ingress_rule.timeout_ms is not None else inner.timeout_ms,
        ingress_rule.retry if ingress_rule.retry is not None else inner.retry,
        ingress_rule.fault if ingress_rule.fault is not None else inner.fault,
    )


def internet_sources(mesh: Mesh, dest: str) -> list[InternetSource]:
    """Every `internet` source of the rules on dest, with the ingresses (and
    their providers) it can match (plan/scopes.py `internet_providers`)."""
    out = []
    for r in mesh.rules_by_target.get(dest, []):
        for s in r.sources:
            if s.kind != "internet":
                continue
            per: dict[str, tuple[str, ...]] = {}
            for g in mesh.ingress_map.values():
                p = internet_providers(mesh, s, g.name)
                if p is not None:
                    per[g.name] = p
            union = tuple(dict.fromkeys(p for ps in per.values() for p in ps))
            out.append(InternetSource(r, s, per, union))
    return out


def _ingress_plan(mesh: Mesh, g: Ingress, identities: dict) -> IngressPlan:
    return IngressPlan(g, identities[admission.ingress_key(g)], list(g.listeners), list(g.hosts),
                       accepted_providers(mesh, g), [ingress_rule_plan(r) for r in g.rules], forwards_to(g))


def build_plan(mesh: Mesh) -> Plan:
    services = {name: svc for name, svc in mesh.service_map.items()}
    ids = admission.identity_groups(mesh)
    identities = {
        key: Identity(key[0], key[1], f"spiffe://{mesh.settings.trust_domain}/ns/{key[0]}/sa/{key[1]}", tuple(names))
        for key, names in ids.items()
    }
    for g in mesh.ingress_map.values():  # an ingress's identity (shared with a service only by mistake)
        key = admission.ingress_key(g)
        got = identities.get(key) or Identity(
            key[0], key[1], f"spiffe://{mesh.settings.trust_domain}/ns/{key[0]}/sa/{key[1]}", ())
        identities[key] = Identity(got.namespace, got.account, got.spiffe_id, got.services, (*got.ingresses, g.name))
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
            jwt_providers=_ordered(mesh, validating_providers(mesh, name)) if mesh.jwt_providers else (),
            internet=internet_sources(mesh, name),
        )
    ingresses = {name: _ingress_plan(mesh, g, identities) for name, g in mesh.ingress_map.items()}
    externals = {
        name: ExternalPlan(e, list(e.hosts), list(e.ports), admissions(mesh, name, by_ns, names), e.timeout_ms, e.retry)
        for name, e in mesh.external_map.items() if name not in services
    }
    s = mesh.settings
    return Plan(s.trust_domain, s.mtls, s.default, out, identities, ingresses, externals, s.egress,
                dict(mesh.provider_map))


def _ordered(mesh: Mesh, providers) -> tuple[str, ...]:
    """Provider names in declaration order."""
    return tuple(p for p in mesh.provider_map if p in providers)
