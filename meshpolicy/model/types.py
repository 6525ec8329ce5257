"""The typed model: what the policy means, with spans kept for diagnostics.

Values are plain and normalised (durations in milliseconds, percentages as
floats 0-100); `span` is where the element was written and `spans` maps a
field name to where that field's value was written. Every later stage
(checks, verifier, lowering) reads only this model.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import PurePath
from typing import Annotated, Literal, NamedTuple, Union

from .base import Field, Model, SkipValidation, Tagged

from ..span import Span

SpanT = Annotated[Span, SkipValidation()]
NO_SPAN = Span("", 0, 0, 0, 0, 0, 0)

MtlsMode = Literal["strict", "permissive", "off"]
Effect = Literal["allow", "deny"]
Protocol = Literal["http", "http2", "grpc", "tcp"]
EgressStance = Literal["registry_only", "allow_any"]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
NON_IDEMPOTENT_METHODS = ("POST", "PATCH")
RETRY_CONDITIONS = (
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "unavailable", "cancelled",
    "deadline-exceeded", "resource-exhausted", "internal",
)


# Every class is a `Model` (model/base.py): typed fields as in pydantic, and
# `make(**fields)`, which sets them without validating. The builder's values
# already have the grammar's types; validation (pydantic, imported only then)
# happens where a model is validated on purpose: the tests validate every
# built model of the examples and of generated programs.
class Node(Model, extra="forbid"):
    span: SpanT = NO_SPAN
    spans: dict[str, SpanT] = Field(default_factory=dict)

    def at(self, field: str) -> Span:
        """Where `field` was written, else where this element was."""
        return self.spans.get(field, self.span)


class Ref(Node):
    """A use of a name (service or version), with where it was written."""

    name: str


class Tracing(Node):
    enabled: bool = False
    formats: list[Literal["w3c", "b3"]] = Field(default_factory=list)
    sample_percent: float = 100.0


class MeshSettings(Node):
    name: str = "mesh"
    declared: bool = False  # a `mesh` block was written
    trust_domain: str = "cluster.local"
    mtls: MtlsMode = "strict"
    default: Effect = "deny"
    tracing: Tracing = Field(default_factory=lambda: Tracing.make())
    metrics: bool = True
    # registry_only: a workload reaches only the mesh's services and its
    # `external` services (and only where allowed); allow_any: also any other
    # host, as Istio's ALLOW_ANY (docs/semantics.md, "Egress").
    egress: EgressStance = "registry_only"


class Port(Node):
    number: int
    protocol: Protocol


class Retry(Node):
    """attempts == 0 means retries are off (`retry off`). `on_status`: the
    HTTP status codes written among the conditions (`on 503, 429`), kept
    apart from the named conditions in `on`."""

    attempts: int
    per_try_ms: int | None = None
    on: list[str] = Field(default_factory=list)
    on_status: list[int] = Field(default_factory=list)
    backoff_ms: int | None = None
    backoff_max_ms: int | None = None
    budget_percent: float | None = None
    budget_min: int | None = None
    non_idempotent: bool = False


class CircuitBreaker(Node):
    max_connections: int | None = None
    max_pending: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


class Outlier(Node):
    consecutive_5xx: int | None = None
    consecutive_gateway: int | None = None
    interval_ms: int | None = None
    eject_ms: int | None = None
    max_percent: float | None = None


class LoadBalancer(Node):
    policy: Literal["round_robin", "least_request", "random", "hash_header", "hash_source_ip"]
    header: str | None = None


class Fault(Node):
    delay_ms: int | None = None
    delay_percent: float | None = None
    abort_status: int | None = None
    abort_percent: float | None = None


class Version(Node):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    circuit: CircuitBreaker | None = None
    outlier: Outlier | None = None
    balance: LoadBalancer | None = None


class Cors(Node):
    """CORS for browsers: `origins` are exact origins (`https://a.example`) or
    `*`; a preflight from another origin gets no CORS headers."""

    origins: list[str]
    methods: list[str] = Field(default_factory=list)
    headers: list[str] = Field(default_factory=list)  # allowed request headers, lower-cased
    expose: list[str] = Field(default_factory=list)  # exposed response headers, lower-cased
    credentials: bool = False
    max_age_ms: int | None = None


class RuleSettings(NamedTuple):
    timeout_ms: int | None
    retry: Retry | None
    fault: Fault | None


class Service(Node):
    name: str
    namespace: str = "default"
    account: str = ""  # defaults to the service name (set by the builder)
    ports: list[Port] = Field(default_factory=list)
    versions: list[Version] = Field(default_factory=list)
    mtls: MtlsMode | None = None  # None: the mesh-wide mode
    timeout_ms: int | None = None
    retry: Retry | None = None
    circuit: CircuitBreaker | None = None
    outlier: Outlier | None = None
    balance: LoadBalancer | None = None
    fault: Fault | None = None
    cors: Cors | None = None

    def cors_for(self, rule: "RouteRule | None") -> "Cors | None":
        """The CORS policy of requests `rule` forwards: the rule's own, else the service's."""
        if rule is not None and rule.cors is not None:
            return rule.cors
        return self.cors

    def settings_for(self, rule: "RouteRule | None") -> "RuleSettings":
        """The timeout, retry and fault that apply to requests `rule` forwards
        (None: a request no route rule decides). A rule's own setting replaces
        the service's (docs/semantics.md, "Resilience")."""
        if rule is None:
            return RuleSettings(self.timeout_ms, self.retry, self.fault)
        return RuleSettings(
            rule.timeout_ms if rule.timeout_ms is not None else self.timeout_ms,
            rule.retry if rule.retry is not None else self.retry,
            rule.fault if rule.fault is not None else self.fault,
        )

    def version(self, name: str) -> Version | None:
        for v in self.versions:
            if v.name == name:
                return v
        return None

    @property
    def http(self) -> bool:
        """Speaks an HTTP-family protocol on at least one port (or declares none)."""
        return not self.ports or any(p.protocol != "tcp" for p in self.ports)


