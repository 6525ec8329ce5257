"""User assertions about direct calls: `never A -> B`, `only S -> B`, `can A -> B`
(each optionally narrowed to methods and paths), proved over every request or
refuted with a witness. Transitive `never`, `amplification` and `latency` are
call-graph questions (callgraph.py)."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Assertion, Mesh
from ..semantics.evaluate import source_matches
from .atoms import Undecided, Unsupported, key_of, matches
from .internet import INTERNET, confirm
from .partition import partition
from .witness import confirmed


def _jwt_text(j) -> str:
    if j is None:
        return ""
    tests = " and ".join(f"{t.claim} {'=' if t.op == 'eq' else 'has'} \"{t.value}\"" for t in j.claims)
    return " with jwt" + (f" {j.provider.name}" if j.provider else "") + (f" {tests}" if tests else "")


def _who(s) -> str:
    if s.kind == "service":
        return s.name
    if s.kind == "namespace":
        return f"namespace {s.name}"
    if s.kind == "internet":
        return "internet" + _jwt_text(s.jwt)
    return "*" if s.kind == "any" else "authenticated"


def describe(a: Assertion) -> str:
    if a.kind == "only":
        who = ", ".join(_who(s) for s in a.sources)
    else:
        who = (a.source.name if a.source else "?") + _jwt_text(a.source_jwt)
    arrow = "~>" if a.transitive else "->"
    extra = " ".join([",".join(a.methods)] if a.methods else [])
    paths = ", ".join(p.value for p in a.paths)
    return " ".join(x for x in (f"assert {a.kind} {who} {arrow} {a.target.name}", extra, paths) if x)


def _in_scope(a: Assertion, req) -> bool:
    return (not a.methods or req.method in a.methods) and (not a.paths or any(matches(key_of(p), req.path) for p in a.paths))


def proved(a: Assertion, config: dict | None) -> list[Diagnostic]:
    from . import verbose

    return _proved(a, describe(a), verbose(config))


def check(mesh: Mesh, a: Assertion, config: dict | None = None, graph=None) -> list[Diagnostic]:
    from . import box_limit, timeout_ms, verbose as _verbose

    timeout, limit = timeout_ms(config), box_limit(config)
    verbose = _verbose(config)
    if a.kind == "never" and a.transitive:
        return _never_through(mesh, a, graph, timeout, limit, verbose)
    if a.kind in ("never", "can") and a.source is not None and a.source.name == INTERNET:
        return _from_internet(mesh, a, timeout, limit, verbose)
    p = partition(mesh, a.target.name, timeout, limit)
    text = describe(a)
    if p.error:
        return [diag("MP602", f"`{text}` was not proved: {p.error}", a.span)]
    if p.rewrites:
        return [diag("MP602", f"`{text}` was not proved: route rule {p.rewrites[0] + 1} of `{a.target.name}` "
                              "rewrites the path, and the verifier does not encode the path authorization then "
                              "sees", a.span)]
    if a.kind == "only":
        # internet callers are asked about the requests an ingress can forward (_only_internet)
        others = frozenset(range(len(p.sources))) - p.box(a.sources)[0] - p.internet_classes()
        ans = p.find(p.scope_box(others, a.methods, a.paths), allowed=True)
        if ans.unsat and mesh.ingresses:
            return _only_internet(mesh, a, timeout, limit, verbose)
    else:
        src = a.source.name if a.source else None
        scope = p.scope_box(p.source_index(src), a.methods, a.paths)
        ans = p.find(scope, allowed=True if a.kind == "never" else None)
    if ans.status == "unknown":
        return [diag("MP602", f"`{text}` was not proved: the solver gave up ({ans.reason})", a.span)]
    if a.kind == "can":
        if not ans.sat:
            return [diag("MP601", f"`{text}` is refuted: no request in its scope can be sent", a.span)]
        allowed = p.find(scope, allowed=True)
        if allowed.status == "unknown":
            return [diag("MP602", f"`{text}` was not proved: the solver gave up ({allowed.reason})", a.span)]
        if allowed.sat:
            req = p.request_for(src, allowed.request)
            confirmed(mesh, req, lambda o: o.decision.allowed and _in_scope(a, o.request), "the request is allowed")
            return _proved(a, text, verbose)
        req = p.request_for(src, ans.request)
        wit = confirmed(mesh, req, lambda o: not o.decision.allowed and _in_scope(a, o.request),
                        "the request in scope is denied")
        return [diag("MP601", f"`{text}` is refuted: every such request is denied, e.g. {req}", a.span,
                     labels=_deciding(mesh, req), witness=wit)]
    if ans.unsat:
        return _proved(a, text, verbose)
    req = ans.request if a.kind == "only" else p.request_for(src, ans.request)
    if a.kind == "only":
        claim = lambda o: o.decision.allowed and _in_scope(a, o.request) and not any(  # noqa: E731
            source_matches(mesh, s, o.request) for s in a.sources)
    else:
        claim = lambda o: o.decision.allowed and _in_scope(a, o.request)  # noqa: E731
    wit = confirmed(mesh, req, claim, "the counterexample request is allowed")
    return [diag("MP601", f"`{text}` is refuted: {req} is allowed", a.span,
                 labels=_deciding(mesh, req), witness=wit)]


def _never_through(mesh: Mesh, a: Assertion, graph, timeout: int, limit: int, verbose: bool) -> list[Diagnostic]:
    """`never A ~> B METHODS PATHS`: no service A reaches (A included) may send
    B a request in scope. Reachability comes from the call graph."""
    from .digraph import single_source_shortest_path

    text = describe(a)
    p = partition(mesh, a.target.name, timeout, limit)
    if p.error:
        return [diag("MP602", f"`{text}` was not proved: {p.error}", a.span)]
    src = a.source.name
    if src == INTERNET:
        # the direct hop: a request an ingress forwards to B, with such a token
        direct = _from_internet(mesh, a, timeout, limit, False)
        if direct:
            return direct
        hops = _internet_hops(mesh, a, graph, timeout, limit)
        if isinstance(hops, str):
            return [diag("MP602", f"`{text}` was not proved: {hops}", a.span)]
    else:
        hops = single_source_shortest_path(graph, src) if src in graph else {src: [src]}
    unknown = None
    for caller, path in sorted(hops.items(), key=lambda kv: (len(kv[1]), kv[0])):
        if mesh.service(caller) is None:
            continue
        ans = p.find(p.scope_box(p.source_index(caller), a.methods, a.paths), allowed=True)
        if ans.status == "unknown":
            unknown = ans.reason
        if not ans.sat:
            continue
        req = p.request_for(caller, ans.request)
        wit = confirmed(mesh, req, lambda o: o.decision.allowed and _in_scope(a, o.request),
                        "the last hop's request is allowed")
        wit["path"] = path + [a.target.name]
        return [diag("MP601", f"`{text}` is refuted: {' -> '.join(wit['path'])}, last hop {req}", a.span,
                     labels=_deciding(mesh, req), witness=wit)]
    if unknown:
        return [diag("MP602", f"`{text}` was not proved: the solver gave up ({unknown})", a.span)]
    return _proved(a, text, verbose)


def _arrivals_in_scope(mesh: Mesh, a: Assertion, timeout: int, limit: int):
    """(ingress request, token, outcome at the target, delivered request) for
    every class of internet request that reaches a.target within a's scope
    (the scope is on the path the target sees, after the ingress rewrite)."""
    from .internet import _route_rewrites, arrivals, sent_to

    _route_rewrites(mesh, a.target.name)
    for req, tok, at in arrivals(mesh, a.target.name, timeout, limit, extra_reqs=[a.source_jwt]):
        sent = sent_to(at)
        if _in_scope(a, sent):
            yield req, tok, at, sent


def sent_text(req) -> str:
    from .exposure import sent_text as text

    return text(req)


def _internet_witness(req, at) -> dict:
    """The witness of a request from the internet: the request at the
    destination (with the token's claims) and the request sent to the ingress."""
    from .witness import as_dict

    out = as_dict(at.delivered or at.request)
    out["sent"] = as_dict(req)
    return out


def _from_internet(mesh: Mesh, a: Assertion, timeout: int, limit: int, verbose: bool) -> list[Diagnostic]:
    """`never|can internet [with jwt ...] -> B [methods] [paths]`: over every
    request an ingress can forward to B, with every token class (and only
    tokens that meet the assertion's `with jwt`)."""
    from ..semantics.ingress import accepted_providers
    from .tokens import met

    text = describe(a)
    denied = None
    try:
        for req, tok, at, _sent in _arrivals_in_scope(mesh, a, timeout, limit):
            if not met(a.source_jwt, tok, accepted_providers(mesh, mesh.ingress_map[req.destination])):
                continue
            if at.decision.allowed:
                confirm(mesh, req, a.target.name, at)
                if a.kind == "can":
                    return _proved(a, text, verbose)
                return [diag("MP601", f"`{text}` is refuted: {sent_text(req)} reaches `{a.target.name}` as "
                                      f"{at.delivered or at.request}, and it is allowed", a.span,
                             labels=_deciding(mesh, at.delivered or at.request), witness=_internet_witness(req, at))]
            denied = denied or (req, at)
    except (Unsupported, Undecided) as exc:
        return [diag("MP602", f"`{text}` was not proved: {exc}", a.span)]
    if a.kind == "never":
        return _proved(a, text, verbose)
    if denied is None:
        return [diag("MP601", f"`{text}` is refuted: no ingress forwards such a request to `{a.target.name}`",
                     a.span)]
    req, at = denied
    confirm(mesh, req, a.target.name, at)
    return [diag("MP601", f"`{text}` is refuted: every such request is denied, e.g. {sent_text(req)}, which arrives as "
                          f"{at.delivered or at.request}", a.span,
                 labels=_deciding(mesh, at.delivered or at.request), witness=_internet_witness(req, at))]


def _only_internet(mesh: Mesh, a: Assertion, timeout: int, limit: int, verbose: bool) -> list[Diagnostic]:
    """The internet half of `only S -> B ...`: no request an ingress forwards
    to B in scope is allowed unless one of S admits it."""
    text = describe(a)
    try:
        for req, _tok, at, sent in _arrivals_in_scope(mesh, a, timeout, limit):
            if at.decision.allowed and not any(source_matches(mesh, s, sent) for s in a.sources):
                confirm(mesh, req, a.target.name, at)
                return [diag("MP601", f"`{text}` is refuted: {sent_text(req)} reaches `{a.target.name}` as {sent}, "
                                      "and it is allowed", a.span,
                             labels=_deciding(mesh, sent), witness=_internet_witness(req, at))]
    except (Unsupported, Undecided) as exc:
        return [diag("MP602", f"`{text}` was not proved: {exc}", a.span)]
    return _proved(a, text, verbose)


def _internet_hops(mesh: Mesh, a: Assertion, graph, timeout: int, limit: int):
    """Services the internet reaches (with a token meeting a.source_jwt on
    the first hop), each with a shortest path from `internet`; a string: why
    that could not be decided."""
    from ..semantics.ingress import accepted_providers
    from .digraph import single_source_shortest_path
    from .ingress import forwarded_to
    from .internet import _first_allowed
    from .tokens import met

    if a.source_jwt is None:
        return single_source_shortest_path(graph, INTERNET) if INTERNET in graph else {}
    out: dict[str, list[str]] = {}
    for svc in forwarded_to(mesh):
        try:
            got = _first_allowed(mesh, svc, timeout, limit, extra=[a.source_jwt],
                                 want=lambda r, tok: met(a.source_jwt, tok, accepted_providers(
                                     mesh, mesh.ingress_map[r.destination])))
        except (Unsupported, Undecided) as exc:
            return f"requests from the internet to `{svc}` were not encoded ({exc})"
        for ing in sorted(got):
            for n, path in single_source_shortest_path(graph, svc).items():
                cand = [INTERNET, ing] + path
                if n not in out or len(cand) < len(out[n]):
                    out[n] = cand
    return out


def _deciding(mesh: Mesh, req) -> list[Label]:
    from ..semantics.evaluate import authorize

    d = authorize(mesh, req)
    if d.rule is None:
        return []
    return [Label(d.rule.span, f"this rule {'allows' if d.allowed else 'denies'} it")]


def _proved(a: Assertion, text: str, verbose: bool) -> list[Diagnostic]:
    return [diag("MP603", f"`{text}` holds for every request", a.span)] if verbose else []
