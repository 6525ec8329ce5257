"""Tracing: which Envoy tracer propagates the formats the mesh asks for.

Envoy itself starts, samples and propagates spans with its tracer: Zipkin
speaks B3, and with USE_B3_WITH_W3C_PROPAGATION also reads and writes W3C
`traceparent`; the OpenTelemetry tracer speaks W3C only. The application
must still copy the incoming trace headers onto its outgoing calls (Envoy
cannot link an inbound request to the calls the app makes for it).
"""

from __future__ import annotations

from .context import Ctx
from .conventions import COLLECTOR_CLUSTER

ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
OTEL = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"


def collector(ctx: Ctx) -> tuple[str, int] | None:
    t = ctx.mesh.settings.tracing
    if not t.enabled or not t.formats:
        return None
    return ctx.settings.zipkin_collector if "b3" in t.formats else ctx.settings.otlp_collector


def hcm_tracing(ctx: Ctx, service_name: str) -> dict | None:
    t = ctx.mesh.settings.tracing
    if collector(ctx) is None:
        return None
    if "b3" in t.formats:
        provider = {"name": "envoy.tracers.zipkin", "typed_config": {
            "@type": ZIPKIN,
            "collector_cluster": COLLECTOR_CLUSTER,
            "collector_endpoint": "/api/v2/spans",
            "collector_endpoint_version": "HTTP_JSON",
            "trace_id_128bit": True,
            "shared_span_context": False,
            "trace_context_option": "USE_B3_WITH_W3C_PROPAGATION" if "w3c" in t.formats else "USE_B3",
        }}
    else:
        host, port = ctx.settings.otlp_collector
        provider = {"name": "envoy.tracers.opentelemetry", "typed_config": {
            "@type": OTEL,
            "http_service": {"http_uri": {"uri": f"http://{host}:{port}/v1/traces",
                                          "cluster": COLLECTOR_CLUSTER, "timeout": "1s"}},
            "service_name": service_name,
        }}
    return {"random_sampling": {"value": t.sample_percent}, "provider": provider}
