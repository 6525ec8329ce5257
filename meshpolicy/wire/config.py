"""The meshproxy config format, version 1, as strict pydantic models.

One JSON document per workload. These models are the runtime check of every
compiled file (TARGET.validate) and the source of the published JSON Schema
`targets/meshproxy/schema.json` (`python -m meshpolicy.wire.schema`
regenerates it; a test keeps the two equal). Every field is required, with
`null` for "not set", so a proxy never has to know a default.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 1

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
    without versions (the service as a whole is one workload)."""

    service: Name
    version: Name | None
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
    inbound: list[InboundListener] = Field(min_length=1)


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


Principal = Annotated[Union[PrincipalId, PrincipalNamespace, PrincipalAuthenticated, PrincipalAny],
                      Field(discriminator="kind")]


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


class RateLimit(Strict):
    """A token bucket per caller (keyed by SPIFFE ID, or peer address without one)."""

    principals: list[Principal] = Field(min_length=1)
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


class Upstream(Strict):
    """One version of the destination (version null: the unversioned service)."""

    version: Name | None
    address: Name
    ports: list[UpstreamPort] = Field(min_length=1)
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


class RouteRule(Strict):
    """rule: the policy's rule index in the route, or null for the implicit
    rule of a service without a route block (every version, evenly).
    timeout/retry/fault are resolved: the rule's own, else the service's."""

    rule: Annotated[int, Field(ge=0)] | None
    match: RouteMatch
    action: Action
    timeout_ms: Millis | None
    retry: Retry | None
    fault: Fault | None


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


class Outbound(Strict):
    destinations: list[Destination]


class Tracing(Strict):
    enabled: bool
    formats: list[Literal["w3c", "b3"]]
    sample_percent: Percent


class Metrics(Strict):
    enabled: bool
    path: Name  # served on the admin listener


class WorkloadConfig(Strict):
    version: Literal[1]
    mesh: Name
    workload: Workload
    identity: Identity
    listeners: Listeners
    inbound: Inbound
    outbound: Outbound
    tracing: Tracing
    metrics: Metrics
