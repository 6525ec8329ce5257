"""Certifying routing findings: unreachable rules (MP510), unfed versions
(MP511), routes authorization always denies (MP512), ineffective parts of
rules (MP506) and path patterns no normalized path matches (MP505)."""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..model.types import RouteRule
from ..semantics.evaluate import authorize, evaluate, forward_weights, match_holds
from ..semantics.patterns import path_matches
from .certify_core import Answer, Certifier, absence, claim


# ---- routing ------------------------------------------------------------------------

def _taken(c: Certifier, dest: str, i: int, span, alone: bool = False) -> Answer:
    """A request route rule i takes (with `alone`: one it matches at all)."""
    sp = c.space(dest, span)
    if sp is None:
        return Answer("unknown")
    if alone:
        return c.ask(dest, ("matches", i), span, f"whether route rule {i + 1} of `{dest}` matches any request",
                     sp.route[i])
    return c.ask(dest, ("taken", i), span, f"whether route rule {i + 1} of `{dest}` takes any request", sp.taken(i))


def _route_of(c: Certifier, d: Diagnostic) -> tuple[str, RouteRule] | None:
    got = c.route_at.get(d.span)
    if got is None:
        c.not_certified(f"this {d.code} finding names no route rule the certifier knows", d.span)
    return got


def _routed_by(c: Certifier, i: int):
    return lambda q: (o := evaluate(c.mesh, q)).route.rule is not None and o.route.rule.index == i


@claim("MP510")
def _unreachable(c: Certifier, d: Diagnostic) -> None:
    got = _route_of(c, d)
    if got is None:
        return
    dest, rr = got
    i = rr.index
    ans = _taken(c, dest, i, d.span)
    if ans.sat:
        c.disagree("earlier rules take every request this route rule matches", "it takes one", d.span,
                   ans.request, _routed_by(c, i))
    sp = c.space(dest, d.span)
    if sp is None:
        return
    z3 = sp.z3
    labelled = [c.route_at[lab.span][1].index for lab in d.labels if lab.span in c.route_at]
    cover = c.ask(dest, ("route-labels", i, tuple(labelled)), d.span, "whether the labelled rules take its requests",
                  sp.route[i], z3.Not(z3.Or(*[sp.route[j] for j in labelled], z3.BoolVal(False))))
    if cover.sat:
        c.disagree("the rules in the labels take every request this route rule matches", "they miss one", d.span,
                   cover.request, lambda q: match_holds(rr.match, q) and not any(
                       match_holds(sp.route_rules[j].match, q) for j in labelled))
    c.check_witness(d, dest, lambda sp: sp.z3.And(sp.route[i], sp.z3.Or(*sp.route[:i], sp.z3.BoolVal(False))),
                    lambda q: match_holds(rr.match, q) and (o := evaluate(c.mesh, q)).route.rule is not None
                    and o.route.rule.index < i, "an earlier rule takes a request the rule matches")


def _feeds(rr: RouteRule, version: str) -> bool:
    a = rr.action
    if a.kind != "forward":
        return False
    mirrored = a.mirror is not None and a.mirror.version.name == version and a.mirror.percent > 0
    return forward_weights(rr).get(version, 0) > 0 or mirrored


def _named(rr: RouteRule, version: str) -> bool:
    a = rr.action
    return a.kind == "forward" and (any(x.version.name == version for x in a.destinations)
                                    or (a.mirror is not None and a.mirror.version.name == version))


@claim("MP511")
def _unfed(c: Certifier, d: Diagnostic) -> None:
    found = next(((s, v) for s in c.mesh.services for v in s.versions if v.span == d.span), None)
    if found is None:
        c.not_certified("this MP511 finding names no version the certifier knows", d.span)
        return
    svc, v = found
    for rr in c.mesh.route_map.get(svc.name).rules if svc.name in c.mesh.route_map else []:
        if _feeds(rr, v.name):
            ans = _taken(c, svc.name, rr.index, d.span)
            if ans.sat:
                c.disagree(f"version `{v.name}` receives no traffic", f"route rule {rr.index + 1} sends it some",
                           d.span, ans.request, _routed_by(c, rr.index))


