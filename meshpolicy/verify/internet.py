"""`internet` as a caller: requests that enter through an ingress gateway,
with or without an end-user token (docs/semantics.md, "Ingress, tokens and
egress"; docs/verify.md, "The internet as a caller").

At a service's sidecar such a request comes from the ingress workload (the
reference evaluator's `Request.source` is the ingress) and carries the token
the ingress let through (no token, or one an accepted provider validated).
Which requests can arrive at all is what the ingress rules forward
(verify/ingress.py); which tokens make a difference is what the `with jwt`
requirements in play test (verify/tokens.py). Every decision is the
reference evaluator's."""

from __future__ import annotations

from ..model.types import JwtRequirement, Mesh
from ..semantics.evaluate import Token
from ..semantics.ingress import accepted_providers

INTERNET = "internet"


def requirements_at(mesh: Mesh, dest: str, extra: list[JwtRequirement | None] = ()) -> list[JwtRequirement]:
    """The `with jwt` requirements that decide internet requests to dest: its
    rules' internet sources, its assertions' and `extra`."""
    out: list[JwtRequirement | None] = list(extra)
    for r in mesh.rules_by_target.get(dest, []):
        out.extend(s.jwt for s in r.sources if s.kind == "internet")
    for a in mesh.assertions:
        if a.target.name == dest:
            out.extend(s.jwt for s in a.sources if s.kind == "internet")
            if a.source is not None and a.source.name == INTERNET:
                out.append(a.source_jwt)
    for lim in mesh.rate_limits:
        if lim.target.name == dest:
            out.extend(s.jwt for s in lim.sources if s.kind == "internet")
    return [r for r in out if r is not None]


def classes_at(mesh: Mesh, dest: str, extra: list[JwtRequirement | None] = ()) -> list[tuple[str, Token | None]]:
    """(ingress, token) classes of internet callers of dest that its rules,
    assertions and limits cannot tell apart: per group of ingresses alike
    (namespace, account and accepted providers), no token and each token class."""
    from .tokens import token_classes

    reqs = requirements_at(mesh, dest, list(extra))
    out: list[tuple[str, Token | None]] = []
    seen: set = set()
    for g in mesh.ingress_map.values():
        accepted = accepted_providers(mesh, g)
        group = (g.namespace, g.account or g.name, accepted)
        if group in seen:
            continue
        seen.add(group)
        out.extend((g.name, tok) for tok in token_classes(accepted, reqs))
    return out


def is_internet(mesh: Mesh, source: str | None) -> bool:
    """Is a request's caller an ingress (a request from the internet)?"""
    return source is not None and source in mesh.ingress_map


# ---- requests from the internet that reach a service ----------------------------------------

def dest_keys(mesh: Mesh, dest: str, extra: list = ()) -> list:
    """The path patterns that decide a service's authorization (its rules'
    and its assertions' patterns, and `extra`)."""
    from .atoms import key_of

    keys = [key_of(p) for r in mesh.rules_by_target.get(dest, []) for p in r.paths]
    keys += [key_of(p) for a in mesh.assertions if a.target.name == dest for p in a.paths]
    return list(dict.fromkeys(keys + list(extra)))


def arrivals(mesh: Mesh, dest: str, timeout_ms: int, box_limit: int, extra_keys: list = (),
             extra_reqs: list = (), entry_keys: list = ()):
    """Every class of internet request that can arrive at dest: yields
    (ingress request, token, outcome at dest), one per (ingress rule class,
    token class). Exact: the classes cover every request an ingress can
    forward (verify/ingress.py) and every token (verify/tokens.py). The
    outcome is the reference evaluator's second leg (the request the rule
    delivers, routed and authorized at dest); the ingress's first-match
    scan is the encoding's, so a reported witness goes through `confirm`."""
    from .ingress import entries
    from .tokens import token_classes

    reqs = requirements_at(mesh, dest, list(extra_reqs))
    toks: dict[str, list] = {}
    for e in entries(mesh, dest, dest_keys(mesh, dest, list(extra_keys)), timeout_ms, box_limit, list(entry_keys)):
        if e.ingress not in toks:
            toks[e.ingress] = token_classes(accepted_providers(mesh, mesh.ingress_map[e.ingress]), reqs)
        for tok in toks[e.ingress]:
            req, at = forward(mesh, e, tok)
            if at is not None:
                yield req, tok, at


