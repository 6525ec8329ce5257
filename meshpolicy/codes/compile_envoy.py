"""Codes of the Envoy target (MP72x). Constructs Envoy cannot express are
the shared MP701; these are the Envoy-specific findings."""

from . import define

CODES = define(
    "compile-envoy",
    ("MP720", "envoy-port-range", "error",
     "the Envoy port convention puts a listener port outside 1-65535, or needs more ports than a workload's block",
     "lower `port_base` or raise `ports_per_workload` under [compile.envoy] in meshc.toml"),
    ("MP721", "envoy-setting", "error", "a [compile.envoy] setting in meshc.toml is unknown or has a bad value",
     "see docs/targets/envoy.md for the settings and their types"),
    ("MP722", "envoy-retry-budget-overrides-circuit", "warning",
     "a retry budget and `circuit max_retries` on one destination: Envoy enforces the budget and ignores max_retries",
     "keep only one of the two limits on concurrent retries"),
    ("MP723", "envoy-shared-identity", "error",
     "a rule names a service whose SPIFFE identity another service shares, so a sidecar cannot tell them apart",
     "give each service its own `account` (or namespace)"),
)