class PathPattern(Node):
    """exact: the whole path; prefix: a string prefix; glob: `*` is one
    non-empty segment, `**` any run of characters; regex: RE2, whole path."""

    kind: Literal["exact", "prefix", "glob", "regex"]
    value: str


class HeaderMatch(Node):
    name: str  # lower-cased
    kind: Literal["exact", "prefix", "regex", "present", "absent"]
    value: str | None = None


class QueryMatch(Node):
    """A query parameter test: `name` as written (case-sensitive), the value
    as decoded from the query string."""

    name: str
    kind: Literal["exact", "prefix", "regex", "present"]
    value: str | None = None


class Match(Node):
    """All listed conditions must hold; within a list any one suffices
    (headers and queries: each one must hold); empty = any."""

    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)
    queries: list[QueryMatch] = Field(default_factory=list)
    sources: list[Ref] = Field(default_factory=list)

    @property
    def is_catch_all(self) -> bool:
        return not (self.methods or self.paths or self.headers or self.queries or self.sources)


class WeightedVersion(Node):
    version: Ref
    weight: float | None = None  # None: not written (a single destination means 100)


class Mirror(Node):
    version: Ref
    percent: float = 100.0


class Forward(Node):
    kind: Literal["forward"] = "forward"
    destinations: list[WeightedVersion]
    mirror: Mirror | None = None


class Redirect(Node):
    kind: Literal["redirect"] = "redirect"
    uri: str
    status: int = 301


class DirectResponse(Node):
    kind: Literal["respond"] = "respond"
    status: int
    body: str | None = None


Action = Annotated[Union[Forward, Redirect, DirectResponse], Tagged("kind")]


class HeaderOp(Node):
    """`set|add|remove request|response header NAME [VALUE]`: set replaces
    every value, add appends one, remove drops the header."""

    side: Literal["request", "response"]
    op: Literal["set", "add", "remove"]
    name: str  # lower-cased
    value: str | None = None  # None for remove


class Rewrite(Node):
    """`rewrite "/new" [host "h"]`: the part of the path the rule's path
    matched (a prefix, a glob's fixed prefix before `**`, or the whole exact
    path) is replaced by `path`; `host` replaces the Host/:authority."""

    path: str | None = None
    host: str | None = None