def _taken_allowed(c: Certifier, dest: str, i: int, span) -> Answer:
    sp = c.space(dest, span)
    if sp is None:
        return Answer("unknown")
    return c.ask(dest, ("taken-allowed", i), span, f"whether route rule {i + 1} routes an allowed request",
                 sp.taken(i), sp.allowed)


@claim("MP512")
def _out_of_step(c: Certifier, d: Diagnostic) -> None:
    got = _route_of(c, d)
    if got is None:
        return
    dest, rr = got
    i = rr.index
    ans = _taken_allowed(c, dest, i, d.span)
    if ans.sat:
        c.disagree("authorization denies every request this route rule takes", "it allows one", d.span, ans.request,
                   lambda q: _routed_by(c, i)(q) and authorize(c.mesh, q).allowed)
    c.check_witness(d, dest, lambda sp: sp.z3.And(sp.taken(i), sp.z3.Not(sp.allowed)),
                    lambda q: _routed_by(c, i)(q) and not authorize(c.mesh, q).allowed,
                    "the rule routes a request that authorization denies")


@absence
def _routes_missed(c: Certifier) -> None:
    found = {(d.code, d.span) for d in c.found}
    for route in c.mesh.routes:
        dest = route.service.name
        svc = c.mesh.service(dest)
        if c.mesh.route_map.get(dest) is not route or svc is None or dest in c.unproved:
            continue
        live = [_taken(c, dest, rr.index, rr.span) for rr in route.rules]
        for rr, ans in zip(route.rules, live):
            if ans.unsat and ("MP510", rr.span) not in found and not (
                    wholly_unnormal(c, rr.match.paths) and _taken(c, dest, rr.index, rr.span, alone=True).unsat):
                c.disagree("nothing about this route rule", "no request reaches it (MP510)", rr.span)
        for v in svc.versions:
            named = any(_named(rr, v.name) for rr in route.rules)
            fed = [ans for rr, ans in zip(route.rules, live) if _feeds(rr, v.name)]
            if named and all(a.unsat for a in fed) and ("MP511", v.span) not in found:
                c.disagree(f"nothing about version `{v.name}`", "no request reaches it (MP511)", v.span)
        for rr, ans in zip(route.rules, live):
            if ans.sat and rr.action.kind == "forward" and ("MP512", rr.span) not in found:
                if _taken_allowed(c, dest, rr.index, rr.span).unsat:
                    c.disagree("nothing about this route rule", "authorization denies every request it takes "
                               "(MP512)", rr.span)


def _part_dead(c: Certifier, dest: str, i: int, span, part) -> bool:
    """Is this part of route rule i (a match formula) non-empty, yet taken by
    earlier rules for every request (MP506)?"""
    sp = c.space(dest, span)
    z3 = sp.z3
    some = c.ask(dest, ("part", i, str(part)), span, f"whether a part of route rule {i + 1} matches anything", part)
    if not some.sat:
        return False  # an empty part is MP505's or MP510's business
    rest = c.ask(dest, ("part-rest", i, str(part)), span, f"whether a part of route rule {i + 1} takes a request",
                 part, *[z3.Not(e) for e in sp.route[:i]])
    return rest.unsat


