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
    ("MP750", "linkerd-authz-layout", "error",
     "a destination's allow and deny rules with methods or paths cannot be written as Linkerd inbound routes "
     "that bring every request to the authorization the policy gives it: two path patterns overlap and "
     "their shared paths are authorized differently from the rest of either in a way Linkerd's ranking "
     "(whole-path matches alike, then a PathPrefix by length, then a method, then creation time) cannot "
     "resolve; or a pattern's match, restricted to normalized paths, is "
     "longer than a route holds (1024 characters), or a class needs more matches than a route holds",
     "authorize a subtree `P/**` like `P` itself (Linkerd's PathPrefix matches both: `allow ... /orders, "
     "/orders/**` next to `deny ... /orders/admin/*` is laid out), or make the patterns of differently "
     "authorized rules disjoint, or compile for a target that orders rules (docs/targets/linkerd.md)"),
    ("MP751", "linkerd-regex-dialect", "error",
     "a path regex of an allow or deny rule can match a path that is not normalized (Linkerd matches the "
     "path as sent, the policy the normalized one), or uses a construct that Linkerd's proxy (the Rust "
     "regex crate, Unicode-aware) reads differently from RE2 and that has no ASCII spelling, a word "
     "boundary (`\\b`, `\\B`) or a negated Perl class (`\\D`, `\\W`, `\\S`) inside a set, or that only "
     "RE2 has: `\\Q...\\E`, `\\C`, an octal escape",
     "match whole segments only (e.g. `/items/[0-9]+` rather than `/items/.*`; a glob such as `/items/**` "
     "is restricted to normalized paths by meshc), and spell classes out in ASCII (docs/targets/linkerd.md)"))
