"""Codes of the meshproxy compile target (MP730-MP739)."""

from . import define

CODES = define(
    "compile",
    ("MP730", "invalid-meshproxy-settings", "error",
     "the [compile.meshproxy] table in meshc.toml has an unknown key or a bad value, "
     "or its port range cannot hold every workload",
     "use the keys address, port_base and app_ports (docs/targets/meshproxy.md); "
     "lower port_base so every workload's ports stay within 65535"),
)