def _ineffective_parts(c: Certifier, dest: str, rr: RouteRule) -> None:
    """The MP506 findings of a live route rule are exactly its dead parts: each
    of its paths (when it lists several), each of its methods (likewise)."""
    key = ("MP506", dest, rr.index)
    if key in c.done:
        return
    c.done.add(key)
    sp = c.space(dest, rr.span)
    if sp is None or rr.index == 0 or not _taken(c, dest, rr.index, rr.span).sat:
        return
    m = rr.match
    expected: list = []
    if len(m.paths) > 1:
        expected += [p.span or rr.span for p in m.paths if _part_dead(c, dest, rr.index, rr.span,
                                                                     sp.match(rr, paths=[p]))]
    if len(m.methods) > 1:
        expected += [rr.span for meth in m.methods if _part_dead(c, dest, rr.index, rr.span,
                                                                 sp.match(rr, methods=[meth]))]
    spans = {rr.span, *(p.span for p in m.paths)}
    reported = [d.span for d in c.found if d.code == "MP506" and d.span in spans]
    for span in set(expected) | set(reported):
        want, got = expected.count(span), reported.count(span)
        if want != got:
            c.disagree(f"{got} part(s) of route rule {rr.index + 1} here never take a request (MP506)",
                       f"{want} do", span)


def _rule_at(c: Certifier, span) -> tuple[str, RouteRule] | None:
    if span in c.route_at:
        return c.route_at[span]
    got = c.pattern_at.get(span)
    if got is not None and isinstance(got[2], RouteRule):
        return got[0], got[2]
    return None


@claim("MP506")
def _ineffective(c: Certifier, d: Diagnostic) -> None:
    got = _rule_at(c, d.span)
    if got is None:
        c.not_certified("this MP506 finding names no route rule the certifier knows", d.span)
        return
    dest, rr = got
    _ineffective_parts(c, dest, rr)
    i = rr.index
    c.check_witness(d, dest, lambda sp: sp.z3.And(sp.route[i], sp.z3.Or(*sp.route[:i], sp.z3.BoolVal(False))),
                    lambda q: match_holds(rr.match, q) and (o := evaluate(c.mesh, q)).route.rule is not None
                    and o.route.rule.index < i, "an earlier rule takes a request of the rule")


@absence
def _ineffective_missed(c: Certifier) -> None:
    for route in c.mesh.routes:
        dest = route.service.name
        if c.mesh.route_map.get(dest) is not route or dest in c.unproved or c.mesh.service(dest) is None:
            continue
        for rr in route.rules:
            if len(rr.match.paths) > 1 or len(rr.match.methods) > 1:
                _ineffective_parts(c, dest, rr)


# ---- path spelling ------------------------------------------------------------------

def wholly_unnormal(c: Certifier, paths) -> bool:
    """Every path of the rule is reported MP505 (which then reports the rule
    instead of MP504/MP510, docs/verify.md)."""
    return bool(paths) and all(p.span in c.unnormal for p in paths)


def _matches_some_path(c: Certifier, dest: str, p, span) -> Answer:
    """Does pattern p match some path of the request space (the normalized
    paths)? The answer is the same for every destination: kept per pattern."""
    key = ("pattern", p.kind, p.value)
    if key not in c.pattern_answers:
        sp = c.space(dest, span)
        c.pattern_answers[key] = Answer("unknown") if sp is None else c.ask(
            dest, key, span, f"whether path `{p.value}` matches any normalized path", sp.pattern(p))
    return c.pattern_answers[key]


@claim("MP505")
def _never_normalized(c: Certifier, d: Diagnostic) -> None:
    from ..semantics.patterns import normalize_path

    got = c.pattern_at.get(d.span)
    if got is None:
        c.not_certified("this MP505 finding names no path pattern the certifier knows", d.span)
        return
    dest, p, _ = got
    ans = _matches_some_path(c, dest, p, d.span)
    if ans.sat:
        c.disagree(f"path `{p.value}` never matches a normalized path", "it matches one", d.span, ans.request,
                   lambda q: path_matches(p, q.path) and normalize_path(q.path) == q.path)
    w = d.witness or {}
    raw = w.get("path")
    if isinstance(raw, str):
        norm = normalize_path(raw)
        if norm != w.get("normalized_path") or (norm is not None and path_matches(p, norm)):
            c.disagree(f"MP505 with witness {raw}", f"normalization gives {norm!r}, which "
                       + ("the pattern matches" if norm is not None and path_matches(p, norm) else "the finding misstates"),
                       d.span)
