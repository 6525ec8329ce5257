"""Certifying every assertion's verdict: refuted (MP601) exactly when a
counterexample exists, proved (MP603, or nothing without --verbose) otherwise."""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..model.types import Assertion
from ..semantics.evaluate import Request, authorize, source_matches
from ..semantics.patterns import path_matches
from .certify_core import Certifier, absence, claim
from .certify_graph import path_hops

# computed from the certified call graph by callgraph.py's arithmetic (one place)
GRAPH_ARITHMETIC = ("amplification", "latency")


# ---- assertions ---------------------------------------------------------------------

def _in_scope(a: Assertion, q: Request) -> bool:
    return (not a.methods or q.method in a.methods) and (not a.paths or any(path_matches(p, q.path) for p in a.paths))


def _reach(c: Certifier, start: str) -> set[str]:
    """The services `start` reaches in the certified graph, itself included."""
    seen, todo = {start}, [start]
    while todo:
        for v in c.graph.successors(todo.pop()):
            if v not in seen:
                seen.add(v)
                todo.append(v)
    return seen


def _verdict(c: Certifier, a: Assertion, d: Diagnostic | None) -> None:
    """Is the assertion refuted exactly when the verifier says so (`d` is its
    MP601, or None when it says proved)?"""
    dest = a.target.name
    if c.mesh.service(dest) is None or (a.source is not None and c.mesh.service(a.source.name) is None):
        return  # unknown names are check errors
    refuted = d is not None
    if a.kind in GRAPH_ARITHMETIC:
        if d is not None:
            path_hops(c, d)
        return  # a product or sum over certified edges (callgraph.py), not a request question
    if a.kind == "never" and a.transitive and not (a.methods or a.paths):
        src = a.source.name
        back = any(dest in _reach(c, v) for v in c.graph.successors(src)) if src in c.graph else False
        if back != refuted:
            c.disagree("this assertion is " + ("refuted" if refuted else "proved"),
                       f"the certified call graph says `{dest}` is {'' if back else 'not '}reachable from `{src}`",
                       a.span)
        if d is not None:
            path_hops(c, d)
        return
    sp = c.space(dest, a.span)
    if sp is None:
        return
    z3 = sp.z3
    scope = sp.in_scope(a.methods, a.paths)
    if a.kind == "only":
        who = z3.Not(z3.Or(*[sp.source(s) for s in a.sources], z3.BoolVal(False)))
        ans = c.ask(dest, ("assert", a.span), a.span, "the assertion", who, scope, sp.allowed)
        bad = ans.sat
        ref = lambda q: authorize(c.mesh, q).allowed and _in_scope(a, q) and not any(  # noqa: E731
            source_matches(c.mesh, s, q) for s in a.sources)
        formula = z3.And(who, scope, sp.allowed)
    elif a.kind == "never":
        callers = sorted(_reach(c, a.source.name) if a.transitive else {a.source.name})
        who = z3.Or(*[sp.caller_is(n) for n in callers])
        ans = c.ask(dest, ("assert", a.span), a.span, "the assertion", who, scope, sp.allowed)
        bad = ans.sat
        ref = lambda q: authorize(c.mesh, q).allowed and _in_scope(a, q) and q.source in callers  # noqa: E731
        formula = z3.And(who, scope, sp.allowed)
    elif a.kind == "can":
        who = sp.caller_is(a.source.name)
        ans = c.ask(dest, ("assert", a.span), a.span, "the assertion", who, scope, sp.allowed)
        bad = ans.unsat
        ref = lambda q: not authorize(c.mesh, q).allowed and _in_scope(a, q) and q.source == a.source.name  # noqa: E731
        formula = z3.And(who, scope, z3.Not(sp.allowed))
    else:
        c.not_certified(f"`{a.kind}` assertions are not certified", a.span)
        return
    if ans.status == "unknown":
        return
    if bad != refuted:
        said = "this assertion is " + ("refuted" if refuted else "proved")
        if a.kind == "can":
            c.disagree(said, "some request in its scope is allowed" if refuted else "every request in its scope is "
                       "denied", a.span, ans.request if refuted else None,
                       lambda q: authorize(c.mesh, q).allowed and _in_scope(a, q))
        else:
            c.disagree(said, "no counterexample exists" if refuted else "a counterexample exists", a.span,
                       ans.request, ref)
    if d is not None and d.witness and "method" in d.witness:
        c.check_witness(d, dest, lambda _sp: formula, ref, "the assertion fails")
    if d is not None and a.transitive:
        path_hops(c, d, last_hop_is_request=True)


@claim("MP601", "MP603")
def _assertion(c: Certifier, d: Diagnostic) -> None:
    a = c.assertion_at.get(d.span)
    if a is None:
        c.not_certified(f"this {d.code} finding names no assertion the certifier knows", d.span)
        return
    _verdict(c, a, d if d.code == "MP601" else None)


@absence
def _silent_assertions(c: Certifier) -> None:
    """Assertions with no finding were proved (MP603 shows only with --verbose)."""
    said = {d.span for d in c.found if d.code in ("MP601", "MP602", "MP603")}
    for a in c.mesh.assertions:
        if a.span not in said:
            _verdict(c, a, None)
