"""What every importer shares: the model being built, diagnostics and coverage."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..codes import diag
from ..diagnostics import Diagnostic
from ..model import types as t
from ..span import Span
from .inventory import Inventory, K8sService, Resource, labels_of
from .yamlmarks import YMap

_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|ns|s|m|h)")
_UNIT_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1, "us": 0.001, "µs": 0.001, "ns": 0.000001}


@dataclass
class Coverage:
    """What `meshc import --report` prints: per kind, resources read and
    imported; per (kind, field), how often it was imported, approximated or
    refused."""

    resources: Counter = field(default_factory=Counter)
    imported: Counter = field(default_factory=Counter)
    fields: dict[tuple[str, str], Counter] = field(default_factory=dict)

    def field(self, kind: str, name: str, status: str) -> None:
        self.fields.setdefault((kind, name), Counter())[status] += 1


class Context:
    def __init__(self, inventory: Inventory, diags: list[Diagnostic], coverage: Coverage) -> None:
        self.inv = inventory
        self.diags = diags
        self.coverage = coverage
        self.mesh = t.Mesh.make()
        self.services: dict[tuple[str, str], t.Service] = {}  # (namespace, k8s name) -> model service
        self.routes: dict[str, t.Route] = {}  # meshc service name -> its route
        self.route_owner: dict[str, Resource] = {}  # meshc service name -> the resource its route came from
        self.whole_service: dict[int, tuple] = {}  # id of a forward to a whole Service -> (resource, field, span)
        self.tls_overrides: list = []
        self.gateway_of: dict = {}  # ingress name -> the Istio gateway (istio_ingress.IstioGateway) it runs on
        self.extra_files: dict[str, str] = {}  # files `meshc import` writes beside the .mesh files (JWKS)
        self.provider_scopes: list = []  # (RequestAuthentication, selector labels, provider, forwards token, span)
        self.reported_forwarding: set = set()  # (RequestAuthentication, ingress, span): gateways that strip tokens
        self.externals_by_host: dict[str, t.ExternalService] = {}
        self.external_routed: set[str] = set()
        self.gateway_workloads: dict[tuple, list] = {}  # a gateway selector -> the workloads it matches
        self.gateway_list: list | None = None  # the gateways of gateway_of, once (read per AuthorizationPolicy)  # externals a VirtualService already routed (the oldest wins)
        self.emitting = False  # `meshc import` writes files (TLS paths, JWKS) next to the .mesh files
        self._by_identity: dict | None = None  # (DestinationRule, its tls mapping, service or version): judged after mTLS

    def by_identity(self) -> dict[tuple[str, str], list[t.Service]]:
        """(namespace, account) -> the services that run as it (after all services are built)."""
        if self._by_identity is None:
            self._by_identity = {}
            for s in self.mesh.services:
                self._by_identity.setdefault((s.namespace, s.account), []).append(s)
        return self._by_identity

    def policy_scope(self, res: Resource, root_ns: str) -> list[K8sService]:
        """The services a workload policy (AuthorizationPolicy, PeerAuthentication)
        applies to: mesh-wide from the root namespace without a selector, a
        namespace without one, else the workloads its selector matches. A
        policy that reaches no workload at all is MP910 (istioctl: IST0127);
        a matched workload that no Service fronts has no rules to carry here."""
        spec = res.spec
        selector = spec.get("selector")
        labels = labels_of(selector.get("matchLabels")) if isinstance(selector, YMap) else {}
        ns = None if res.namespace == root_ns else res.namespace
        services = self.inv.services_selected(ns, labels) if labels else self.inv.in_namespace(ns)
        if not services and not self.inv.workloads_in(ns, labels):
            where = spec.at("selector") if labels else res.body.key_at("metadata")
            what = "its selector matches" if labels else f"namespace `{res.namespace}` has"
            self.diags.append(diag("MP910", f"{res.label}: {what} no workload in the inputs", where))
        return services

    # ---- reporting
    def refuse(self, res: Resource, field_name: str, span: Span, why: str, affects: str = "") -> None:
        """A field the language cannot express: MP904, and counted as refused."""
        self.coverage.field(res.kind, field_name, "refused")
        note = [f"findings about {affects} do not account for it"] if affects else []
        self.diags.append(diag("MP904", f"{res.label}: `{field_name}` is not imported: {why}", span, notes=note))

    def approximate(self, res: Resource, field_name: str, span: Span, how: str) -> None:
        self.coverage.field(res.kind, field_name, "approximated")
        self.diags.append(diag("MP905", f"{res.label}: `{field_name}` {how}", span))

    def imported(self, res: Resource, field_name: str) -> None:
        self.coverage.field(res.kind, field_name, "imported")

    # ---- values
    def duration_ms(self, res: Resource, parent: YMap, key: str, where: str = "") -> int | None:
        """A protobuf Duration string (`1.5s`, `500ms`) in milliseconds."""
        raw = parent.get(key)
        key = f"{where}.{key}" if where else key
        if raw is None:
            return None
        text = str(raw).strip()
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            self.refuse(res, key, parent.at(key.rsplit(".", 1)[-1]), f"`{text}` is not a duration like `500ms` or `2s`")
            return None
        ms = sum(float(n) * _UNIT_MS[u] for n, u in parts)
        self.imported(res, key)
        return max(1, round(ms)) if ms > 0 else 0

    def service_for(self, svc: K8sService) -> t.Service:
        return self.services[svc.key]

    def resolve(self, res: Resource, host: str, span: Span, *, report: bool = True) -> list[K8sService]:
        """The Services a host names (MP906 when none, unless the host is external)."""
        found = self.inv.resolve_host(str(host), res.namespace)
        if found is None:
            if report and not self.external_host(str(host)):
                self.diags.append(diag("MP906", f"{res.label}: host `{host}` names no Service in the inputs", span))
            return []
        return found

    def external_host(self, host: str) -> bool:
        """A host a ServiceEntry declares (reported once, on the ServiceEntry)."""
        for r in self.inv.resources:
            if r.kind == "ServiceEntry":
                hosts = r.spec.get("hosts")
                if isinstance(hosts, list) and host in [str(h) for h in hosts]:
                    return True
        return False


def percent(value) -> float | None:
    """Istio's `percentage: {value: 12.5}` (or the deprecated integer `percent`)."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None
