"""Strict models of the parts of Istio's resources that meshc emits.

Unknown fields are errors (extra="forbid"), and the validators carry the
rules Istio's own webhook and CRD CEL rules enforce on these fields:
durations of at least 1ms, route weights 0-100 totalling 100, ports
1-65535, DNS-1123 names, one action per http rule. They stand alone: the
package never reads the CRD files at run time.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEADER = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
UINT32 = 4_294_967_295


def duration_ns(text: str) -> int:
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration")
    total = 0.0
    for num, _, unit in re.findall(r"([0-9]+(\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text):
        total += float(num) * _UNITS_NS[unit]
    return int(round(total))


def _duration(text: str) -> str:
    if duration_ns(text) < 1_000_000:
        raise ValueError("must be a valid duration greater than 1ms")
    return text


def _dns_label(text: str) -> str:
    if len(text) > 63 or not _DNS_LABEL.fullmatch(text):
        raise ValueError(f"{text!r} is not a DNS-1123 label")
    return text


def _label_map(m: dict[str, str]) -> dict[str, str]:
    for k, v in m.items():
        if not k or "*" in k or "*" in v or len(v) > 63:
            raise ValueError(f"invalid label {k!r}: {v!r}")
    return m


def _headers(m: dict) -> dict:
    for k in m:
        if not _HEADER.fullmatch(k):
            raise ValueError(f"{k!r} is not a lower-case header name")
    return m


Duration = Annotated[str, AfterValidator(_duration)]
DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Labels = Annotated[dict[str, str], AfterValidator(_label_map)]
Port = Annotated[int, Field(ge=1, le=65535)]
U32 = Annotated[int, Field(ge=0, le=UINT32)]
I32 = Annotated[int, Field(ge=0, le=2**31 - 1)]
Pct = Annotated[float, Field(ge=0, le=100)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _one_of(values: dict, keys: tuple[str, ...]) -> None:
    if sum(k in values and values[k] is not None for k in keys) > 1:
        raise ValueError(f"at most one of {', '.join(keys)}")


class Metadata(Strict):
    name: DnsLabel | Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
    namespace: DnsLabel


class Resource(Strict):
    metadata: Metadata


# ---- VirtualService ---------------------------------------------------------

class StringMatch(Strict):
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self):
        _one_of(self.__dict__, ("exact", "prefix", "regex"))
        if self.regex is not None and self.regex != "*":  # `*`: Istio's present match
            import re2

            try:
                re2.compile(self.regex)
            except re2.error as exc:
                raise ValueError(f"invalid RE2 regex {self.regex!r}: {exc}") from None
        return self


class HTTPMatchRequest(Strict):
    uri: StringMatch | None = None
    method: StringMatch | None = None
    headers: Annotated[dict[str, StringMatch], AfterValidator(_headers)] | None = None
    withoutHeaders: Annotated[dict[str, StringMatch], AfterValidator(_headers)] | None = None
    queryParams: dict[Annotated[str, Field(min_length=1)], StringMatch] | None = None
    sourceLabels: Labels | None = None
    sourceNamespace: DnsLabel | None = None


class PortSelector(Strict):
    number: Port


class Destination(Strict):
    host: str = Field(min_length=1)
    subset: DnsLabel | None = None
    port: PortSelector | None = None


class RouteDestination(Strict):
    destination: Destination
    weight: Annotated[int, Field(ge=0, le=100)] | None = None


class Percent(Strict):
    value: Pct


class Delay(Strict):
    fixedDelay: Duration
    percentage: Percent


class Abort(Strict):
    httpStatus: Annotated[int, Field(ge=200, le=599)]
    percentage: Percent


class Fault(Strict):
    delay: Delay | None = None
    abort: Abort | None = None


class Retries(Strict):
    attempts: I32
    perTryTimeout: Duration | None = None
    retryOn: Annotated[str, Field(pattern=r"^[a-z0-9-]+(,[a-z0-9-]+)*$")] | None = None
    backoff: Duration | None = None


class Redirect(Strict):
    uri: str | None = None
    authority: str | None = None
    scheme: str | None = None
    redirectCode: Annotated[int, Field(ge=300, le=399)] | None = None


class Body(Strict):
    string: str


class DirectResponse(Strict):
    status: Annotated[int, Field(ge=200, le=599)]
    body: Body | None = None


class HeaderOperations(Strict):
    set: Annotated[dict[str, str], AfterValidator(_headers)] | None = None
    add: Annotated[dict[str, str], AfterValidator(_headers)] | None = None
    remove: list[Annotated[str, Field(pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")]] | None = None


class Headers(Strict):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class RegexRewrite(Strict):
    match: str = Field(min_length=1)
    rewrite: str

    @model_validator(mode="after")
    def _re2(self):
        import re2

        try:
            re2.compile(self.match)
        except re2.error as exc:
            raise ValueError(f"invalid RE2 regex {self.match!r}: {exc}") from None
        return self


class Rewrite(Strict):
    uri: Annotated[str, Field(min_length=1)] | None = None
    authority: Annotated[str, Field(min_length=1)] | None = None
    uriRegexRewrite: RegexRewrite | None = None

    @model_validator(mode="after")
    def _one_path(self):
        _one_of(self.__dict__, ("uri", "uriRegexRewrite"))
        return self


class OriginMatch(Strict):
    exact: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.exact is None) == (self.regex is None):
            raise ValueError("an origin is exact or regex")
        return self


class CorsPolicy(Strict):
    allowOrigins: list[OriginMatch] = Field(min_length=1)
    allowMethods: list[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]] | \
        None = Field(None, min_length=1)
    allowHeaders: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    exposeHeaders: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    allowCredentials: bool | None = None
    maxAge: Duration | None = None


class HTTPRoute(Strict):
    name: str | None = None
    match: list[HTTPMatchRequest] | None = None
    route: list[RouteDestination] | None = None
    redirect: Redirect | None = None
    directResponse: DirectResponse | None = None
    mirror: Destination | None = None
    mirrorPercentage: Percent | None = None
    timeout: Duration | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    headers: Headers | None = None
    rewrite: Rewrite | None = None
    corsPolicy: CorsPolicy | None = None

    @model_validator(mode="after")
    def _istio_rules(self):
        actions = [x for x in (self.route, self.redirect, self.directResponse) if x]
        if len(actions) != 1:
            raise ValueError("an http route needs exactly one of route, redirect and directResponse")
        if self.route and len(self.route) > 1:
            weights = [d.weight for d in self.route]
            if None in weights or sum(weights) != 100:
                raise ValueError(f"route weights {weights} must all be set and total 100")
        if self.mirror is None and self.mirrorPercentage is not None:
            raise ValueError("mirrorPercentage without mirror")
        if self.rewrite is not None and self.redirect is not None:
            raise ValueError("rewrite and redirect together")
        return self


def _gateway_ref(g: str) -> str:
    ns, _, name = g.partition("/")
    if not _DNS_LABEL.fullmatch(ns) or not _DNS_LABEL.fullmatch(name):
        raise ValueError(f"gateway {g!r} must be NAMESPACE/NAME")
    return g


class VirtualServiceSpec(Strict):
    hosts: list[str] = Field(min_length=1)
    gateways: list[Annotated[str, AfterValidator(_gateway_ref)]] | None = Field(None, min_length=1)
    http: list[HTTPRoute] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique(self):
        names = [r.name for r in self.http if r.name]
        if len(names) != len(set(names)):
            raise ValueError("http route names must be unique")
        return self


class VirtualService(Resource):
    apiVersion: Literal["networking.istio.io/v1"]
    kind: Literal["VirtualService"]
    spec: VirtualServiceSpec


# ---- DestinationRule --------------------------------------------------------

class ConsistentHash(Strict):
    httpHeaderName: str | None = None
    useSourceIp: bool | None = None

    @model_validator(mode="after")
    def _one(self):
        _one_of(self.__dict__, ("httpHeaderName", "useSourceIp"))
        return self


class LoadBalancer(Strict):
    simple: Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"] | None = None
    consistentHash: ConsistentHash | None = None

    @model_validator(mode="after")
    def _one(self):
        _one_of(self.__dict__, ("simple", "consistentHash"))
        return self


class TcpPool(Strict):
    maxConnections: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class HttpPool(Strict):
    http1MaxPendingRequests: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    http2MaxRequests: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None
    maxRetries: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = None


class ConnectionPool(Strict):
    tcp: TcpPool | None = None
    http: HttpPool | None = None


class OutlierDetection(Strict):
    consecutive5xxErrors: U32 | None = None
    consecutiveGatewayErrors: U32 | None = None
    interval: Duration | None = None
    baseEjectionTime: Duration | None = None
    maxEjectionPercent: Annotated[int, Field(ge=0, le=100)] | None = None


class RetryBudget(Strict):
    percent: Pct
    minRetryConcurrency: U32 | None = None


class ClientTLS(Strict):
    mode: Literal["DISABLE", "ISTIO_MUTUAL", "SIMPLE"]
    sni: Annotated[str, Field(min_length=1)] | None = None
    subjectAltNames: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _origination_only(self):
        if self.mode != "SIMPLE" and (self.sni is not None or self.subjectAltNames is not None):
            raise ValueError("sni and subjectAltNames belong to TLS origination (SIMPLE)")
        return self


class PortTrafficPolicy(Strict):
    port: PortSelector
    tls: ClientTLS


class SubsetPolicy(Strict):
    loadBalancer: LoadBalancer | None = None
    connectionPool: ConnectionPool | None = None
    outlierDetection: OutlierDetection | None = None


class TrafficPolicy(SubsetPolicy):
    retryBudget: RetryBudget | None = None
    tls: ClientTLS | None = None
    portLevelSettings: list[PortTrafficPolicy] | None = Field(None, min_length=1)


class Subset(Strict):
    name: DnsLabel
    labels: Labels | None = None
    trafficPolicy: SubsetPolicy | None = None


class DestinationRuleSpec(Strict):
    host: str = Field(min_length=1)
    trafficPolicy: TrafficPolicy | None = None
    subsets: list[Subset] | None = None

    @model_validator(mode="after")
    def _unique(self):
        names = [s.name for s in self.subsets or []]
        if len(names) != len(set(names)):
            raise ValueError("subset names must be unique")
        return self


class DestinationRule(Resource):
    apiVersion: Literal["networking.istio.io/v1"]
    kind: Literal["DestinationRule"]
    spec: DestinationRuleSpec


# ---- security ---------------------------------------------------------------

class Selector(Strict):
    matchLabels: Labels = Field(min_length=1)


class MutualTLS(Strict):
    mode: Literal["STRICT", "PERMISSIVE", "DISABLE"]


class PeerAuthenticationSpec(Strict):
    selector: Selector | None = None
    mtls: MutualTLS


class PeerAuthentication(Resource):
    apiVersion: Literal["security.istio.io/v1"]
    kind: Literal["PeerAuthentication"]
    spec: PeerAuthenticationSpec


def _principal(p: str) -> str:
    if p != "*" and not re.fullmatch(r"[^/*]+/ns/[^/*]+/sa/[^/*]+", p):
        raise ValueError(f"{p!r} is not `*` or TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT")
    return p


def _authz_path(p: str) -> str:
    """Istio: exact, `prefix*`, `*suffix`, `*`, or a URI template whose
    `{*}`/`{**}` operators are whole segments and `{**}` comes last."""
    if not p.startswith("/") and p != "*" and not p.startswith("*"):
        raise ValueError(f"path {p!r} must start with `/`")
    if "{" in p or "}" in p:
        segs = p.split("/")
        for i, s in enumerate(segs):
            if ("{" in s or "}" in s) and s not in ("{*}", "{**}"):
                raise ValueError(f"path template {p!r}: operators must be whole segments")
            if s == "{**}" and i != len(segs) - 1:
                raise ValueError(f"path template {p!r}: `{{**}}` must be the last operator")
        if "*" in p.replace("{*}", "").replace("{**}", ""):
            raise ValueError(f"path template {p!r} mixes `*` forms")
    elif "*" in p[1:-1]:
        raise ValueError(f"path {p!r}: `*` only at the start or end")
    return p


class Source(Strict):
    principals: list[Annotated[str, AfterValidator(_principal)]] | None = Field(None, min_length=1)
    namespaces: list[DnsLabel] | None = Field(None, min_length=1)


class From(Strict):
    source: Source


class Operation(Strict):
    methods: list[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"]] | None = \
        Field(None, min_length=1)
    paths: list[Annotated[str, AfterValidator(_authz_path)]] | None = Field(None, min_length=1)


class To(Strict):
    operation: Operation


def _condition_key(k: str) -> str:
    if not re.fullmatch(r"request\.auth\.claims\[[^\[\]]+\]", k):
        raise ValueError(f"{k!r} is not request.auth.claims[NAME]")
    return k


class Condition(Strict):
    key: Annotated[str, AfterValidator(_condition_key)]
    values: list[str] = Field(min_length=1)


class Rule(Strict):
    from_: list[From] | None = Field(None, alias="from", min_length=1)
    to: list[To] | None = Field(None, min_length=1)
    when: list[Condition] | None = Field(None, min_length=1)


class AuthorizationPolicySpec(Strict):
    selector: Selector | None = None
    action: Literal["ALLOW", "DENY"] | None = None
    rules: list[Rule] | None = Field(None, min_length=1, max_length=512)


class AuthorizationPolicy(Resource):
    apiVersion: Literal["security.istio.io/v1"]
    kind: Literal["AuthorizationPolicy"]
    spec: AuthorizationPolicySpec


class JwtHeader(Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[a-z0-9!#$%&'*+.^_`|~-]+$")]
    prefix: str | None = None


class JwtRule(Strict):
    issuer: str = Field(min_length=1)
    audiences: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    jwks: str | None = None
    jwksUri: Annotated[str, Field(pattern=r"^https?://", max_length=2048)] | None = None
    fromHeaders: list[JwtHeader] | None = Field(None, min_length=1)
    fromParams: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    fromCookies: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    forwardOriginalToken: bool
    spaceDelimitedClaims: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1,
                                                                                  max_length=64)

    @model_validator(mode="after")
    def _keys(self):
        if (self.jwks is None) == (self.jwksUri is None):
            raise ValueError("exactly one of jwks and jwksUri")
        if self.jwks is not None:
            try:
                keys = json.loads(self.jwks).get("keys")
            except (ValueError, AttributeError):
                keys = None
            if not isinstance(keys, list) or not keys:
                raise ValueError("jwks is not a JWKS with keys")
        if not (self.fromHeaders or self.fromParams or self.fromCookies):
            raise ValueError("the token locations are written out (Istio's default also reads ?access_token=)")
        return self


class RequestAuthenticationSpec(Strict):
    selector: Selector
    jwtRules: list[JwtRule] = Field(min_length=1, max_length=4096)


class RequestAuthentication(Resource):
    apiVersion: Literal["security.istio.io/v1"]
    kind: Literal["RequestAuthentication"]
    spec: RequestAuthenticationSpec


# ---- Sidecar, Telemetry, EnvoyFilter -----------------------------------------

def _egress_host(h: str) -> str:
    ns, _, host = h.partition("/")
    if not ns or not host:
        raise ValueError(f"egress host {h!r} must be NAMESPACE/HOST")
    return h


class Egress(Strict):
    hosts: list[Annotated[str, AfterValidator(_egress_host)]] = Field(min_length=1)


class WorkloadSelector(Strict):
    labels: Labels = Field(min_length=1)


class OutboundTrafficPolicy(Strict):
    mode: Literal["REGISTRY_ONLY", "ALLOW_ANY"]


class SidecarSpec(Strict):
    workloadSelector: WorkloadSelector | None = None  # none: the mesh-wide default (root namespace)
    egress: list[Egress] = Field(min_length=1)
    outboundTrafficPolicy: OutboundTrafficPolicy | None = None


# ---- Gateway ----------------------------------------------------------------------

class GatewayPort(Strict):
    number: Port
    name: Annotated[str, Field(min_length=1)]
    protocol: Literal["HTTP", "HTTPS"]


class ServerTLS(Strict):
    mode: Literal["SIMPLE"]
    credentialName: DnsLabel | Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]


class Server(Strict):
    port: GatewayPort
    hosts: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    tls: ServerTLS | None = None

    @model_validator(mode="after")
    def _tls(self):
        if (self.port.protocol == "HTTPS") != (self.tls is not None):
            raise ValueError("an HTTPS server needs tls, an HTTP server has none")
        return self


class GatewaySpec(Strict):
    selector: Labels = Field(min_length=1)
    servers: list[Server] = Field(min_length=1)

    @model_validator(mode="after")
    def _ports(self):
        numbers = [x.port.number for x in self.servers]
        if len(numbers) != len(set(numbers)):
            raise ValueError("one server per port")
        return self


class Gateway(Resource):
    apiVersion: Literal["networking.istio.io/v1"]
    kind: Literal["Gateway"]
    spec: GatewaySpec


# ---- ServiceEntry ---------------------------------------------------------------

_EXTERNAL_HOST = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _external_host(h: str) -> str:
    if len(h) > 253 or not _EXTERNAL_HOST.fullmatch(h):
        raise ValueError(f"{h!r} is not a DNS name (optionally `*.`-prefixed)")
    return h


class ServicePort(Strict):
    number: Port
    name: Annotated[str, Field(min_length=1)]
    protocol: Literal["HTTP", "TLS", "TCP", "HTTPS"]


class ServiceEntrySpec(Strict):
    hosts: list[Annotated[str, AfterValidator(_external_host)]] = Field(min_length=1)
    location: Literal["MESH_EXTERNAL"]
    resolution: Literal["DNS", "NONE"]
    ports: list[ServicePort] = Field(min_length=1)

    @model_validator(mode="after")
    def _istio_rules(self):
        if self.resolution == "DNS" and any(h.startswith("*") for h in self.hosts):
            raise ValueError("DNS resolution needs hosts without wildcards")
        numbers = [p.number for p in self.ports]
        names = [p.name for p in self.ports]
        if len(set(numbers)) != len(numbers) or len(set(names)) != len(names):
            raise ValueError("port numbers and names must be unique")
        return self


class ServiceEntry(Resource):
    apiVersion: Literal["networking.istio.io/v1"]
    kind: Literal["ServiceEntry"]
    spec: ServiceEntrySpec


class Sidecar(Resource):
    apiVersion: Literal["networking.istio.io/v1"]
    kind: Literal["Sidecar"]
    spec: SidecarSpec


class ProviderRef(Strict):
    name: str = Field(min_length=1)


class Tracing(Strict):
    providers: list[ProviderRef] | None = None
    randomSamplingPercentage: Pct | None = None
    disableSpanReporting: bool | None = None


class MetricSelector(Strict):
    metric: Literal["ALL_METRICS"]


class MetricsOverride(Strict):
    match: MetricSelector
    disabled: bool


class Metrics(Strict):
    providers: list[ProviderRef] = Field(min_length=1)
    overrides: list[MetricsOverride] | None = None


class TelemetrySpec(Strict):
    tracing: list[Tracing] = Field(min_length=1)
    metrics: list[Metrics] = Field(min_length=1)


class Telemetry(Resource):
    apiVersion: Literal["telemetry.istio.io/v1"]
    kind: Literal["Telemetry"]
    spec: TelemetrySpec


class SubFilter(Strict):
    name: str


class NetworkFilter(Strict):
    name: Literal["envoy.filters.network.http_connection_manager"]
    subFilter: SubFilter


class FilterChain(Strict):
    filter: NetworkFilter


class ListenerMatch(Strict):
    filterChain: FilterChain


class VhostMatch(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9.-]+:[0-9]+$")]


class RouteConfigurationMatch(Strict):
    vhost: VhostMatch


class PatchMatch(Strict):
    context: Literal["SIDECAR_OUTBOUND"]
    listener: ListenerMatch | None = None
    routeConfiguration: RouteConfigurationMatch | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.listener is None) == (self.routeConfiguration is None):
            raise ValueError("exactly one of listener and routeConfiguration")
        return self


class Patch(Strict):
    operation: Literal["INSERT_BEFORE", "MERGE"]
    value: dict


class ConfigPatch(Strict):
    applyTo: Literal["HTTP_FILTER", "VIRTUAL_HOST"]
    match: PatchMatch
    patch: Patch

    @model_validator(mode="after")
    def _typed_configs(self):
        """Each embedded Envoy config must parse as its protobuf message."""
        v = self.patch.value
        configs = [v["typed_config"]] if "typed_config" in v else list(v.get("typed_per_filter_config", {}).values())
        if not configs:
            raise ValueError("patch carries no typed config")
        for c in configs:
            _check_typed_struct(c)
        return self


def _check_typed_struct(c: dict) -> None:
    from google.protobuf import json_format

    from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

    want = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
    if c.get("@type") != "type.googleapis.com/udpa.type.v1.TypedStruct" or c.get("type_url") != want:
        raise ValueError("unexpected typed config")
    try:
        msg = json_format.ParseDict(c.get("value", {}), local_rate_limit_pb2.LocalRateLimit())
    except json_format.ParseError as exc:
        raise ValueError(f"invalid LocalRateLimit: {exc}") from None
    if msg.HasField("token_bucket"):
        tb = msg.token_bucket
        interval_ns = tb.fill_interval.seconds * 10**9 + tb.fill_interval.nanos
        if tb.max_tokens < 1 or interval_ns < 50_000_000:
            raise ValueError("token bucket needs max_tokens >= 1 and fill_interval >= 50ms")


class EnvoyFilterSpec(Strict):
    workloadSelector: WorkloadSelector
    configPatches: list[ConfigPatch] = Field(min_length=1)


class EnvoyFilter(Resource):
    apiVersion: Literal["networking.istio.io/v1alpha3"]
    kind: Literal["EnvoyFilter"]
    spec: EnvoyFilterSpec


MODELS: dict[tuple[str, str], type[Resource]] = {
    (m.model_fields["apiVersion"].annotation.__args__[0], m.model_fields["kind"].annotation.__args__[0]): m
    for m in (VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, Sidecar, Telemetry,
              EnvoyFilter, ServiceEntry, Gateway, RequestAuthentication)
}