class RouteRule(Node):
    index: int  # 0-based position in its route
    match: Match
    action: Action
    timeout_ms: int | None = None
    retry: Retry | None = None
    fault: Fault | None = None
    headers: list[HeaderOp] = Field(default_factory=list)  # in written order
    rewrite: Rewrite | None = None
    cors: Cors | None = None


class Route(Node):
    service: Ref
    rules: list[RouteRule] = Field(default_factory=list)


class ClaimTest(Node):
    """eq: the claim is this string (or a number/bool written as one);
    has: the claim is a list containing the value, or a space-separated
    string (OAuth `scope`) with the value as one of its words."""

    claim: str  # a top-level claim name, as written (`scope`, `https://x/roles`)
    op: Literal["eq", "has"]
    value: str


class JwtRequirement(Node):
    """`with jwt [PROVIDER] [TEST and TEST ...]`: the request carries a token
    that a provider (this one, or any the ingress accepts) validated, and
    whose claims pass every test."""

    provider: Ref | None = None
    claims: list[ClaimTest] = Field(default_factory=list)


class Source(Node):
    """service: that service's identity; namespace: any workload in it;
    authenticated: any workload with a mesh identity; any: anyone, even
    callers without an identity; internet: a request that entered the mesh
    through an ingress gateway (its transport peer is an ingress), with
    `jwt` the token it must carry."""

    kind: Literal["service", "namespace", "authenticated", "any", "internet"]
    name: str | None = None
    jwt: JwtRequirement | None = None  # only with kind "internet"


class AuthRule(Node):
    index: int  # 0-based position among all auth rules, in file order
    effect: Effect
    sources: list[Source]
    target: Ref
    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)


class LimitKey(Node):
    """`per claim "sub"` | `per header "x-api-key"` | `per source_ip`: one
    bucket per distinct value (requests without the value share one bucket)."""

    kind: Literal["claim", "header", "source_ip"]
    name: str | None = None  # the claim (as written) or header (lower-cased)


class RateLimit(Node):
    sources: list[Source]
    target: Ref
    requests: int
    per: Literal["s", "m", "h"]
    burst: int | None = None
    key: LimitKey | None = None  # None: one bucket per (sources, target) pair

    @property
    def per_seconds(self) -> int:
        return {"s": 1, "m": 60, "h": 3600}[self.per]


class TokenLocation(Node):
    """Where a provider's token is read: a header (with an optional value
    prefix such as `Bearer `), a query parameter or a cookie."""

    kind: Literal["header", "query", "cookie"]
    name: str  # header names lower-cased
    prefix: str | None = None  # headers only


class JwtProvider(Node):
    """`jwt NAME { issuer ...; audience ...; jwks FILE | jwks_uri URL; token ... }`.
    `jwks_file` is as written, relative to the directory of the file that
    declares it (`file`); `token_from` empty means `Authorization: Bearer`."""

    name: str
    issuer: str | None = None
    audiences: list[str] = Field(default_factory=list)
    jwks_file: str | None = None
    jwks_uri: str | None = None
    token_from: list[TokenLocation] = Field(default_factory=list)
    file: str = ""  # the .mesh file it was declared in
    # The keys themselves when the input held them inline (Istio YAML's
    # RequestAuthentication `jwks`); the language has no such syntax, so
    # `jwks_file` then names where `meshc import` writes them. Read through
    # model/jwks_text.py, never directly.
    jwks_text: str | None = None


def declared_path(declaring_file: str, written: str) -> PurePath:
    """A file a policy names (a JWKS, a certificate, a key) as the reader
    opens it: as written when absolute, else relative to the directory of
    the .mesh file that names it (`JwtProvider.file`, `Ingress.file`)."""
    p = PurePath(written)
    return p if p.is_absolute() else PurePath(declaring_file or ".").parent / p


class Listener(Node):
    """`listen PORT http` | `listen PORT https cert FILE key FILE` (TLS is
    terminated at the gateway; files relative to the declaring file)."""

    port: int
    protocol: Literal["http", "https"]
    cert_file: str | None = None
    key_file: str | None = None


