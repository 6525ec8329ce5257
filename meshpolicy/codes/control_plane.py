"""Codes of `meshc up`'s control plane (MP780-MP784): what a running
workload reports back about the configuration it was sent."""

from . import define

CODES = define(
    "control-plane",
    ("MP780", "workload-rejected-config", "error",
     "a running workload's Envoy rejected (NACKed) configuration pushed by the control plane; "
     "it keeps running its last good configuration",
     "change the construct the diagnostic points at so Envoy accepts what it becomes (Envoy's reason is quoted), "
     "then save again"),
)
