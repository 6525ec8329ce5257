"""The reference evaluator: a request in, the decision and the route out.

Deliberately simple and direct: it is the specification that faster or
more clever code (Z3 encodings, target configs) is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.types import AuthRule, Match, Mesh, PathPattern, RouteRule, Service, Source
from . import admission
from .patterns import header_matches, normalize_path, path_matches


@dataclass(frozen=True)
class Request:
    """source: a service name, or None for a caller with no mesh identity."""

    source: str | None
    destination: str
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def header_map(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers}

    def __str__(self) -> str:
        src = self.source or "(no identity)"
        hs = "".join(f' {k}="{v}"' for k, v in self.headers)
        return f"{src} -> {self.destination} {self.method} {self.path}{hs}"


@dataclass
class Decision:
    allowed: bool
    rule: AuthRule | None  # None: the mesh's default stance (or the transport) decided
    # Why the request was refused before any rule saw it: the transport
    # (strict mTLS, no identity) or a path normalization refuses (400).
    refused: str | None = None

    @property
    def effect(self) -> str:
        return "allow" if self.allowed else "deny"


@dataclass
class RouteResult:
    """kind: forward (weights over versions), redirect, respond, no_route
    (a route exists but no rule matched: 404), default (no route block:
    every version of the service, evenly), or rejected (the path is refused
    with 400 before routing)."""

    kind: str
    rule: RouteRule | None = None
    weights: dict[str, float] = field(default_factory=dict)
    mirror: tuple[str, float] | None = None
    status: int | None = None


@dataclass
class Outcome:
    request: Request
    decision: Decision
    route: RouteResult


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
    caller = mesh.service(req.source)
    if s.kind == "service":  # a certificate names an identity, shared by all its services
        return admission.same_identity(mesh, s.name, req.source)
    return caller.namespace == s.name


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
    return req if path == req.path else Request(req.source, req.destination, req.method, path, req.headers)


def authorize(mesh: Mesh, req: Request) -> Decision:
    """Transport admission first, then path normalization; then any matching
    deny denies, else any matching allow allows, else the default stance. The
    deciding rule is the first matching one in file order."""
    why = admission.refusal(mesh, req.source, req.destination)
    if why is not None:
        return Decision(False, None, refused=why)
    norm = normalized(req)
    if norm is None:
        return Decision(False, None, refused="the path has an escaped slash or backslash (400)")
    req = norm
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
        and (not m.sources or any(s.name == req.source for s in m.sources))
    )


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


def route(mesh: Mesh, req: Request) -> RouteResult:
    """The first rule of the destination's route whose match holds (on the
    normalized path; a path refused with 400 is `rejected`)."""
    norm = normalized(req)
    if norm is None:
        return RouteResult("rejected", status=400)
    req = norm
    r = mesh.route_map.get(req.destination)
    if r is None:
        return RouteResult("default", weights=default_weights(mesh.service(req.destination)))
    for rule in r.rules:
        if match_holds(rule.match, req):
            a = rule.action
            if a.kind == "forward":
                mirror = (a.mirror.version.name, a.mirror.percent) if a.mirror else None
                return RouteResult("forward", rule, forward_weights(rule), mirror)
            if a.kind == "redirect":
                return RouteResult("redirect", rule, status=a.status)
            return RouteResult("respond", rule, status=a.status)
    return RouteResult("no_route", status=404)


def evaluate(mesh: Mesh, req: Request) -> Outcome:
    return Outcome(req, authorize(mesh, req), route(mesh, req))
