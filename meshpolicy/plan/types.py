"""The resolved plan: what a checked policy means, target-neutral and typed.

Targets, `meshc up` and the language server read these instead of working
the meaning out again from the model (meshpolicy/plan/build.py builds them).
Model objects are kept by reference (a rule's match, a Retry) so targets
still reach spans for their diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.types import (CircuitBreaker, Fault, LoadBalancer, MtlsMode, Outlier, Port, RateLimit, Retry,
                           RouteRule, Service, Version)
from .scopes import Admission


@dataclass(frozen=True)
class Identity:
    """A service account: the SPIFFE id its certificate carries."""

    namespace: str
    account: str
    spiffe_id: str
    services: tuple[str, ...]  # the services that run as it (more than one: they cannot be told apart)


@dataclass(frozen=True)
class Workload:
    """One deployable unit: a service, or one version of it. version None: the
    service declares no versions."""

    service: str
    version: str | None
    labels: dict[str, str]
    circuit: CircuitBreaker | None  # the version's own setting, else the service's
    outlier: Outlier | None
    balance: LoadBalancer | None


@dataclass(frozen=True)
class RulePlan:
    """A route rule with the settings that apply to what it forwards.

    kind: forward, redirect or respond (the rule's action), or default for
    the synthetic rule of a service without a route block (every version,
    equal shares). weights: version -> percent (forward and default)."""

    rule: RouteRule | None
    kind: str
    weights: dict[str, float]
    mirror: tuple[str, float] | None
    timeout_ms: int | None
    retry: Retry | None
    fault: Fault | None


@dataclass
class ServicePlan:
    service: Service
    hosts: list[str]
    fqdn: str
    identity: Identity
    mtls: MtlsMode
    ports: list[Port]
    workloads: list[Workload]
    # None: no route block, every request goes to `default`.
    rules: list[RulePlan] | None
    default: RulePlan
    callers: dict[str | None, Admission]  # who may call this service, and why
    rate_limits: list[RateLimit] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def routed(self) -> bool:
        return self.rules is not None

    @property
    def rule_plans(self) -> list[RulePlan]:
        """What each request can meet: the route's rules, or the default one."""
        return self.rules if self.rules is not None else [self.default]

    def workload(self, version: str | None) -> Workload | None:
        return next((w for w in self.workloads if w.version == version), None)


@dataclass
class Plan:
    trust_domain: str
    mtls: MtlsMode
    default: str  # the mesh's stance: allow or deny
    services: dict[str, ServicePlan]  # declaration order, first of duplicate names
    identities: dict[tuple[str, str], Identity]

    def service(self, name: str) -> ServicePlan | None:
        return self.services.get(name)

    def callees(self, caller: str) -> list[str]:
        """The services `caller` may call (itself included when admitted), sorted by name."""
        idx = self._callee_index()
        return idx.get(caller, [])

    def callers(self, dest: str) -> dict[str | None, Admission]:
        sp = self.services.get(dest)
        return sp.callers if sp is not None else {}

    def _callee_index(self) -> dict[str, list[str]]:
        if "_callees" not in self.__dict__:
            out: dict[str, list[str]] = {}
            for sp in self.services.values():
                for c in sp.callers:
                    if c is not None:
                        out.setdefault(c, []).append(sp.name)
            self.__dict__["_callees"] = {k: sorted(v) for k, v in out.items()}
        return self.__dict__["_callees"]

    def workloads(self) -> list[Workload]:
        return [w for sp in self.services.values() for w in sp.workloads]
