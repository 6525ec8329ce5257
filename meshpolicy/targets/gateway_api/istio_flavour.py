"""`mesh = "istio"`: what the standard channel lacks, as Istio's own
resources, built by the istio target's builders (one meaning, one place):
PeerAuthentication and AuthorizationPolicy as for the istio target, a
DestinationRule per version Service for its circuit breaker, outlier
detection and balancer (Istio applies a DestinationRule to the host a
backendRef names), Telemetry for tracing and `metrics off`, and each
rate limit as the istio target's EnvoyFilter on the callers' sidecars
(their outbound virtual host `<fqdn>:<port>` is the same whether a
VirtualService or a GAMMA HTTPRoute routes it).

North-south (docs/targets/gateway-api.md, "North-south"): the ingress
gateways are Gateway API Gateways (ingress.py); RequestAuthentication for
the gateways and for the services that validate tokens, and the
`internet [with jwt ...]` rules in the AuthorizationPolicies, are the
istio target's (tokens.py, security.py), a gateway's selecting its pods by
`app: <ingress>` as there (the Gateway is deployed manually, see
ingress.py); externals are the istio target's ServiceEntry,
DestinationRule (TLS origination) and the VirtualService holding the
egress rules for their hosts (egress.py: no HTTPRoute routes those hosts,
so Istio reads it), and the egress stance is the mesh-wide default
Sidecar's outboundTrafficPolicy (scoping.py). Per-service Sidecars are not
written (a GAMMA route's backends are the per-version Services, which the
istio target's scoping does not import), so a `tcp` external port that
some service may not reach is MP701.

Not carried: retries and faults. Istio reads them from a VirtualService,
and does not read a VirtualService for a host an HTTPRoute routes; the
standard channel has neither, so they stay MP701 (or waived).

MP701s from those builders name the gateway-api target and the flavour.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...compile import CompileOptions
from ...diagnostics import Diagnostic
from ...model.types import Mesh
from ...plan import fqdn, name_fqdn, plan_of
from ..base import refuse
from . import ingress
from ..http_routes import version_service
from ..http_routes import Dialect
from ..istio.context import Lowering
from ..istio.egress import externals, may_reach
from ..istio.ingress import gateway_authorization
from ..istio.scoping import mesh_default
from ..istio.tokens import request_authentications
from ..istio.ratelimit import envoy_filters
from ..istio.security import authorization_policies, peer_authentications
from ..istio.telemetry import telemetry
from ..istio.traffic import policy


@dataclass
class FlavourLowering(Lowering):
    def unsupported(self, construct, span, why, key: str | None = None) -> bool:
        d = refuse("gateway-api", key or "", f"{construct} (with mesh = \"istio\")", span, why,
                   self.options.waive if key else ())
        self.diagnostics.append(d)
        return d.code == "MP706"


def destination_rules(lw: Lowering) -> list[dict]:
    out = []
    for sp in plan_of(lw.mesh).services.values():
        svc = sp.service
        for w in sp.workloads:
            tp = policy(lw, svc, w)
            tp["tls"] = {"mode": "DISABLE" if sp.mtls == "off" else "ISTIO_MUTUAL"}
            name = svc.name if w.version is None else version_service(svc.name, w.version)
            host = fqdn(svc) if w.version is None else name_fqdn(name, svc.namespace)
            out.append({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                        "metadata": {"name": name, "namespace": svc.namespace},
                        "spec": {"host": host, "trafficPolicy": tp}})
    return out


def _tcp_scoping(lw: Lowering) -> None:
    """Only a per-service Sidecar could keep a caller off a `tcp` port."""
    mesh = lw.mesh
    services = [s for s in mesh.services if mesh.service(s.name) is s]
    for ext in mesh.external_map.values():
        tcp = [p for p in ext.ports if p.protocol == "tcp"]
        refused = [s.name for s in services if not may_reach(lw, s, ext)]
        if tcp and refused:
            lw.unsupported(f"refusing `{refused[0]}` the `tcp` port {tcp[0].number} of external `{ext.name}`",
                           tcp[0].span, "a tcp port has no routes to decide per caller, and this flavour writes "
                                        "no per-service Sidecar that could leave the host out")


def north_south(lw: Lowering) -> list[dict]:
    mesh = lw.mesh
    docs = externals(lw) + request_authentications(lw)
    for g in mesh.ingress_map.values():
        ap = gateway_authorization(lw, g)
        if ap is not None:
            docs.append(ap)
    s = mesh.settings
    # as targets/constructs.py counts the stance used: written, or an external declared
    if "egress" in s.spans or mesh.externals or s.egress == "allow_any":
        docs.append(mesh_default(lw))
    _tcp_scoping(lw)
    return docs


def documents(mesh: Mesh, options: CompileOptions, d: Dialect) -> tuple[list[dict], list[Diagnostic]]:
    lw = FlavourLowering(mesh, options)
    docs = peer_authentications(lw) + authorization_policies(lw) + destination_rules(lw) + envoy_filters(lw)
    docs += north_south(lw) + ingress.documents(lw, d)
    s = mesh.settings
    if s.tracing.enabled or not s.metrics:
        docs.append(telemetry(lw))
    return docs, lw.diagnostics
