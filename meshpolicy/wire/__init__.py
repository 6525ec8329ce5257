"""meshproxy's wire format and decision logic, shared by the compiler and the proxy.

`config` is the versioned per-workload JSON format (strict pydantic models,
published as targets/meshproxy/schema.json by `schema`); `evaluate` is how a
proxy decides from one workload's config alone. The compiler's target
(meshpolicy/targets/meshproxy) writes this format and the proxy
(meshpolicy/proxy) reads it: neither imports the other.
"""
