"""The resolved plan: what a checked policy means, target-neutral and typed.

Targets, `meshc up` and the language server read these instead of working
the meaning out again from the model (meshpolicy/plan/build.py builds them).
Model objects are kept by reference (a rule's match, a Retry) so targets
still reach spans for their diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.types import (AuthRule, CircuitBreaker, Cors, EgressStance, ExternalPort, ExternalService, Fault,
                           Ingress, JwtProvider, Listener, LoadBalancer, MtlsMode, Outlier, Port, RateLimit, Retry,
                           RouteRule, Service, Source, Version)
from .scopes import Admission


@dataclass(frozen=True)
class Identity:
    """A service account: the SPIFFE id its certificate carries."""

    namespace: str
    account: str
    spiffe_id: str
    services: tuple[str, ...]  # the services that run as it (more than one: they cannot be told apart)
    ingresses: tuple[str, ...] = ()  # the ingress gateways that run as it (usually an identity of their own)


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
    equal shares). weights: version -> percent (forward and default).
    cors: the CORS policy of what it forwards (`Service.cors_for`: the rule's
    own, else the service's; None for redirect/respond: CORS applies only to
    forwarded requests).

    In an IngressPlan the same type holds an ingress rule: weights (and the
    mirror) are over SERVICES, and timeout/retry/fault/cors are the rule's
    own (None: not written; see `ingress_settings`)."""

    rule: RouteRule | None
    kind: str
    weights: dict[str, float]
    mirror: tuple[str, float] | None
    timeout_ms: int | None
    retry: Retry | None
    fault: Fault | None
    cors: Cors | None = None


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
    # who may call this service, and why: service names, None (callers without
    # identity) and ingress names (an ingress forwarding here, admitted by its identity)
    callers: dict[str | None, Admission]
    rate_limits: list[RateLimit] = field(default_factory=list)
    # the JWT providers this service's sidecar validates a request's token with
    # (semantics/ingress.py `validating_providers`; empty: it checks no token)
    jwt_providers: tuple[str, ...] = ()
    # every `internet` source of the rules on this service (allow and deny), resolved
    internet: list["InternetSource"] = field(default_factory=list)

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


@dataclass(frozen=True)
class InternetSource:
    """An `internet [with jwt ...]` source of an auth rule on a service, as a
    target lowers it: the ingress gateways whose requests it can match (their
    identities are the transport peers to admit), and for each the providers
    whose tokens can meet the requirement (empty tuple: no token needed).
    `providers` is their union; `requirement` the claims tests (None: no
    `with jwt`). An ingress accepting no provider the source can use is
    left out (such a source may match no one: the checker warns)."""

    rule: AuthRule
    source: Source
    ingresses: dict[str, tuple[str, ...]]
    providers: tuple[str, ...]

    @property
    def requirement(self):
        return self.source.jwt


@dataclass
class IngressPlan:
    """An ingress gateway, a workload of its own (not in `Plan.workloads()`,
    which lists service workloads): its identity (`spiffe_id`), listeners and
    hosts as written, the providers it accepts (in order; none written:
    every declared one), its rules (RulePlans over services, the rules' own
    settings) and the services it forwards to (`callees`, rule order).
    Certificates for https listeners: `Listener.cert_file`/`key_file` are as
    written, relative to the directory of `ingress.file` (`cert_paths`)."""

    ingress: Ingress
    identity: Identity
    listeners: list[Listener]
    hosts: list[str]
    providers: tuple[str, ...]
    rules: list[RulePlan]
    callees: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.ingress.name

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @property
    def account(self) -> str:
        return self.identity.account

    @property
    def spiffe_id(self) -> str:
        return self.identity.spiffe_id

    def cert_paths(self, listener: Listener) -> tuple[str, str] | None:
        """An https listener's certificate and key files, resolved against the
        declaring file's directory (None: an http listener)."""
        if listener.cert_file is None or listener.key_file is None:
            return None
        from pathlib import Path

        base = Path(self.ingress.file).parent if self.ingress.file else Path(".")
        return str(base / listener.cert_file), str(base / listener.key_file)


@dataclass
class ExternalPlan:
    """An external service: its hosts and ports as written, and the mesh
    workloads that may call it (`callers`, the same `Admission`s as a
    service's, decided at each caller's sidecar by the egress rules or the
    default stance). Its own timeout and retry apply to every call to it."""

    external: ExternalService
    hosts: list[str]
    ports: list[ExternalPort]
    callers: dict[str | None, Admission]
    timeout_ms: int | None
    retry: Retry | None

    @property
    def name(self) -> str:
        return self.external.name

    @property
    def tls_ports(self) -> list[int]:
        """Ports where the caller's sidecar originates TLS (SNI = the host)."""
        return [p.number for p in self.ports if p.protocol == "tls"]

    @property
    def l7(self) -> bool:
        """Some port carries HTTP the sidecar can read (http or tls): methods
        and paths of egress rules apply there."""
        return any(p.protocol != "tcp" for p in self.ports)


@dataclass
class Plan:
    trust_domain: str
    mtls: MtlsMode
    default: str  # the mesh's stance: allow or deny
    services: dict[str, ServicePlan]  # declaration order, first of duplicate names
    identities: dict[tuple[str, str], Identity]
    ingresses: dict[str, IngressPlan] = field(default_factory=dict)
    externals: dict[str, ExternalPlan] = field(default_factory=dict)
    egress: EgressStance = "registry_only"  # undeclared hosts: refused, or passed through (allow_any)
    providers: dict[str, JwtProvider] = field(default_factory=dict)  # declaration order

    def service(self, name: str) -> ServicePlan | None:
        return self.services.get(name)

    def ingress(self, name: str) -> IngressPlan | None:
        return self.ingresses.get(name)

    def external(self, name: str) -> ExternalPlan | None:
        return self.externals.get(name)

    def external_callees(self, caller: str) -> list[str]:
        """The external services `caller` may call, sorted by name."""
        return sorted(name for name, ep in self.externals.items() if caller in ep.callers)

    def callees(self, caller: str) -> list[str]:
        """The services `caller` (a service or an ingress) may call (itself
        included when admitted), sorted by name. Externals: `external_callees`."""
        idx = self._callee_index()
        return idx.get(caller, [])

    def callers(self, dest: str) -> dict[str | None, Admission]:
        """Who may call `dest`, a service or an external (decided at the callers' sidecars)."""
        sp = self.services.get(dest)
        if sp is not None:
            return sp.callers
        ep = self.externals.get(dest)
        return ep.callers if ep is not None else {}

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