def forward(mesh: Mesh, e, tok):
    """(the request sent to the ingress, the outcome at e.dest) for an entry
    whose ingress rule is e.rule, as semantics.evaluate_at_ingress does after
    its scan: a CORS preflight the rule's policy answers goes no further
    (outcome None); else the rule's delivered request (rewrite, header ops,
    the token's fate) is routed and authorized at the service."""
    from ..semantics.evaluate import (RouteResult, _evaluate_service, delivered_request, forward_weights,
                                      normalized, with_cors)

    req = e.request(tok)
    norm = normalized(req)
    r = e.rule
    if with_cors(r.cors, norm, RouteResult("forward", r, forward_weights(r))).kind == "preflight":
        return req, None
    sent = delivered_request(mesh, norm, r, source=e.ingress, destination=e.dest)
    return req, _evaluate_service(mesh, sent, cors_decided=r.cors is not None)


def confirm(mesh: Mesh, req, dest: str, at) -> None:
    """A reported witness, through the reference evaluator's whole path (the
    ingress's scan of its rules included): it must reach dest with the same
    decision, else the encoding is wrong (an internal error, never a report)."""
    from ..semantics.evaluate import evaluate
    from .witness import WitnessMismatch

    got = evaluate(mesh, req).forwarded.get(dest)
    if got is None or got.decision.allowed != at.decision.allowed:
        raise WitnessMismatch(f"ingress request `{req}` does not reach `{dest}` "
                              f"{'allowed' if at.decision.allowed else 'denied'} in the reference evaluator")


def sent_to(at) -> "object":
    """The request as the destination's authorization sees it (after the ingress rewrite)."""
    return at.delivered or at.request


# ---- the call graph's north-south part ---------------------------------------------------------

def internet_edges(mesh: Mesh, g, timeout_ms: int, box_limit: int) -> None:
    """Add `internet`, each ingress and each external to the call graph:
    internet -> ingress (a request its listeners take), ingress -> service
    (some request it forwards, with some token, is allowed there), service
    -> external (some egress request is allowed at the caller's sidecar).
    Destinations whose internet arrivals cannot be encoded exactly are kept
    in `g.unproved` (service -> reason): no edge is drawn, and questions
    that need one are not proved."""
    from .atoms import Undecided, Unsupported
    from .ingress import forwarded_to

    unproved: dict[str, str] = getattr(g, "unproved", {})
    g.unproved = unproved
    if mesh.ingresses:
        g.add_node(INTERNET)
        for ing in mesh.ingress_map.values():
            g.add_node(ing.name)
        for dest, ingresses in forwarded_to(mesh).items():
            for ing in ingresses:
                g.add_node(ing)
            try:
                first = _first_allowed(mesh, dest, timeout_ms, box_limit)
            except (Unsupported, Undecided) as exc:
                unproved[dest] = str(exc)
                continue
            for ing, (req, at) in first.items():
                if not g.has_edge(INTERNET, ing):
                    g.add_edge(INTERNET, ing, witness=req)
                g.add_edge(ing, dest, witness=sent_to(at))
    for ext in mesh.external_map.values():
        g.add_node(ext.name)
        for caller, req in egress_callers(mesh, ext.name, timeout_ms).items():
            g.add_edge(caller, ext.name, witness=req)


def _first_allowed(mesh: Mesh, dest: str, timeout_ms: int, box_limit: int,
                   want=None, extra: list = ()) -> dict[str, tuple]:
    """Per ingress, the first internet request (as sent to it) allowed at dest
    (`want(request, token)`: only the requests it accepts; `extra`: more
    `with jwt` requirements to tell tokens apart by)."""
    _route_rewrites(mesh, dest)
    out: dict[str, tuple] = {}
    for req, tok, at in arrivals(mesh, dest, timeout_ms, box_limit, extra_reqs=list(extra)):
        if req.destination in out or (want is not None and not want(req, tok)):
            continue
        if at.decision.allowed:
            confirm(mesh, req, dest, at)
            out[req.destination] = (req, at)
    return out


