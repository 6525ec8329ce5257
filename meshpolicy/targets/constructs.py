"""The constructs of the language, as targets declare what they do with them.

Every target's pack manifest (targets/<name>/manifest.yaml) says, per
construct, `yes` (lowered exactly), `partial` (lowered, but some values are
MP701: the manifest says which), `flavour` (only with a mesh flavour that
carries it; MP701 otherwise) or `no` (always MP701). `constructs_used(mesh)`
finds each use in a model, with where it was written, so a generator target
can reject what its manifest cannot express in one place (targets/base.py).

MODEL_FIELDS maps every field of the model (and every value of its
enumerations) to the construct it is part of; tests/test_target_constructs.py
fails when the model grows a field or a value no construct covers, and when a
target neither handles nor rejects a construct.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from ..model.types import Mesh
from ..span import Span

# name -> what it is (the manifest keys; the docs table's rows, in this order)
CONSTRUCTS: dict[str, str] = {
    "trust-domain": "`trust_domain` of the mesh block",
    "mtls-strict": "mTLS `strict` (mesh-wide or per service)",
    "mtls-permissive": "mTLS `permissive`",
    "mtls-off": "mTLS `off`",
    "default-allow": "`default allow`",
    "default-deny": "`default deny`",
    "tracing": "`tracing` formats and sampling",
    "metrics": "`metrics on`",
    "metrics-off": "`metrics off`",
    "port-http": "`port N http`",
    "port-http2": "`port N http2`",
    "port-grpc": "`port N grpc`",
    "port-tcp": "`port N tcp`",
    "account": "`account` (service identity)",
    "versions": "`version` (subsets, selected by labels)",
    "timeout": "`timeout` (service or route rule)",
    "retry": "`retry N` with `per_try` and `on`",
    "retry-backoff": "`retry ... backoff`",
    "retry-budget": "`retry ... budget P% min N`",
    "retry-non-idempotent": "`retry ... non_idempotent`",
    "retry-off": "`retry off`",
    "circuit": "`circuit` (connection pool limits)",
    "outlier": "`outlier` (ejection)",
    "balance": "`balance round_robin|least_request|random`",
    "balance-hash": "`balance hash header|source_ip`",
    "fault-delay": "`fault delay`",
    "fault-abort": "`fault abort`",
    "match-method": "route match on methods",
    "match-path-exact": "route match on an exact path",
    "match-path-prefix": "route match on a path prefix",
    "match-path-glob": "route match on a glob path",
    "match-path-regex": "route match on a regex path",
    "match-header": "route match on a header value (exact, prefix)",
    "match-header-regex": "route match on a header regex",
    "match-header-presence": "route match on a header being present or absent",
    "match-source": "route match on the caller (`from`)",
    "forward": "forward to one version",
    "split": "weighted split over versions",
    "mirror": "`mirror` to a version",
    "redirect": "`redirect`",
    "respond": "`respond` (direct response)",
    "allow": "`allow` rules",
    "deny": "`deny` rules",
    "source-service": "rule source: a service",
    "source-namespace": "rule source: `namespace NS`",
    "source-authenticated": "rule source: `authenticated`",
    "source-any": "rule source: `*`",
    "auth-methods": "rule methods",
    "auth-paths": "rule paths",
    "rate-limit": "`limit` (rate limits per caller)",
    # north-south (docs/language.md, "Ingress, tokens and egress")
    "rate-limit-key": "`limit ... per claim|header|source_ip` (one bucket per user or key)",
    "retry-status": "`retry ... on 503, 429` (retry on listed status codes)",
    "match-query": "route match on a query parameter",
    "request-headers": "`set|add|remove request header` on a route rule",
    "response-headers": "`set|add|remove response header` on a route rule",
    "rewrite": "`rewrite \"/path\"` (path rewrite)",
    "rewrite-host": "`rewrite ... host \"h\"` (authority rewrite)",
    "cors": "`cors` (service or route rule)",
    "ingress": "`ingress` gateway with an `http` listener, hosts and routes",
    "ingress-https": "`listen N https cert ... key ...` (TLS terminated at the ingress)",
    "jwt-provider": "`jwt` provider with a local `jwks` file, validated at the ingress and the callee",
    "jwt-jwks-uri": "`jwt` provider with a remote `jwks_uri`",
    "jwt-token-location": "`jwt ... token header|query|cookie` (other than `Authorization: Bearer`)",
    "source-internet": "rule source: `internet` (requests through an ingress)",
    "jwt-claims": "`internet with jwt [PROVIDER] CLAIM = V and CLAIM has V`",
    "external-http": "`external` service, `port N http`",
    "external-tls": "`external` service, `port N tls` (the sidecar originates TLS)",
    "external-tcp": "`external` service, `port N tcp`",
    "egress-rule": "`allow|deny X -> EXTERNAL` (egress, enforced at the caller)",
    "egress-registry-only": "`egress registry_only` (only declared hosts are reachable)",
    "egress-allow-any": "`egress allow_any` (any host is reachable)",
}

# "Class.field" -> construct, or None for what is not a construct of its own
# (names, spans, positions: every target must carry them).
MODEL_FIELDS: dict[str, str | None] = {
    **{f"{c}.{f}": None for c in ("Node",) for f in ("span", "spans")},
    "Ref.name": None,
    "Tracing.enabled": "tracing", "Tracing.formats": "tracing", "Tracing.sample_percent": "tracing",
    "MeshSettings.name": None, "MeshSettings.declared": None, "MeshSettings.trust_domain": "trust-domain",
    "MeshSettings.mtls": "mtls-strict", "MeshSettings.default": "default-deny",
    "MeshSettings.tracing": "tracing", "MeshSettings.metrics": "metrics",
    "MeshSettings.egress": "egress-registry-only",
    "Port.number": "port-http", "Port.protocol": "port-http",
    "Retry.attempts": "retry", "Retry.per_try_ms": "retry", "Retry.on": "retry", "Retry.backoff_ms": "retry-backoff",
    "Retry.backoff_max_ms": "retry-backoff", "Retry.budget_percent": "retry-budget", "Retry.budget_min": "retry-budget",
    "Retry.non_idempotent": "retry-non-idempotent", "Retry.on_status": "retry-status",
    **{f"Cors.{f}": "cors" for f in ("origins", "methods", "headers", "expose", "credentials", "max_age_ms")},
    "Service.cors": "cors",
    "QueryMatch.name": "match-query", "QueryMatch.kind": "match-query", "QueryMatch.value": "match-query",
    "Match.queries": "match-query",
    **{f"HeaderOp.{f}": "request-headers" for f in ("side", "op", "name", "value")},
    "Rewrite.path": "rewrite", "Rewrite.host": "rewrite-host",
    "RouteRule.headers": "request-headers", "RouteRule.rewrite": "rewrite", "RouteRule.cors": "cors",
    "ClaimTest.claim": "jwt-claims", "ClaimTest.op": "jwt-claims", "ClaimTest.value": "jwt-claims",
    "JwtRequirement.provider": "jwt-claims", "JwtRequirement.claims": "jwt-claims", "Source.jwt": "jwt-claims",
    "LimitKey.kind": "rate-limit-key", "LimitKey.name": "rate-limit-key", "RateLimit.key": "rate-limit-key",
    **{f"TokenLocation.{f}": "jwt-token-location" for f in ("kind", "name", "prefix")},
    "JwtProvider.name": None, "JwtProvider.file": None, "JwtProvider.issuer": "jwt-provider",
    "JwtProvider.audiences": "jwt-provider", "JwtProvider.jwks_file": "jwt-provider", "JwtProvider.jwks_text": "jwt-provider",
    "JwtProvider.jwks_uri": "jwt-jwks-uri", "JwtProvider.token_from": "jwt-token-location",
    "Listener.port": "ingress", "Listener.protocol": "ingress", "Listener.cert_file": "ingress-https",
    "Listener.key_file": "ingress-https",
    "Ingress.name": None, "Ingress.file": None, "Ingress.namespace": "ingress", "Ingress.account": "ingress",
    "Ingress.listeners": "ingress", "Ingress.hosts": "ingress", "Ingress.jwt": "jwt-provider",
    "Ingress.rules": "ingress",
    "ExternalPort.number": "external-http", "ExternalPort.protocol": "external-http",
    "ExternalService.name": None, "ExternalService.namespace": "external-http",
    "ExternalService.hosts": "external-http", "ExternalService.ports": "external-http",
    "ExternalService.timeout_ms": "timeout", "ExternalService.retry": "retry",
    **{f"CircuitBreaker.{f}": "circuit" for f in ("max_connections", "max_pending", "max_requests", "max_retries")},
    **{f"Outlier.{f}": "outlier" for f in ("consecutive_5xx", "consecutive_gateway", "interval_ms", "eject_ms",
                                           "max_percent")},
    "LoadBalancer.policy": "balance", "LoadBalancer.header": "balance-hash",
    "Fault.delay_ms": "fault-delay", "Fault.delay_percent": "fault-delay",
    "Fault.abort_status": "fault-abort", "Fault.abort_percent": "fault-abort",
    "Version.name": "versions", "Version.labels": "versions", "Version.circuit": "circuit",
    "Version.outlier": "outlier", "Version.balance": "balance",
    "Service.name": None, "Service.namespace": None, "Service.account": "account", "Service.ports": "port-http",
    "Service.versions": "versions", "Service.mtls": "mtls-strict", "Service.timeout_ms": "timeout",
    "Service.retry": "retry", "Service.circuit": "circuit", "Service.outlier": "outlier", "Service.balance": "balance",
    "Service.fault": "fault-delay",
    "PathPattern.kind": "match-path-exact", "PathPattern.value": "match-path-exact",
    "HeaderMatch.name": "match-header", "HeaderMatch.kind": "match-header", "HeaderMatch.value": "match-header",
    "Match.methods": "match-method", "Match.paths": "match-path-exact", "Match.headers": "match-header",
    "Match.sources": "match-source",
    "WeightedVersion.version": "forward", "WeightedVersion.weight": "split",
    "Mirror.version": "mirror", "Mirror.percent": "mirror",
    "Forward.kind": "forward", "Forward.destinations": "forward", "Forward.mirror": "mirror",
    "Redirect.kind": "redirect", "Redirect.uri": "redirect", "Redirect.status": "redirect",
    "DirectResponse.kind": "respond", "DirectResponse.status": "respond", "DirectResponse.body": "respond",
    "RouteRule.index": None, "RouteRule.match": None, "RouteRule.action": None, "RouteRule.timeout_ms": "timeout",
    "RouteRule.retry": "retry", "RouteRule.fault": "fault-delay",
    "Route.service": None, "Route.rules": None,
    "Source.kind": "source-service", "Source.name": "source-service",
    "AuthRule.index": None, "AuthRule.effect": "allow", "AuthRule.sources": "source-service",
    "AuthRule.target": None, "AuthRule.methods": "auth-methods", "AuthRule.paths": "auth-paths",
    **{f"RateLimit.{f}": "rate-limit" for f in ("sources", "target", "requests", "per", "burst")},
    # Assertions are the verifier's: no target lowers them.
    **{f"Assertion.{f}": None for f in ("kind", "source", "source_jwt", "sources", "target", "transitive",
                                        "methods", "paths", "bound")},
}

# Every value of the model's enumerations -> its construct.
MODEL_VALUES: dict[str, dict[str, str]] = {
    "MtlsMode": {"strict": "mtls-strict", "permissive": "mtls-permissive", "off": "mtls-off"},
    "Effect": {"allow": "allow", "deny": "deny"},
    "Protocol": {"http": "port-http", "http2": "port-http2", "grpc": "port-grpc", "tcp": "port-tcp"},
    "LoadBalancer.policy": {"round_robin": "balance", "least_request": "balance", "random": "balance",
                            "hash_header": "balance-hash", "hash_source_ip": "balance-hash"},
    "PathPattern.kind": {"exact": "match-path-exact", "prefix": "match-path-prefix", "glob": "match-path-glob",
                         "regex": "match-path-regex"},
    "HeaderMatch.kind": {"exact": "match-header", "prefix": "match-header", "regex": "match-header-regex",
                         "present": "match-header-presence", "absent": "match-header-presence"},
    "Source.kind": {"service": "source-service", "namespace": "source-namespace",
                    "authenticated": "source-authenticated", "any": "source-any", "internet": "source-internet"},
    "EgressStance": {"registry_only": "egress-registry-only", "allow_any": "egress-allow-any"},
    "ExternalPort.protocol": {"http": "external-http", "tls": "external-tls", "tcp": "external-tcp"},
    "Listener.protocol": {"http": "ingress", "https": "ingress-https"},
    "QueryMatch.kind": {"exact": "match-query", "prefix": "match-query", "regex": "match-query",
                        "present": "match-query"},
    "HeaderOp.side": {"request": "request-headers", "response": "response-headers"},
    "Action": {"forward": "forward", "redirect": "redirect", "respond": "respond"},
}


class Use(NamedTuple):
    construct: str
    span: Span
    what: str  # the construct as written, for the message


def _retry_uses(r, where: str) -> Iterator[Use]:
    if r is None:
        return
    if r.attempts == 0:
        yield Use("retry-off", r.span, f"`retry off` {where}")
        return
    yield Use("retry", r.span, f"`retry {r.attempts}` {where}")
    if r.on_status:
        yield Use("retry-status", r.at("on"), f"retry on status {', '.join(map(str, r.on_status))} {where}")
    if r.backoff_ms is not None:
        yield Use("retry-backoff", r.at("backoff"), f"a retry backoff {where}")
    if r.budget_percent is not None:
        yield Use("retry-budget", r.at("budget"), f"a retry budget {where}")
    if r.non_idempotent:
        yield Use("retry-non-idempotent", r.span, f"`non_idempotent` retries {where}")


def _rule_uses(r, where: str) -> Iterator[Use]:
    """Match, action and per-rule settings of a route rule (a service's route or an ingress's)."""
    m = r.match
    if m.methods:
        yield Use("match-method", m.span, f"a method match {where}")
    for p in m.paths:
        yield Use(f"match-path-{p.kind}", p.span, f"the {p.kind} path `{p.value}` {where}")
    for h in m.headers:
        kind = {"regex": "match-header-regex", "present": "match-header-presence",
                "absent": "match-header-presence"}.get(h.kind, "match-header")
        yield Use(kind, h.span, f"the header test `{h.name}` ({h.kind}) {where}")
    for q in m.queries:
        yield Use("match-query", q.span, f"the query test `{q.name}` ({q.kind}) {where}")
    if m.sources:
        yield Use("match-source", m.span, f"`from` {where}")
    a = r.action
    if a.kind == "forward":
        split = len(a.destinations) > 1 or any(d.weight not in (None, 100.0) for d in a.destinations)
        yield Use("split" if split else "forward", a.span, f"{'a split' if split else 'forward'} {where}")
        if a.mirror is not None:
            yield Use("mirror", a.mirror.span, f"`mirror` {where}")
    else:
        yield Use(a.kind, a.span, f"`{a.kind}` {where}")
    if r.timeout_ms is not None:
        yield Use("timeout", r.at("timeout"), f"`timeout` {where}")
    yield from _retry_uses(r.retry, where)
    yield from _fault_uses(r.fault, where)
    for h in r.headers:
        yield Use(f"{h.side}-headers", h.span, f"`{h.op} {h.side} header \"{h.name}\"` {where}")
    if r.rewrite is not None:
        if r.rewrite.path is not None:
            yield Use("rewrite", r.rewrite.span, f"`rewrite` {where}")
        if r.rewrite.host is not None:
            yield Use("rewrite-host", r.rewrite.at("host"), f"a host rewrite {where}")
    if r.cors is not None:
        yield Use("cors", r.cors.span, f"`cors` {where}")


def _fault_uses(f, where: str) -> Iterator[Use]:
    if f is None:
        return
    if f.delay_ms is not None:
        yield Use("fault-delay", f.span, f"`fault delay` {where}")
    if f.abort_status is not None:
        yield Use("fault-abort", f.span, f"`fault abort` {where}")


def _holder_uses(h, where: str) -> Iterator[Use]:
    """circuit, outlier and balance of a service or a version."""
    if h.circuit is not None:
        yield Use("circuit", h.circuit.span, f"`circuit` {where}")
    if h.outlier is not None:
        yield Use("outlier", h.outlier.span, f"`outlier` {where}")
    if h.balance is not None:
        kind = "balance-hash" if h.balance.policy.startswith("hash") else "balance"
        yield Use(kind, h.balance.span, f"`balance {h.balance.policy}` {where}")


def egress_stance_used(mesh: Mesh) -> bool:
    """The egress stance counts as used when written or when the mesh names an
    external service (what a target does with egress then matters)."""
    s = mesh.settings
    return "egress" in s.spans or bool(mesh.externals) or s.egress == "allow_any"


def constructs_used(mesh: Mesh) -> Iterator[Use]:
    """Every use of a construct in the mesh, in file order per kind of element."""
    s = mesh.settings
    if s.declared:
        yield Use("trust-domain", s.at("trust_domain"), "the mesh's `trust_domain`")
        if s.tracing.enabled:
            yield Use("tracing", s.tracing.span, "`tracing`")
        yield Use("metrics" if s.metrics else "metrics-off", s.at("metrics"), f"`metrics {'on' if s.metrics else 'off'}`")
    yield Use(f"default-{s.default}", s.at("default"), f"`default {s.default}`")
    if egress_stance_used(mesh):
        yield Use(f"egress-{s.egress.replace('_', '-')}", s.at("egress"), f"`egress {s.egress}`")
    for svc in mesh.service_map.values():
        where = f"on service `{svc.name}`"
        yield Use(f"mtls-{mesh.mtls_of(svc)}", svc.at("mtls") if svc.mtls else s.at("mtls"),
                  f"mTLS `{mesh.mtls_of(svc)}` of service `{svc.name}`")
        for p in svc.ports:
            yield Use(f"port-{p.protocol}", p.span, f"`port {p.number} {p.protocol}` of service `{svc.name}`")
        if "account" in svc.spans:
            yield Use("account", svc.at("account"), f"`account {svc.account}` of service `{svc.name}`")
        for v in svc.versions:
            yield Use("versions", v.span, f"version `{v.name}` of service `{svc.name}`")
            yield from _holder_uses(v, f"on version `{v.name}` of `{svc.name}`")
        if svc.timeout_ms is not None:
            yield Use("timeout", svc.at("timeout"), f"`timeout` {where}")
        yield from _retry_uses(svc.retry, where)
        yield from _holder_uses(svc, where)
        yield from _fault_uses(svc.fault, where)
        if svc.cors is not None:
            yield Use("cors", svc.cors.span, f"`cors` {where}")
    for route in mesh.routes:
        for r in route.rules:
            yield from _rule_uses(r, f"in rule {r.index + 1} of route `{route.service.name}`")
    for p in mesh.provider_map.values():
        yield Use("jwt-provider", p.span, f"the jwt provider `{p.name}`")
        if p.jwks_uri is not None:
            yield Use("jwt-jwks-uri", p.at("jwks_uri"), f"`jwks_uri` of jwt provider `{p.name}`")
        for loc in p.token_from:
            if not (loc.kind == "header" and loc.name == "authorization" and loc.prefix == "Bearer "):
                yield Use("jwt-token-location", loc.span, f"`token {loc.kind} \"{loc.name}\"` of jwt provider `{p.name}`")
    for g in mesh.ingress_map.values():
        yield Use("ingress", g.span, f"ingress `{g.name}`")
        for ls in g.listeners:
            if ls.protocol == "https":
                yield Use("ingress-https", ls.span, f"`listen {ls.port} https` of ingress `{g.name}`")
        for r in g.rules:
            yield from _rule_uses(r, f"in rule {r.index + 1} of ingress `{g.name}`")
    for e in mesh.external_map.values():
        for p in e.ports:
            yield Use(f"external-{p.protocol}", p.span, f"`port {p.number} {p.protocol}` of external `{e.name}`")
        if e.timeout_ms is not None:
            yield Use("timeout", e.at("timeout"), f"`timeout` on external `{e.name}`")
        yield from _retry_uses(e.retry, f"on external `{e.name}`")
    externals = mesh.external_map
    for ar in mesh.auth_rules:
        where = f"in {ar.effect} rule #{ar.index + 1}"
        yield Use(ar.effect, ar.span, f"{'an' if ar.effect == 'allow' else 'a'} `{ar.effect}` rule #{ar.index + 1}")
        if ar.target.name in externals:
            yield Use("egress-rule", ar.span, f"the egress rule #{ar.index + 1} to `{ar.target.name}`")
        for src in ar.sources:
            yield Use(f"source-{src.kind}", src.span, f"the source `{src.name or src.kind}` {where}")
            if src.jwt is not None:
                yield Use("jwt-claims", src.jwt.span, f"the token requirement {where}")
        if ar.methods:
            yield Use("auth-methods", ar.span, f"methods {where}")
        if ar.paths:
            yield Use("auth-paths", ar.span, f"paths {where}")
    for lim in mesh.rate_limits:
        yield Use("rate-limit", lim.span, f"the rate limit on `{lim.target.name}`")
        if lim.key is not None:
            yield Use("rate-limit-key", lim.key.span, f"`per {lim.key.kind}` on the rate limit on `{lim.target.name}`")
        for src in lim.sources:
            if src.kind == "internet":
                yield Use("source-internet", src.span, f"the source `internet` of the rate limit on `{lim.target.name}`")
            if src.jwt is not None:
                yield Use("jwt-claims", src.jwt.span, f"the token requirement of the rate limit on `{lim.target.name}`")
