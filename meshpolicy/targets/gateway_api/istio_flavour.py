"""`mesh = "istio"`: what the standard channel lacks, as Istio's own
resources, built by the istio target's builders (one meaning, one place):
PeerAuthentication and AuthorizationPolicy as for the istio target, a
DestinationRule per version Service for its circuit breaker, outlier
detection and balancer (Istio applies a DestinationRule to the host a
backendRef names), Telemetry for tracing and `metrics off`, and each
rate limit as the istio target's EnvoyFilter on the callers' sidecars
(their outbound virtual host `<fqdn>:<port>` is the same whether a
VirtualService or a GAMMA HTTPRoute routes it).

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
from ..http_routes import version_service
from ..istio.context import Lowering
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


def documents(mesh: Mesh, options: CompileOptions) -> tuple[list[dict], list[Diagnostic]]:
    lw = FlavourLowering(mesh, options)
    docs = peer_authentications(lw) + authorization_policies(lw) + destination_rules(lw) + envoy_filters(lw)
    s = mesh.settings
    if s.tracing.enabled or not s.metrics:
        docs.append(telemetry(lw))
    return docs, lw.diagnostics