def _route_rewrites(mesh: Mesh, dest: str) -> None:
    """The internet analysis follows an ingress rewrite exactly; a second
    rewrite by the service's own route is not encoded (Unsupported)."""
    from .atoms import Unsupported

    route = mesh.route_map.get(dest)
    if route is not None and any(r.rewrite is not None and r.rewrite.path is not None for r in route.rules):
        raise Unsupported(f"`{dest}`'s route rewrites paths after the ingress did")


def egress_callers(mesh: Mesh, ext: str, timeout_ms: int) -> dict[str, object]:
    """The workloads some egress request to `ext` is allowed from, each with
    one such request. Exact: the external's rules depend on the caller, the
    method and the path only, and one path per atom of their patterns stands
    for every path."""
    from ..model.types import HTTP_METHODS
    from ..semantics.evaluate import Request, evaluate
    from .atoms import key_of, split
    from .callgraph import candidate_callers

    rules = mesh.rules_by_target.get(ext, [])
    atoms = split(list(dict.fromkeys(key_of(p) for r in rules for p in r.paths)), "path", timeout_ms)
    out: dict[str, object] = {}
    for caller in candidate_callers(mesh, ext):
        if caller is None or mesh.service(caller) is None:
            continue  # a caller without a sidecar does not go out through the mesh
        for m in HTTP_METHODS:
            hit = next((r for a in atoms if (r := Request(caller, ext, m, a.witness)) is not None
                        and evaluate(mesh, r).decision.allowed), None)
            if hit is not None:
                out[caller] = hit
                break
    return out


def never_reaches(mesh: Mesh, a, g, config: dict | None):
    """`never internet [with jwt ...] ~> B`: no path from the internet, in
    through an ingress (with a token meeting the assertion's `with jwt`)
    and on along allowed calls, ends at B. MP601 with the path and each
    hop's request; MP602 when a destination's arrivals were not encoded and
    B is reachable from it; None when it holds."""
    from ..codes import diag
    from . import box_limit, timeout_ms
    from .assertions import describe
    from .atoms import Undecided, Unsupported
    from .callgraph import _path_witness
    from .digraph import descendants, shortest_path
    from .ingress import forwarded_to
    from .tokens import met

    dst = a.target.name
    text = describe(a)
    if dst not in g:
        return None  # unknown names are check errors
    if a.source_jwt is None:
        path = shortest_path(g, INTERNET, dst) if INTERNET in g else None
        firsts = None
    else:
        # first hops: ingress -> service with a token that meets the assertion's requirement
        firsts, path = {}, None
        for svc in forwarded_to(mesh):
            try:
                got = _first_allowed(mesh, svc, timeout_ms(config), box_limit(config),
                                     want=lambda req, tok: met(a.source_jwt, tok, accepted_providers(
                                         mesh, mesh.ingress_map[req.destination])), extra=[a.source_jwt])
            except (Unsupported, Undecided) as exc:
                g.unproved.setdefault(svc, str(exc))
                continue
            for ing, (req, at) in got.items():
                firsts[(ing, svc)] = (req, at)
        for (ing, svc), _ in sorted(firsts.items(), key=lambda kv: kv[0]):
            rest = [svc] if svc == dst else shortest_path(g, svc, dst)
            if rest is not None and (path is None or len(rest) + 2 < len(path)):
                path = [INTERNET, ing] + rest
    if path is not None:
        wit = _path_witness(g, path)
        if firsts is not None:  # the ingress hop of this token, not the graph's (any token)
            req, at = firsts[(path[1], path[2])]
            wit["requests"][:2] = [str(req), str(sent_to(at))]
        return diag("MP601", f"assertion fails: the internet can reach `{dst}` through " + " -> ".join(path),
                    a.span, witness=wit)
    blocked = [svc for svc in getattr(g, "unproved", {}) if svc == dst or dst in descendants(g, svc)]
    if blocked:
        why = g.unproved[blocked[0]]
        return diag("MP602", f"`{text}` was not proved: requests from the internet to `{blocked[0]}` were not "
                             f"encoded ({why})", a.span)
    return None
