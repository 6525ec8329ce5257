"""Codes of the meshproxy compile target (MP730-MP739)."""

from . import define

CODES = define(
    "compile",
    ("MP730", "invalid-meshproxy-settings", "error",
     "the [compile.meshproxy] table in meshc.toml has an unknown key or a bad value, "
     "or its port range cannot hold every workload",
     "use listen_address, app_address, port_base and ports_per_workload (docs/targets/meshproxy.md), "
     "with room for every workload's ports below 65536"),
)
