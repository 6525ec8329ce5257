"""Codes of the Kubernetes-resource targets gateway-api and linkerd (MP740-MP759).
What they cannot express at all is the shared MP701."""

from . import define

CODES = define(
    "compile",
    ("MP740", "invalid-target-settings", "error",
     "the [compile.gateway-api] or [compile.linkerd] table in meshc.toml has an unknown key or a bad value",
     "gateway-api reads `mesh` (\"istio\" or \"linkerd\"); linkerd reads no settings (docs/targets/gateway-api.md)"),
    ("MP741", "generated-name-collision", "error",
     "two generated Kubernetes objects would have the same name, e.g. the Service `a-v1` for version `v1` of "
     "service `a` and a service named `a-v1`",
     "rename the service or the version so that `<service>-<version>` names no other service"),
)