class Ingress(Node):
    """An ingress gateway: a workload of its own (identity
    `spiffe://<td>/ns/<namespace>/sa/<account>`) that takes requests from
    outside the mesh on its listeners for `hosts`, checks tokens from `jwt`
    providers (empty: every declared provider), and routes by `rules`, whose
    destinations name *services* (each then routed by its own `route`)."""

    name: str
    namespace: str = "default"
    account: str = ""  # defaults to the ingress name (set by the builder)
    listeners: list[Listener] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)
    jwt: list[Ref] = Field(default_factory=list)
    rules: list[RouteRule] = Field(default_factory=list)
    file: str = ""


class ExternalPort(Node):
    """http: plain HTTP to the host; tls: the app speaks plain HTTP to its
    sidecar, which originates TLS to the host (so L7 rules apply); tcp:
    opaque bytes (TLS the app does itself passes through)."""

    number: int
    protocol: Literal["http", "tls", "tcp"]


class ExternalService(Node):
    """A service outside the mesh (`external stripe { host "api.stripe.com";
    port 443 tls }`). It has no sidecar: `allow X -> stripe` is enforced on
    the caller's sidecar, on the way out."""

    name: str
    namespace: str = "default"
    hosts: list[str] = Field(default_factory=list)
    ports: list[ExternalPort] = Field(default_factory=list)
    timeout_ms: int | None = None
    retry: Retry | None = None


class Assertion(Node):
    """never: source cannot reach target (directly, or through any path if
    transitive) for the given methods/paths; only: no one but `sources` may
    call target with them; can: source may call target with them;
    amplification / latency: along every path, worst case <= bound."""

    kind: Literal["never", "only", "can", "amplification", "latency"]
    source: Ref | None = None  # `internet` is written as Ref(name="internet")
    source_jwt: JwtRequirement | None = None  # `never internet with jwt ... ~> x`, `can internet ...`
    sources: list[Source] = Field(default_factory=list)
    target: Ref
    transitive: bool = False
    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)
    bound: int | None = None  # attempts for amplification, ms for latency


class Mesh(Model):
    """A whole mesh: every file of one project, merged. Lists keep file order
    (and duplicates, which the checks report); lookups use the first."""

    settings: MeshSettings = Field(default_factory=lambda: MeshSettings.make())
    mesh_blocks: list[MeshSettings] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    auth_rules: list[AuthRule] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    assertions: list[Assertion] = Field(default_factory=list)
    jwt_providers: list[JwtProvider] = Field(default_factory=list)
    ingresses: list[Ingress] = Field(default_factory=list)
    externals: list[ExternalService] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)

    @cached_property
    def limits_by_target(self) -> dict[str, list[RateLimit]]:
        """Rate limits per destination, in file order (one scan of the mesh,
        not one per destination: targets lower each destination's limits)."""
        out: dict[str, list[RateLimit]] = {}
        for lim in self.rate_limits:
            out.setdefault(lim.target.name, []).append(lim)
        return out

    @cached_property
    def provider_map(self) -> dict[str, JwtProvider]:
        out: dict[str, JwtProvider] = {}
        for p in self.jwt_providers:
            out.setdefault(p.name, p)
        return out

    @cached_property
    def ingress_map(self) -> dict[str, Ingress]:
        out: dict[str, Ingress] = {}
        for g in self.ingresses:
            out.setdefault(g.name, g)
        return out

    @cached_property
    def external_map(self) -> dict[str, ExternalService]:
        out: dict[str, ExternalService] = {}
        for e in self.externals:
            out.setdefault(e.name, e)
        return out

    @cached_property
    def service_map(self) -> dict[str, Service]:
        out: dict[str, Service] = {}
        for s in self.services:
            out.setdefault(s.name, s)
        return out

    @cached_property
    def route_map(self) -> dict[str, Route]:
        out: dict[str, Route] = {}
        for r in self.routes:
            out.setdefault(r.service.name, r)
        return out

    @cached_property
    def rules_by_target(self) -> dict[str, list[AuthRule]]:
        out: dict[str, list[AuthRule]] = {}
        for r in self.auth_rules:
            out.setdefault(r.target.name, []).append(r)
        return out

    def service(self, name: str) -> Service | None:
        return self.service_map.get(name)

    def mtls_of(self, service: Service) -> MtlsMode:
        return service.mtls or self.settings.mtls

    def spiffe_id(self, service: Service) -> str:
        return f"spiffe://{self.settings.trust_domain}/ns/{service.namespace}/sa/{service.account}"

