"""The reference evaluator: a request in, the decision and the route out.

Deliberately simple and direct: it is the specification that faster or
more clever code (Z3 encodings, target configs) is tested against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..model.types import AuthRule, Cors, Match, Mesh, PathPattern, RouteRule, Service, Source
from . import admission, cors as cors_rules
from .egress import caller_source_matches, undeclared_host_passes
from .header_ops import apply_header_ops
from .hosts import host_matches
from .ingress import accepted_providers, validating_providers
from .patterns import header_matches, normalize_path, path_matches, query_matches
from .query import parse_query
from .rewrite import rewrite_for
from .tokens import locations_of, requirement_met, token_after_header_ops


@dataclass(frozen=True)
class Token:
    """An end-user token a request carries (in a location of the providers
    involved). provider: the provider whose validation it passes (signature,
    issuer, audience, times); None: a token no provider validates (expired,
    tampered, wrong issuer or audience, `alg: none`...). claims: its payload.
    Equal tokens have the same provider and the same claims."""

    provider: str | None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    key: str = field(default="", init=False, repr=False)  # the claims as canonical JSON: equality and hash

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", json.dumps(dict(self.claims), sort_keys=True, default=str))

    def __str__(self) -> str:
        if self.provider is None:
            return "jwt(invalid)"
        claims = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in self.claims.items())
        return f"jwt[{self.provider}{' ' + claims if claims else ''}]"


INVALID_TOKEN = Token(None)


@dataclass(frozen=True)
class Request:
    """source: the caller: a service name, an ingress name (a request an
    ingress forwards: its transport peer is the ingress), or None for a
    caller with no mesh identity.

    destination: a service; an ingress (a request from outside arriving at
    that ingress's listener: source None); an external service (egress,
    decided at the caller's sidecar); or any other string, taken as a host
    name no one declares (egress to an undeclared host: the mesh's `egress`
    stance decides). `egress.destination_for_host` maps a host to this name.

    path: the request target's path; a query after `?` in it is the query
    (else `query`, the raw query string without `?`). host: the Host /
    :authority (None: not modelled; an ingress takes it as one of its
    hosts). token: the end-user token it carries (None: none), at its
    provider's first token location (`Authorization: Bearer` by default)."""

    source: str | None
    destination: str
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    query: str = ""
    host: str | None = None
    token: Token | None = None

    @property
    def header_map(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers}

    @property
    def query_params(self) -> dict[str, list[str]]:
        """The decoded query parameters (semantics/query.py)."""
        if "?" in self.path:
            return parse_query(self.path)
        return parse_query("?" + self.query) if self.query else {}

    def __str__(self) -> str:
        src = self.source or "(no identity)"
        hs = "".join(f' {k}="{v}"' for k, v in self.headers)
        q = f"?{self.query}" if self.query and "?" not in self.path else ""
        extra = (f" host={self.host}" if self.host is not None else "") + (f" {self.token}" if self.token else "")
        return f"{src} -> {self.destination} {self.method} {self.path}{q}{hs}{extra}"


@dataclass
class Decision:
    allowed: bool
    rule: AuthRule | None  # None: the mesh's default stance (or the transport) decided
    # Why the request was refused before any rule saw it: the transport
    # (strict mTLS, no identity) or a path normalization refuses (400).
    refused: str | None = None
    # the HTTP status of a refusal that has one (400 path, 401 token, 404
    # host at an ingress, 403 undeclared host); None: the transport refused
    # (no answer) or no refusal
    status: int | None = None

    @property
    def effect(self) -> str:
        return "allow" if self.allowed else "deny"


@dataclass
class RouteResult:
    """kind: forward (weights over versions), redirect, respond, no_route
    (a route exists but no rule matched: 404), default (no route block:
    every version of the service, evenly), or rejected (the path is refused
    with 400 before routing).

    North-south kinds: preflight (a CORS preflight from an allowed origin,
    answered 200 by the sidecar with `cors_headers`: it reaches neither
    authorization nor the app); at an ingress: unknown_host (404) and
    bad_token (401), and forward's weights are over SERVICES; egress:
    external (to an external service, weights {its name: 100}), passthrough
    (an undeclared host under `egress allow_any`) and blackhole (an
    undeclared host under `registry_only`: refused, 403).

    cors_headers: the CORS headers the response gets (a forwarded request
    from an allowed origin), or the preflight answer's."""

    kind: str
    rule: RouteRule | None = None
    weights: dict[str, float] = field(default_factory=dict)
    mirror: tuple[str, float] | None = None
    status: int | None = None
    cors_headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """decision: the destination's authorization of `delivered` (egress: the
    caller's sidecar's; at an ingress: whether the ingress itself let the
    request through: host, path and token; `refused` says why not).
    delivered: the request as the destination receives it, after the
    route rule's rewrite and request header ops (None: as sent, normalized).
    forwarded: at an ingress, per service it forwards to, that service's
    outcome for the request the ingress sends (the ingress as the caller)."""

    request: Request
    decision: Decision
    route: RouteResult
    delivered: Request | None = None
    forwarded: dict[str, "Outcome"] = field(default_factory=dict)

    @property
    def status(self) -> int | None:
        """The status the caller gets when the mesh answers, not the app: a
        route's own answer (400, 401, 404, redirect, respond, a preflight's
        200, a blackhole's 403), a refusal's (400, 401), 403 for a denied request; None when
        the request reaches the app or the external (or the transport refuses
        it: no answer at all, `decision.refused` says why). At an ingress
        that forwards: the one service's answer (None with a split: see
        `forwarded`)."""
        if self.route.kind in _ANSWERED:
            return self.route.status
        if self.forwarded:
            return next(iter(self.forwarded.values())).status if len(self.forwarded) == 1 else None
        if self.decision.refused is not None:
            return self.decision.status
        return None if self.decision.allowed else 403


_ANSWERED = frozenset({"rejected", "bad_token", "unknown_host", "no_route", "redirect", "respond", "preflight",
                       "blackhole"})


def response_ops(out: Outcome, service: str | None = None) -> list:
    """The response header operations a forwarded request's response meets,
    in the order they apply: the destination's route rule's, then (through an
    ingress) the ingress rule's. service: which of an ingress's services (the
    only one when None)."""
    if out.forwarded:
        inner = out.forwarded[service] if service is not None else next(iter(out.forwarded.values()))
        own = out.route.rule.headers if out.route.rule is not None else []
        return response_ops(inner) + [o for o in own if o.side == "response"]
    rule = out.route.rule if out.route.kind == "forward" else None
    return [o for o in rule.headers if o.side == "response"] if rule is not None else []


def caller_response_headers(out: Outcome, app_headers: list[tuple[str, str]],
                            service: str | None = None) -> list[tuple[str, str]]:
    """The response headers the caller gets when the app answered with
    `app_headers`: the response operations (`response_ops`), then the CORS
    headers of an allowed origin (`RouteResult.cors_headers`: the ingress
    rule's when it has a policy, else the service's route's)."""
    headers = apply_header_ops(response_ops(out, service), "response", list(app_headers))
    cors = out.route.cors_headers
    if not cors and out.forwarded:
        inner = out.forwarded[service] if service is not None else next(iter(out.forwarded.values()))
        cors = inner.route.cors_headers
    return headers + list(cors)


def identity_visible(mesh: Mesh, req: Request) -> bool:
    """A caller's identity is known to the destination only over mTLS: the
    caller must be a mesh service and the destination must not have mTLS off."""
    return admission.identity_visible(mesh, req.source, req.destination)


def source_matches(mesh: Mesh, s: Source, req: Request) -> bool:
    if s.kind == "any":
        return True
    if s.kind == "service" and not admission.same_identity(mesh, s.name, req.source):
        return False  # the common case, decided without looking at the transport
    if not identity_visible(mesh, req):
        return False
    if s.kind == "authenticated":
        return True
    if s.kind == "service":  # a certificate names an identity, shared by all its services
        return admission.same_identity(mesh, s.name, req.source)
    if s.kind == "internet":
        return internet_matches(mesh, s, req)
    return admission.namespace_of(mesh, req.source) == s.name


def internet_matches(mesh: Mesh, s: Source, req: Request) -> bool:
    """`internet [with jwt ...]`: the transport peer is an ingress gateway
    (its identity is visible: checked by the caller), and with `jwt` the
    request's token was validated by the named provider (or, with none named,
    by one the sending ingress accepts) and passes every claim test."""
    if not admission.is_ingress_identity(mesh, req.source):
        return False
    if s.jwt is None:
        return True
    tok = req.token
    if tok is None or tok.provider is None:
        return False
    g = mesh.ingress_map.get(req.source)
    if g is not None:
        accepted = accepted_providers(mesh, g)
    else:  # a service sharing an ingress's identity: the ingresses with that identity
        key = admission.identity_of(mesh, req.source)
        accepted = tuple(p for g in mesh.ingress_map.values() if admission.ingress_key(g) == key
                         for p in accepted_providers(mesh, g))
    return requirement_met(s.jwt, tok.provider, tok.claims, set(accepted))


def _paths_match(paths: list[PathPattern], path: str) -> bool:
    return not paths or any(path_matches(p, path) for p in paths)


def auth_rule_matches(mesh: Mesh, r: AuthRule, req: Request) -> bool:
    return (
        r.target.name == req.destination
        and any(source_matches(mesh, s, req) for s in r.sources)
        and (not r.methods or req.method in r.methods)
        and _paths_match(r.paths, req.path)
    )


_RULE_INDEX: dict[int, tuple[Mesh, dict]] = {}


def _rules_for(mesh: Mesh, dest: str, source: str | None) -> list[AuthRule]:
    """The destination's rules that can match a caller, in file order: those
    with a source other than a service name, and those naming the caller's
    identity. Only a shortcut past rules that name other services (a busy
    destination has hundreds, one per caller); the decision is unchanged."""
    got = _RULE_INDEX.get(id(mesh))
    if got is None or got[0] is not mesh:
        _RULE_INDEX.clear()  # one mesh at a time is asked many questions
        got = _RULE_INDEX[id(mesh)] = (mesh, {})
    per_dest = got[1].get(dest)
    if per_dest is None:
        broad: list[AuthRule] = []
        named: dict[tuple, list[AuthRule]] = {}
        for r in mesh.rules_by_target.get(dest, []):
            keys = {admission.identity_of(mesh, s.name) for s in r.sources if s.kind == "service"}
            if any(s.kind != "service" for s in r.sources) or None in keys:
                broad.append(r)
            else:
                for k in keys:
                    named.setdefault(k, []).append(r)
        per_dest = got[1][dest] = (broad, named)
    broad, named = per_dest
    mine = named.get(admission.identity_of(mesh, source)) if source is not None else None
    if not mine:
        return broad
    return sorted(broad + mine, key=lambda r: r.index)


def normalized(req: Request) -> Request | None:
    """The request as rules see it (path normalized), or None when the path is
    refused with 400 (docs/semantics.md, "Paths are normalized first")."""
    path = normalize_path(req.path)
    if path is None:
        return None
    if path == req.path:
        return req
    raw_query = req.path.partition("?")[2] if "?" in req.path else req.query
    return replace(req, path=path, query=raw_query)


def authorize(mesh: Mesh, req: Request) -> Decision:
    """Transport admission first, then path normalization; then a token none
    of the destination's validating providers validates is refused (401,
    semantics/ingress.py); then any matching deny denies, else any matching
    allow allows, else the default stance. The deciding rule is the first
    matching one in file order. `req` is the request as the destination
    receives it (`Outcome.delivered` when a route rule rewrote it)."""
    why = admission.refusal(mesh, req.source, req.destination)
    if why is not None:
        return Decision(False, None, refused=why)
    norm = normalized(req)
    if norm is None:
        return Decision(False, None, refused="the path has an escaped slash or backslash (400)", status=400)
    req = norm
    if req.token is not None:
        validators = validating_providers(mesh, req.destination)
        if validators and req.token.provider not in validators:
            why = "the token is not valid for any provider the destination checks (401)"
            return Decision(False, None, refused=why, status=401)
    rules = _rules_for(mesh, req.destination, req.source)
    for r in rules:
        if r.effect == "deny" and auth_rule_matches(mesh, r, req):
            return Decision(False, r)
    for r in rules:
        if r.effect == "allow" and auth_rule_matches(mesh, r, req):
            return Decision(True, r)
    return Decision(mesh.settings.default == "allow", None)


def match_holds(m: Match, req: Request) -> bool:
    headers = req.header_map
    return (
        (not m.methods or req.method in m.methods)
        and _paths_match(m.paths, req.path)
        and all(header_matches(h, headers) for h in m.headers)
        and (not m.queries or _queries_hold(m, req))
        and (not m.sources or any(s.name == req.source for s in m.sources))
    )


def _queries_hold(m: Match, req: Request) -> bool:
    params = req.query_params
    return all(query_matches(q, params) for q in m.queries)


def default_weights(svc: Service | None) -> dict[str, float]:
    if svc is None or not svc.versions:
        return {}
    share = 100.0 / len(svc.versions)
    return {v.name: share for v in svc.versions}


def forward_weights(rule: RouteRule) -> dict[str, float]:
    dests = rule.action.destinations
    if len(dests) == 1 and dests[0].weight is None:
        return {dests[0].version.name: 100.0}
    out: dict[str, float] = {}
    for d in dests:
        out[d.version.name] = out.get(d.version.name, 0.0) + (d.weight or 0.0)
    return out


def route(mesh: Mesh, req: Request, cors: bool = True) -> RouteResult:
    """The first rule of the destination's route whose match holds (on the
    normalized path; a path refused with 400 is `rejected`). A CORS
    preflight from an origin the forwarding rule's policy allows
    (`Service.cors_for`) is answered by the caller's sidecar (`preflight`).
    cors False: CORS was already decided (by the ingress rule that sent the
    request, which has a policy of its own)."""
    norm = normalized(req)
    if norm is None:
        return RouteResult("rejected", status=400)
    req = norm
    svc = mesh.service(req.destination)
    r = mesh.route_map.get(req.destination)
    if r is None:
        got = RouteResult("default", weights=default_weights(svc))
        return with_cors(svc.cors if svc is not None and cors else None, req, got)
    for rule in r.rules:
        if match_holds(rule.match, req):
            a = rule.action
            if a.kind == "forward":
                mirror = (a.mirror.version.name, a.mirror.percent) if a.mirror else None
                got = RouteResult("forward", rule, forward_weights(rule), mirror)
                return with_cors((svc.cors_for(rule) if svc is not None else rule.cors) if cors else None, req, got)
            if a.kind == "redirect":
                return RouteResult("redirect", rule, status=a.status)
            return RouteResult("respond", rule, status=a.status)
    return RouteResult("no_route", status=404)


def with_cors(policy: Cors | None, req: Request, got: RouteResult) -> RouteResult:
    """A forwarded request under a CORS policy: a preflight from an allowed
    origin is answered 200 by the sidecar; an actual request from one gets
    the CORS response headers; other requests are untouched."""
    if policy is None:
        return got
    headers = req.header_map
    origin = headers.get("origin")
    if not cors_rules.origin_allowed(policy, origin):
        return got
    if cors_rules.is_preflight(req.method, headers):
        return RouteResult("preflight", got.rule, status=200,
                           cors_headers=tuple(cors_rules.preflight_headers(policy, origin)))
    return replace(got, cors_headers=tuple(cors_rules.response_headers(policy, origin)))


def delivered_request(mesh: Mesh, req: Request, rule: RouteRule | None, **changes) -> Request:
    """The request a forwarding rule sends on: the matched part of the path
    rewritten (semantics/rewrite.py), the host replaced, the rule's request
    header ops applied in written order (a token in a header they remove or
    overwrite goes with it: `token_after_header_ops`); `changes` (new
    source, destination) on top. `req` is the normalized request the rule
    matched."""
    if rule is not None and (rule.rewrite is not None or rule.headers):
        rw = rule.rewrite
        if rw is not None and rw.path is not None:
            pats = [(p.kind, p.value) for p in rule.match.paths]
            changes["path"] = rewrite_for(pats, _pattern_holds, req.path, rw.path)
        if rw is not None and rw.host is not None:
            changes["host"] = rw.host
        if rule.headers:
            changes["headers"] = tuple(apply_header_ops(rule.headers, "request", list(req.headers)))
            if req.token is not None and req.token.provider in mesh.provider_map:
                # the token sits at its provider's first location (Request's docstring)
                loc = locations_of(mesh.provider_map[req.token.provider])[0]
                fate = token_after_header_ops(loc, rule.headers)
                if fate != "kept":
                    changes["token"] = INVALID_TOKEN if fate == "replaced" else None
    return replace(req, **changes) if changes else req


def _pattern_holds(kind: str, value: str, path: str) -> bool:
    return path_matches(PathPattern.make(kind=kind, value=value), path)


def evaluate(mesh: Mesh, req: Request) -> Outcome:
    """A request's whole outcome (docs/semantics.md, "The order a request goes
    through"; "Ingress, tokens and egress" for ingresses and egress)."""
    if mesh.service(req.destination) is None:
        if req.destination in mesh.ingress_map:
            return evaluate_at_ingress(mesh, req)
        return evaluate_egress(mesh, req)
    return _evaluate_service(mesh, req)


def _evaluate_service(mesh: Mesh, req: Request, cors_decided: bool = False) -> Outcome:
    """East-west (and the second leg of an ingress request): routing at the
    caller's sidecar, then the destination's authorization of the request
    the route delivers (rewritten: the callee sees the new path)."""
    got = route(mesh, req, cors=not cors_decided)
    delivered = None
    if got.kind == "forward" and got.rule is not None and (got.rule.rewrite is not None or got.rule.headers):
        delivered = delivered_request(mesh, normalized(req), got.rule)
    return Outcome(req, authorize(mesh, delivered or req), got, delivered)


def evaluate_at_ingress(mesh: Mesh, req: Request) -> Outcome:
    """A request from outside at an ingress listener: the path is normalized
    (400), a token must be valid for a provider the ingress accepts (401; no
    token passes; checked before the host, as Istio's and Envoy's jwt_authn
    filter runs before routing), the host must be one of the ingress's
    `hosts` (404; none written: any host), then the first ingress rule
    whose match holds decides (none: 404): respond and redirect answer at
    the ingress; a forward sends
    the request, rewritten and with the rule's header ops, to each service of
    its weights, with the ingress as the caller and the token unchanged; each
    service then routes and authorizes it as for any caller (`forwarded`)."""
    g = mesh.ingress_map[req.destination]
    norm = normalized(req)
    if norm is None:
        return Outcome(req, Decision(False, None, refused="the path has an escaped slash or backslash (400)",
                                     status=400), RouteResult("rejected", status=400))
    if req.token is not None and req.token.provider not in accepted_providers(mesh, g):
        why = f"the token is not valid for any provider `{g.name}` accepts (401)"
        return Outcome(req, Decision(False, None, refused=why, status=401), RouteResult("bad_token", status=401))
    if req.host is not None and g.hosts and not any(host_matches(h, req.host) for h in g.hosts):
        return Outcome(req, Decision(False, None, refused=f"`{g.name}` does not serve host {req.host} (404)",
                                     status=404), RouteResult("unknown_host", status=404))
    passed = Decision(True, None)
    for rule in g.rules:
        if not match_holds(rule.match, norm):
            continue
        a = rule.action
        if a.kind != "forward":
            return Outcome(req, passed, RouteResult(a.kind, rule, status=a.status))
        mirror = (a.mirror.version.name, a.mirror.percent) if a.mirror else None
        got = with_cors(rule.cors, norm, RouteResult("forward", rule, forward_weights(rule), mirror))
        if got.kind == "preflight":
            return Outcome(req, passed, got)
        forwarded = {}
        for svc in got.weights:
            sent = delivered_request(mesh, norm, rule, source=g.name, destination=svc)
            forwarded[svc] = _evaluate_service(mesh, sent, cors_decided=rule.cors is not None)
        return Outcome(req, passed, got, forwarded=forwarded)
    return Outcome(req, passed, RouteResult("no_route", status=404))


def egress_source_matches(mesh: Mesh, s: Source, req: Request) -> bool:
    """A rule source on the way out (semantics/egress.py)."""
    return caller_source_matches(mesh, s, req.source)


def authorize_egress(mesh: Mesh, req: Request) -> Decision:
    """A request to an external service, at the caller's sidecar: the same
    algebra as east-west (any matching deny denies, else any matching allow
    allows, else the mesh's default stance) over the rules naming the
    external, on the normalized path."""
    norm = normalized(req)
    if norm is None:
        return Decision(False, None, refused="the path has an escaped slash or backslash (400)", status=400)
    rules = mesh.rules_by_target.get(req.destination, [])

    def hits(r: AuthRule) -> bool:
        return (any(egress_source_matches(mesh, s, norm) for s in r.sources)
                and (not r.methods or norm.method in r.methods) and _paths_match(r.paths, norm.path))

    for effect in ("deny", "allow"):
        for r in rules:
            if r.effect == effect and hits(r):
                return Decision(effect == "allow", r)
    return Decision(mesh.settings.default == "allow", None)


def evaluate_egress(mesh: Mesh, req: Request) -> Outcome:
    """A request from a workload to an external service (by name) or to an
    undeclared host (`destination` the host): the caller's sidecar decides.
    An external: `authorize_egress`, route `external`. An undeclared host:
    `egress allow_any` lets it through unchecked (`passthrough`),
    `registry_only` refuses it (`blackhole`, 403: the caller's sidecar
    answers, as it does for a mesh service it may not call)."""
    ext = mesh.external_map.get(req.destination)
    if ext is None:
        if undeclared_host_passes(mesh):
            return Outcome(req, Decision(True, None), RouteResult("passthrough"))
        return Outcome(req, Decision(False, None, refused=f"`{req.destination}` is neither a mesh service nor an "
                                     "external's host (egress registry_only)", status=403),
                       RouteResult("blackhole", status=403))
    decision = authorize_egress(mesh, req)
    if decision.refused is not None:
        return Outcome(req, decision, RouteResult("rejected", status=400))
    return Outcome(req, decision, RouteResult("external", weights={ext.name: 100.0}))
