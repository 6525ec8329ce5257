"""Telemetry: mesh-wide tracing sampling and metrics, in the root namespace."""

from __future__ import annotations

from ...codes import diag
from .context import Lowering
from .names import ROOT_NAMESPACE, percent

METRICS_PROVIDER = "prometheus"  # Istio's built-in metrics provider


def telemetry(lw: Lowering) -> dict:
    s = lw.mesh.settings
    tr = s.tracing
    provider = lw.options.settings.get("tracing_provider")
    tracing: dict = {}
    if isinstance(provider, str) and provider:
        tracing["providers"] = [{"name": provider}]
    if tr.enabled:
        tracing["randomSamplingPercentage"] = percent(tr.sample_percent)
        # Istio's default provider (Zipkin) propagates B3; any other format
        # depends on the MeshConfig provider, which policy resources cannot set.
        if any(f != "b3" for f in tr.formats) and not provider:
            lw.diagnostics.append(diag(
                "MP710", f"trace format{'s' * (len(tr.formats) > 1)} {', '.join(tr.formats)} cannot be set by "
                "Istio resources: the MeshConfig tracing provider decides what is propagated", tr.at("formats")))
    else:
        tracing["randomSamplingPercentage"] = 0.0
        tracing["disableSpanReporting"] = True
    metrics: dict = {"providers": [{"name": METRICS_PROVIDER}]}
    if not s.metrics:
        metrics["overrides"] = [{"match": {"metric": "ALL_METRICS"}, "disabled": True}]
    return {
        "apiVersion": "telemetry.istio.io/v1",
        "kind": "Telemetry",
        "metadata": {"name": "mesh-default", "namespace": ROOT_NAMESPACE},
        "spec": {"tracing": [tracing], "metrics": [metrics]},
    }
