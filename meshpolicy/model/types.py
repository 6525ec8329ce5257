"""The typed model: what the policy means, with spans kept for diagnostics.

Values are plain and normalised (durations in milliseconds, percentages as
floats 0-100); `span` is where the element was written and `spans` maps a
field name to where that field's value was written. Every later stage
(checks, verifier, lowering) reads only this model.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal, NamedTuple, Union

from pydantic import BaseModel, ConfigDict, Field, SkipValidation

from ..span import Span

SpanT = Annotated[Span, SkipValidation]
NO_SPAN = Span("", 0, 0, 0, 0, 0, 0)

MtlsMode = Literal["strict", "permissive", "off"]
Effect = Literal["allow", "deny"]
Protocol = Literal["http", "http2", "grpc", "tcp"]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
NON_IDEMPOTENT_METHODS = ("POST", "PATCH")
RETRY_CONDITIONS = (
    "5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx",
    "refused-stream", "retriable-status-codes", "unavailable", "cancelled",
    "deadline-exceeded", "resource-exhausted", "internal",
)


# Building an instance: the builder's values already have the grammar's types,
# so `make` fills in defaults and sets the fields without validating them.
# Validation (and pydantic's schema build, a fifth of a cold `meshc` run) only
# happens where a model is validated on purpose: the tests validate every
# built model of the examples and of generated programs. Each class gets its
# own `make(**fields)`, generated from its fields as dataclasses generate `__init__`:
# a missing or unknown field is a TypeError, as in any Python call, and it
# runs at a third of the cost of a generic loop over the fields.
_UNSET = object()


def _compile_make(cls: type[BaseModel]):
    ns = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls, "_UNSET": _UNSET}
    params, body, names = [], [], []
    for i, (name, f) in enumerate(cls.model_fields.items()):
        names.append(name)
        if f.is_required():
            params.append(name)
            body.append(f"    fs.add({name!r})")
            continue
        params.append(f"{name}=_UNSET")
        if f.default_factory is not None:
            ns[f"_f{i}"] = f.default_factory
            fallback = f"_f{i}()"
        else:
            ns[f"_d{i}"] = f.default
            fallback = f"_d{i}"
        body.append(f"    if {name} is _UNSET:\n        {name} = {fallback}\n    else:\n        fs.add({name!r})")
    fields = ", ".join(f"{n!r}: {n}" for n in names)
    src = (f"def make(*, {', '.join(params)}):\n    fs = set()\n" + "\n".join(body) +
           f"\n    o = _new(cls)\n    _set(o, '__dict__', {{{fields}}})\n"
           "    _set(o, '__pydantic_fields_set__', fs)\n    _set(o, '__pydantic_extra__', None)\n"
           "    _set(o, '__pydantic_private__', None)\n    return o\n")
    exec(compile(src, f"<make {cls.__name__}>", "exec"), ns)
    make = ns["make"]
    make.__qualname__ = f"{cls.__name__}.make"
    return make


def _install_make(cls: type[BaseModel]) -> None:
    type.__setattr__(cls, "make", staticmethod(_compile_make(cls)))


class Node(BaseModel):
    # defer_build: the schema is built on the first validation, which a plain
    # `meshc` run never does (see `make`).
    model_config = ConfigDict(extra="forbid", ignored_types=(cached_property,), defer_build=True)
    span: SpanT = NO_SPAN
    spans: dict[str, SpanT] = Field(default_factory=dict)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _install_make(cls)  # every subclass gets a `make` of its own fields

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


class Port(Node):
    number: int
    protocol: Protocol


class Retry(Node):
    """attempts == 0 means retries are off (`retry off`)."""

    attempts: int
    per_try_ms: int | None = None
    on: list[str] = Field(default_factory=list)
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


class Match(Node):
    """All listed conditions must hold; within a list any one suffices; empty = any."""

    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)
    sources: list[Ref] = Field(default_factory=list)

    @property
    def is_catch_all(self) -> bool:
        return not (self.methods or self.paths or self.headers or self.sources)


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


Action = Annotated[Union[Forward, Redirect, DirectResponse], Field(discriminator="kind")]


class RouteRule(Node):
    index: int  # 0-based position in its route
    match: Match
    action: Action
    timeout_ms: int | None = None
    retry: Retry | None = None
    fault: Fault | None = None


class Route(Node):
    service: Ref
    rules: list[RouteRule] = Field(default_factory=list)


class Source(Node):
    """service: that service's identity; namespace: any workload in it;
    authenticated: any workload with a mesh identity; any: anyone, even
    callers without an identity."""

    kind: Literal["service", "namespace", "authenticated", "any"]
    name: str | None = None


class AuthRule(Node):
    index: int  # 0-based position among all auth rules, in file order
    effect: Effect
    sources: list[Source]
    target: Ref
    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)


class RateLimit(Node):
    sources: list[Source]
    target: Ref
    requests: int
    per: Literal["s", "m", "h"]
    burst: int | None = None

    @property
    def per_seconds(self) -> int:
        return {"s": 1, "m": 60, "h": 3600}[self.per]


class Assertion(Node):
    """never: source cannot reach target (directly, or through any path if
    transitive) for the given methods/paths; only: no one but `sources` may
    call target with them; can: source may call target with them;
    amplification / latency: along every path, worst case <= bound."""

    kind: Literal["never", "only", "can", "amplification", "latency"]
    source: Ref | None = None
    sources: list[Source] = Field(default_factory=list)
    target: Ref
    transitive: bool = False
    methods: list[str] = Field(default_factory=list)
    paths: list[PathPattern] = Field(default_factory=list)
    bound: int | None = None  # attempts for amplification, ms for latency


class Mesh(BaseModel):
    """A whole mesh: every file of one project, merged. Lists keep file order
    (and duplicates, which the checks report); lookups use the first."""

    model_config = ConfigDict(ignored_types=(cached_property,), defer_build=True)
    settings: MeshSettings = Field(default_factory=lambda: MeshSettings.make())

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _install_make(cls)
    mesh_blocks: list[MeshSettings] = Field(default_factory=list)
    services: list[Service] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    auth_rules: list[AuthRule] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    assertions: list[Assertion] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)

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


_install_make(Node)
_install_make(Mesh)
