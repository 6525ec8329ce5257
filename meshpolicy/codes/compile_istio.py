"""Codes of the Istio compile target (MP710-MP729). Constructs Istio cannot
express at all are the shared MP701; these are Istio-specific findings."""

from . import define

CODES = define(
    "compile-istio",
    ("MP710", "istio-trace-format", "warning",
     "Istio takes trace propagation formats from the MeshConfig tracing provider, not from policy resources",
     "configure a MeshConfig extension provider that propagates these formats (OpenTelemetry for w3c, "
     "Zipkin for b3) and set `[compile.istio] tracing_provider` to its name"),
)
