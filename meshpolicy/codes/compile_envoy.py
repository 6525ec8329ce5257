"""Codes of the Envoy target (MP72x). Constructs Envoy cannot express are
the shared MP701; these are the Envoy-specific findings."""

from . import define

CODES = define(
    "compile-envoy",
    ("MP720", "envoy-conventions", "error",
     "the Envoy port convention cannot place every listener, or a [compile.envoy] setting is unknown or invalid",
     "raise `ports_per_workload` or lower `port_base` under [compile.envoy] in meshc.toml (docs/targets/envoy.md)"),
    ("MP721", "envoy-retry-budget-overrides-circuit", "warning",
     "a retry budget and `circuit max_retries` on one destination: Envoy enforces the budget and ignores max_retries",
     "keep only one of the two limits on concurrent retries"),
)
