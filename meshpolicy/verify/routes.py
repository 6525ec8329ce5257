"""Routing findings: unreachable route rules (Istio's IST0130/IST0131 class,
for every match kind: exact, prefix, glob, regex, headers, methods, source),
versions no request reaches, and route rules whose traffic authorization
always denies. Boxes decide what they can exactly; Z3 decides the rest."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Mesh, RouteRule
from ..semantics.evaluate import forward_weights, match_holds
from .atoms import Undecided
from .partition import Partition
from .raw_paths import wholly_dead
from .witness import confirmed


def _what(rr: RouteRule, dest: str) -> str:
    return f"route rule {rr.index + 1} of `{dest}`"


def _ask(p: Partition, *assumptions):
    p.ensure()
    ans = p.check(*assumptions)
    if ans.status == "unknown":
        raise Undecided(f"the solver gave up on a route question ({ans.reason})")
    return ans


def live_rules(p: Partition) -> list[bool]:
    """live[i]: some request is routed by rule i (it is the first that matches)."""
    if getattr(p, "_live", None) is None:
        live = []
        for i, b in enumerate(p.route_box):
            if any(not x for x in b):
                live.append(False)
                continue
            rest = p.taken_rest(i)
            live.append(bool(rest) if rest is not None else _ask(p, p.taken[i]).sat)
        p._live = live
    return p._live


def findings(mesh: Mesh, p: Partition) -> list[Diagnostic]:
    if p.error or not p.has_route:
        return []
    out: list[Diagnostic] = []
    live = live_rules(p)
    for i, rr in enumerate(p.route_rules):
        if live[i]:
            continue
        b = p.route_box[i]
        earlier = [j for j in range(i) if p.meet(b, p.route_box[j]) is not None]
        if any(not x for x in b):
            if not wholly_dead(rr.match.paths):  # else MP505 says why
                out.append(diag("MP510", f"{_what(rr, p.dest)} matches no request", rr.span))
            continue
        req = p.pick(p.meet(b, p.route_box[earlier[0]]))
        wit = confirmed(mesh, req,
                        lambda o, rr=rr: match_holds(rr.match, o.request) and o.route.rule is not None
                        and o.route.rule.index < rr.index,
                        "an earlier rule takes a request the rule matches")
        labels = [Label(p.route_rules[j].span, "takes its requests first") for j in earlier]
        out.append(diag("MP510", f"{_what(rr, p.dest)} is unreachable: earlier rules take every request it matches, "
                        f"e.g. {req}", rr.span, labels=labels, witness=wit))
    out.extend(_ineffective_parts(mesh, p, live))
    out.extend(_versions(mesh, p, live))
    out.extend(_out_of_step(mesh, p, live))
    return out


def _alternatives(p: Partition, rr: RouteRule, box):
    """The parts of a rule's match a reader sees as alternatives: each listed
    path pattern and each listed method (when there are several), as boxes."""
    from .atoms import key_of

    m = rr.match
    if len(m.paths) > 1:
        for pat in m.paths:
            k = key_of(pat)
            atoms = frozenset(i for i, a in enumerate(p.paths) if k in a.members)
            yield f"path `{pat.value}`", pat.span, box[:2] + (box[2] & atoms,) + box[3:]
    if len(m.methods) > 1:
        for meth in m.methods:
            idx = frozenset(i for i, x in enumerate(p.methods) if x == meth)
            yield f"method {meth}", rr.span, (box[0], box[1] & idx) + box[2:]


def _ineffective_parts(mesh: Mesh, p: Partition, live: list[bool]) -> list[Diagnostic]:
    """MP506 (Istio's IST0131 "ineffective match"): one alternative of a live
    rule (a path or a method) is taken by earlier rules for every request, so
    that part of the match is never used; the rule itself still routes."""
    out = []
    for i, rr in enumerate(p.route_rules):
        if not live[i]:
            continue
        box = p.route_box[i]
        earlier = [j for j in range(i) if p.meet(box, p.route_box[j]) is not None]
        if not earlier:
            continue
        for what, span, sub in _alternatives(p, rr, box):
            if any(not x for x in sub):
                continue  # a pattern matching nothing here is MP505's or the atoms' business
            rest = p.minus([sub], [p.route_box[j] for j in earlier])
            if rest is None:
                dead = _ask(p, p.define("part", p.box_formula(sub)),
                            *[p.z3.Not(p.route_ind[j]) for j in earlier]).unsat
            else:
                dead = not rest
            if not dead:
                continue
            by = next(j for j in earlier if p.meet(sub, p.route_box[j]) is not None)
            req = p.pick(p.meet(sub, p.route_box[by]))
            wit = confirmed(mesh, req, lambda o, rr=rr: match_holds(rr.match, o.request) and o.route.rule is not None
                            and o.route.rule.index < rr.index, "an earlier rule takes the part's request")
            out.append(diag("MP506", f"{what} of {_what(rr, p.dest)} never takes a request: earlier rules take "
                            f"every request it matches, e.g. {req}; the rest of the rule still routes",
                            span or rr.span, labels=[Label(p.route_rules[j].span, "takes them first")
                                                     for j in earlier if p.meet(sub, p.route_box[j]) is not None],
                            witness=wit))
    return out


def _versions(mesh: Mesh, p: Partition, live: list[bool]) -> list[Diagnostic]:
    svc = mesh.service(p.dest)
    if svc is None or not svc.versions:
        return []
    fed: set[str] = set()
    named: dict[str, list[Label]] = {}
    for i, rr in enumerate(p.route_rules):
        a = rr.action
        if a.kind != "forward":
            continue
        weights = forward_weights(rr)
        for d in a.destinations:
            named.setdefault(d.version.name, []).append(
                Label(d.span, "weight 0%" if live[i] else "on an unreachable rule"))
        if a.mirror:
            named.setdefault(a.mirror.version.name, []).append(
                Label(a.mirror.span, "mirror 0%" if live[i] else "on an unreachable rule"))
        if live[i]:
            fed.update(v for v, w in weights.items() if w > 0)
            if a.mirror and a.mirror.percent > 0:
                fed.add(a.mirror.version.name)
    out = []
    for v in svc.versions:
        # versions no rule names at all are MP401's (a check); here: named, yet fed by no request
        if v.name in named and v.name not in fed:
            out.append(diag("MP511", f"version `{v.name}` of `{p.dest}` receives no traffic under any request",
                            v.span, labels=named[v.name]))
    return out


def _out_of_step(mesh: Mesh, p: Partition, live: list[bool]) -> list[Diagnostic]:
    """MP512 for every live forwarding rule whose requests are all denied. It
    does not depend on whether anything else about the destination is allowed:
    a service no allow rule names gets it for each such rule, exactly as one
    with an unrelated allow does (both route traffic nobody may send)."""
    out = []
    for i, rr in enumerate(p.route_rules):
        if not live[i] or rr.action.kind != "forward" or rr.index in p.rewrites:
            continue  # (a rewritten request is authorized on its new path: not encoded here)
        routed_here = lambda o, rr=rr: o.route.rule is not None and o.route.rule.index == rr.index  # noqa: E731
        taken = p.taken_rest(i)
        allowed = p.allowed_in(taken) if taken is not None else None
        some = p.some_allowed_in(taken) if taken is not None and allowed is None else None
        if allowed is not None or some is not None:
            if allowed or some:
                continue
            req = p.pick(taken[0])
        else:
            if not _ask(p, p.taken[i], p.allowed).unsat:
                continue
            req = _ask(p, p.taken[i]).request
        wit = confirmed(mesh, req, lambda o: routed_here(o) and not o.decision.allowed,
                        "the rule routes a request that authorization denies")
        out.append(diag("MP512", f"{_what(rr, p.dest)} only routes requests that authorization denies for "
                        f"every caller, e.g. {req}", rr.span, witness=wit))
    return out
