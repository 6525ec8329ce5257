"""The meshproxy config format, version 3, as strict pydantic models.

One JSON document per workload. These models are the runtime check of every
compiled file (TARGET.validate) and the source of the published JSON Schema
`targets/meshproxy/schema.json` (`python -m meshpolicy.wire.schema`
regenerates it; a test keeps the two equal). Every field is required, with
`null` for "not set", so a proxy never has to know a default.

Version 2 (issue 15) adds ingress workloads, JWT providers, `internet`
principals with claim tests, egress to external services, query matches,
header operations, rewrites, CORS, retry on status codes and keyed rate
limits. A version 1 file is refused with a message saying to recompile
(`refusal`): nothing in it is wrong, but a proxy reading it as version 2
would have to invent defaults for every new field, which is what the
format exists to avoid.

Version 3 (issue 17) runs several instances per version: an upstream lists
`endpoints` (one per instance, each with its own ports) where version 2 had
one `address` and `ports`, and a workload says which `instance` it is. A
version 2 file is refused the same way.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from .version import FORMAT_VERSION  # noqa: F401  (re-exported: the models' version)
HttpStatus = Annotated[int, Field(ge=200, le=599)]

PortNumber = Annotated[int, Field(ge=1, le=65535)]
Percent = Annotated[float, Field(ge=0, le=100)]
Millis = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=1, le=4294967295)]
Name = Annotated[str, Field(min_length=1)]
MtlsMode = Literal["strict", "permissive", "off"]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Workload(Strict):
    """Which workload this file configures; version is null for a service
    without versions (the service as a whole is one workload). kind
    `ingress`: an ingress gateway (`service` is the ingress's name; the
    file's `ingress` section says what it serves)."""

    kind: Literal["service", "ingress"]
    service: Name
    version: Name | None
    instance: Annotated[int, Field(ge=0)]  # which of the version's instances (0 for the first; an ingress: 0)
    namespace: Name
    account: Name
    labels: dict[str, str]


class Identity(Strict):
    spiffe_id: Name
    trust_domain: Name
    cert_file: Name
    key_file: Name
    ca_file: Name


class Endpoint(Strict):
    address: Name
    port: PortNumber


class AppPort(Strict):
    address: Name
    port: PortNumber
    protocol: Literal["http", "http2", "grpc", "tcp"]


class InboundListener(Strict):
    """Accepts callers for one declared service port and forwards to the app."""

    service_port: PortNumber
    address: Name
    port: PortNumber
    app: AppPort


class Listeners(Strict):
    # per-workload: the same fixed ports in every workload (one network
    # namespace each); mesh-unique: no two workloads share a port (one host)
    layout: Literal["per-workload", "mesh-unique"]
    admin: Endpoint  # also serves metrics
    outbound: Endpoint  # the app's HTTP proxy for calls into the mesh
    inbound: list[InboundListener]  # at least one for a service; none for an ingress


# ---- who: callers as the inbound side sees them ----------------------------

class PrincipalId(Strict):
    kind: Literal["id"]
    spiffe_id: Name


class PrincipalNamespace(Strict):
    """Any verified identity in the namespace; regex is anchored RE2 over the SPIFFE ID."""

    kind: Literal["namespace"]
    namespace: Name
    regex: Name


class PrincipalAuthenticated(Strict):
    kind: Literal["authenticated"]


class PrincipalAny(Strict):
    kind: Literal["any"]


class ClaimTest(Strict):
    """eq: the claim is this string (a number or bool: its JSON text); has:
    a list containing it, or a space-separated string with it as a word."""

    claim: Name
    op: Literal["eq", "has"]
    value: str


class IngressPeer(Strict):
    """An ingress gateway whose requests count as `internet`, and the JWT
    providers it accepts (meshpolicy.semantics.ingress.accepted_providers)."""

    spiffe_id: Name
    providers: list[Name]


class PrincipalInternet(Strict):
    """A request whose verified peer is one of `ingresses`. jwt true: it
    also carries a token that `provider` (null: any provider that ingress
    accepts) validates, here again with the file's `jwt` providers, and whose
    claims pass every test (meshpolicy.semantics.tokens.requirement_met_raw)."""

    kind: Literal["internet"]
    ingresses: list[IngressPeer]
    jwt: bool
    provider: Name | None
    claims: list[ClaimTest]


Principal = Annotated[Union[PrincipalId, PrincipalNamespace, PrincipalAuthenticated, PrincipalAny,
                            PrincipalInternet], Field(discriminator="kind")]


class PathMatcher(Strict):
    """kind and value are what the policy said; regex (anchored RE2) is what to evaluate."""

    kind: Literal["exact", "prefix", "glob", "regex"]
    value: str
    regex: Name


class HeaderTest(Strict):
    """name is lower-case; value is set for exact/prefix/regex; regex (anchored) for regex only."""

    name: Name
    kind: Literal["exact", "prefix", "regex", "present", "absent"]
    value: str | None
    regex: str | None


class QueryTest(Strict):
    """A query parameter test, as meshpolicy.semantics.query.query_matches_raw
    evaluates it: name case-sensitive, value percent-decoded (`+` a space),
    the first value of a repeated parameter; exact/prefix compare `value`,
    regex fullmatches `value` (RE2), present needs the parameter (value null)."""

    name: Name
    kind: Literal["exact", "prefix", "regex", "present"]
    value: str | None


class AuthEntry(Strict):
    """Matches when some principal, the method (any if empty) and some path (any if empty) match."""

    rule: Annotated[int, Field(ge=0)]  # the policy's auth rule index, for reporting
    principals: list[Principal] = Field(min_length=1)
    methods: list[Method]
    paths: list[PathMatcher]


class Authorization(Strict):
    """First any matching deny entry denies, else any matching allow entry allows, else default."""

    deny: list[AuthEntry]
    allow: list[AuthEntry]
    default: Literal["allow", "deny"]


class LimitKey(Strict):
    """claim: the validated token's claim (of a provider the principals
    name); header: the header's value; source_ip: the TCP peer's address."""

    kind: Literal["claim", "header", "source_ip"]
    name: Name | None


class RateLimit(Strict):
    """A token bucket per caller (keyed by SPIFFE ID, or peer address without
    one), or with `key`, per distinct key value (requests without one share
    a bucket)."""

    principals: list[Principal] = Field(min_length=1)
    key: LimitKey | None
    requests: Count
    per_seconds: Literal[1, 60, 3600]
    max_tokens: Count
    tokens_per_fill: Count
    fill_interval_ms: Millis


class Inbound(Strict):
    mtls: MtlsMode
    authorization: Authorization
    rate_limits: list[RateLimit]


# ---- where: the caller side -------------------------------------------------

class Retry(Strict):
    retries: Annotated[int, Field(ge=0, le=4294967295)]  # 0: no retries
    per_try_timeout_ms: Millis | None
    retry_on: list[Name]
    backoff_base_ms: Millis | None
    backoff_max_ms: Millis | None
    budget_percent: Percent | None
    budget_min_retries: Count | None
    non_idempotent: bool
    on_status: list[HttpStatus]  # retry when the upstream answers one of these


class Fault(Strict):
    delay_ms: Millis | None
    delay_percent: Percent | None
    abort_status: Annotated[int, Field(ge=200, le=599)] | None
    abort_percent: Percent | None


class CircuitBreaker(Strict):
    max_connections: Count | None
    max_pending: Count | None
    max_requests: Count | None
    max_retries: Annotated[int, Field(ge=0, le=4294967295)] | None


class OutlierDetection(Strict):
    consecutive_5xx: Count | None
    consecutive_gateway: Count | None
    interval_ms: Millis | None
    base_ejection_ms: Millis | None
    max_ejection_percent: Percent | None


class LoadBalancer(Strict):
    policy: Literal["round_robin", "least_request", "random", "hash_header", "hash_source_ip"]
    header: Name | None


class UpstreamPort(Strict):
    service_port: PortNumber
    port: PortNumber


class UpstreamEndpoint(Strict):
    """One instance of a version: where its sidecar's inbound listeners are."""

    address: Name
    ports: list[UpstreamPort] = Field(min_length=1)


class Upstream(Strict):
    """One version of the destination (version null: the unversioned service):
    its instances' endpoints, from which load_balancer picks (round robin when
    null), each with its own outlier ejection."""

    version: Name | None
    endpoints: list[UpstreamEndpoint] = Field(min_length=1)
    circuit_breaker: CircuitBreaker | None
    outlier_detection: OutlierDetection | None
    load_balancer: LoadBalancer | None


class RouteMatch(Strict):
    """All written conditions hold: method in methods (any if empty), some path
    regex matches (any if empty), every header test holds, and this workload's
    service is in sources (any if empty)."""

    methods: list[Method]
    paths: list[PathMatcher]
    headers: list[HeaderTest]
    queries: list[QueryTest]
    sources: list[Name]


class WeightedUpstream(Strict):
    version: Name | None
    weight: Percent


class Mirror(Strict):
    version: Name | None
    percent: Percent


class ForwardAction(Strict):
    kind: Literal["forward"]
    destinations: list[WeightedUpstream] = Field(min_length=1)
    mirror: Mirror | None


class RedirectAction(Strict):
    kind: Literal["redirect"]
    uri: str
    status: Literal[301, 302, 303, 307, 308]


class RespondAction(Strict):
    kind: Literal["respond"]
    status: Annotated[int, Field(ge=200, le=599)]
    body: str | None


Action = Annotated[Union[ForwardAction, RedirectAction, RespondAction], Field(discriminator="kind")]


class HeaderOp(Strict):
    """set replaces every value, add appends one, remove drops the header;
    applied in written order (meshpolicy.semantics.header_ops): request ops
    before forwarding, response ops to a forwarded request's response. name
    is lower-case; value null for remove."""

    side: Literal["request", "response"]
    op: Literal["set", "add", "remove"]
    name: Name
    value: str | None


class Rewrite(Strict):
    """path: what replaces the part of the path the rule's first matching
    path matcher matched (meshpolicy.semantics.rewrite.rewrite_for: a prefix,
    a glob's text before its first `*`, an exact path; the whole path when
    the rule has no path matcher); host: the new Host. Applied after
    matching, before forwarding; the query is kept as it came."""

    path: str | None
    host: Name | None


class Cors(Strict):
    """origins: exact origins or `*`; an OPTIONS request with Origin and
    Access-Control-Request-Method from an allowed origin is answered 200
    by the proxy; other requests from an allowed origin get
    Access-Control-Allow-Origin (and -Credentials, -Expose-Headers)."""

    origins: list[Name] = Field(min_length=1)
    methods: list[Method]
    headers: list[Name]
    expose: list[Name]
    credentials: bool
    max_age_ms: Annotated[int, Field(ge=0)] | None  # Access-Control-Max-Age in whole seconds


class RouteRule(Strict):
    """rule: the policy's rule index in the route, or null for the implicit
    rule of a service without a route block (every version, evenly).
    timeout/retry/fault/cors are resolved: the rule's own, else the service's."""

    rule: Annotated[int, Field(ge=0)] | None
    match: RouteMatch
    action: Action
    timeout_ms: Millis | None
    retry: Retry | None
    fault: Fault | None
    headers: list[HeaderOp]
    rewrite: Rewrite | None
    cors: Cors | None


class Destination(Strict):
    """A service this workload may call. Requests whose Host (port removed)
    is one of hosts go here; no matching route rule means 404."""

    service: Name
    namespace: Name
    hosts: list[Name] = Field(min_length=1)
    spiffe_id: Name  # what the upstream's certificate must carry
    mtls: bool  # originate mTLS (false: the destination has mTLS off)
    upstreams: list[Upstream] = Field(min_length=1)
    routes: list[RouteRule]
    # For a tcp-only destination: where the app connects (no Host to route by).
    tcp_listener: Endpoint | None


class ExternalPort(Strict):
    """http: plain HTTP to host:port; tls: the proxy originates TLS (SNI and
    certificate check against the host); tcp: bytes, no L7 policy, through
    `listener` (the local port the app connects to; null when this workload
    may not reach it, and for http/tls ports). dial: connect here instead of
    resolving the host (`meshc up`'s stand-in); SNI and the certificate
    check still use the host."""

    port: PortNumber
    protocol: Literal["http", "tls", "tcp"]
    dial: Endpoint | None
    listener: Endpoint | None


class EgressEntry(Strict):
    """A rule `allow|deny <this workload> -> <external> [methods] [paths]`,
    sources already resolved against this workload."""

    rule: Annotated[int, Field(ge=0)]
    methods: list[Method]
    paths: list[PathMatcher]


class External(Strict):
    """An external service this workload's app may name by Host (the port
    from the Host, else the only http/tls port). Decided here, at the
    caller: deny entries, then allow entries, then default."""

    name: Name
    namespace: Name
    hosts: list[Name] = Field(min_length=1)
    ports: list[ExternalPort] = Field(min_length=1)
    deny: list[EgressEntry]
    allow: list[EgressEntry]
    default: Literal["allow", "deny"]
    timeout_ms: Millis | None
    retry: Retry | None


class Outbound(Strict):
    destinations: list[Destination]
    externals: list[External]


class Egress(Strict):
    """registry_only: a Host that is neither a destination nor an external
    is refused (403); allow_any: it is forwarded as plain HTTP unchecked.
    ca_file: the roots TLS origination trusts (null: the system store)."""

    stance: Literal["registry_only", "allow_any"]
    ca_file: Name | None


class TokenLocation(Strict):
    kind: Literal["header", "query", "cookie"]
    name: Name  # a header name lower-case
    prefix: str | None  # headers only: the value starts with it (e.g. `Bearer `), the token follows


class JwtProvider(Strict):
    """issuer: the `iss` a token must carry; audiences: `aud` must name one
    (any when empty); exactly one of jwks (the JWKS as JSON text: the public
    keys, read from the policy's file at compile time) and jwks_uri (an
    https URL the proxy fetches the JWKS from when it starts, then every
    5 minutes; tokens of the provider are refused until a fetch succeeds)."""

    name: Name
    issuer: Name
    audiences: list[Name]
    jwks: Name | None
    jwks_uri: Name | None
    tokens: list[TokenLocation] = Field(min_length=1)


class IngressListener(Strict):
    address: Name
    port: PortNumber
    protocol: Literal["http", "https"]
    cert_file: Name | None  # https: the certificate chain and key outside clients see
    key_file: Name | None


class WeightedService(Strict):
    service: Name
    weight: Percent


class IngressForward(Strict):
    kind: Literal["forward"]
    destinations: list[WeightedService] = Field(min_length=1)


IngressAction = Annotated[Union[IngressForward, RedirectAction, RespondAction], Field(discriminator="kind")]


class IngressRule(Strict):
    """Like a route rule, but a forward names services: the request is then
    routed by that service's own route (its entry in outbound.destinations)."""

    rule: Annotated[int, Field(ge=0)]
    match: RouteMatch
    action: IngressAction
    timeout_ms: Millis | None
    headers: list[HeaderOp]
    rewrite: Rewrite | None
    cors: Cors | None


class Ingress(Strict):
    """An ingress gateway: a token none of `providers` validates is 401;
    Host must match one of hosts (semantics.hosts: exact, or `*.suffix` for
    one label or more; none: any host) else 404; then the first matching
    rule decides (none: 404)."""

    listeners: list[IngressListener] = Field(min_length=1)
    hosts: list[Name]  # none written: any host
    providers: list[Name]
    rules: list[IngressRule]


class Tracing(Strict):
    enabled: bool
    formats: list[Literal["w3c", "b3"]]
    sample_percent: Percent


class Metrics(Strict):
    enabled: bool
    path: Name  # served on the admin listener


class WorkloadConfig(Strict):
    version: Literal[3]
    mesh: Name
    workload: Workload
    identity: Identity
    listeners: Listeners
    inbound: Inbound
    outbound: Outbound
    egress: Egress
    jwt: list[JwtProvider]  # the providers this workload validates tokens of
    ingress: Ingress | None  # set exactly for an ingress workload
    tracing: Tracing
    metrics: Metrics


def refusal(raw: object) -> str | None:
    """Why a document is not this format's version, before field checks
    (so a version 1 file gets one clear line, not fifty missing fields)."""
    if not isinstance(raw, dict) or "version" not in raw:
        return "not a meshproxy workload config (no `version`)"
    v = raw["version"]
    if v != FORMAT_VERSION:
        return (f"meshproxy config format version {v!r}; this meshproxy reads version {FORMAT_VERSION}: "
                "recompile it with `meshc compile --target meshproxy`")
    return None
