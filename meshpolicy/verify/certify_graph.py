"""Certifying the call graph (every edge and every missing edge), the findings
read off its paths (MP551-MP554) and the rate-limit findings (MP530-MP532)."""

from __future__ import annotations

from ..diagnostics import Diagnostic
from ..semantics.evaluate import authorize
from .certify_core import Certifier, absence, claim


# ---- the call graph -----------------------------------------------------------------

def _node(name: str | None) -> str:
    from .callgraph import OUTSIDE

    return OUTSIDE if name is None else name


@absence
def _graph_edges(c: Certifier) -> None:
    """Every edge A -> B of the verifier's call graph has an allowed request
    (its witness, checked both ways), and no allowed request from any other
    caller to B exists: the graph is exactly right, so what is computed from
    it (cycles, isolated services, amplification, latency) rests on it."""
    from .callgraph import OUTSIDE

    g = c.graph
    for dest in c.mesh.service_map:
        sp = c.space(dest)
        svc = c.mesh.service(dest)
        callers = list(g.predecessors(dest)) if dest in g else []
        for u in callers:
            req = g.edges[u, dest].get("witness")
            src = None if u == OUTSIDE else u
            if req is None or req.source != src or not authorize(c.mesh, req).allowed:
                c.disagree(f"`{u}` may call `{dest}`", f"its witness {req} is not an allowed request from it "
                           "(reference evaluator)", svc.span)
            elif sp is not None and sp.holds(sp.allowed, req) is False:
                c.disagree(f"`{u}` may call `{dest}`", f"the certifier's encoding denies its witness {req} "
                           "(the reference evaluator allows it)", svc.span)
        if dest in c.unproved or sp is None:
            continue  # edges into it are the best the verifier could find (MP520 says so)
        z3 = sp.z3
        others = [z3.Not(sp.caller_is(None if u == OUTSIDE else u)) for u in callers]
        ans = c.ask(dest, ("callers",), svc.span, f"whether the call graph has every caller of `{dest}`",
                    sp.allowed, z3.Not(sp.caller_is(dest)), *others)
        if ans.sat:
            c.disagree(f"the call graph's callers of `{dest}` are {', '.join(callers) or 'none'}",
                       f"`{_node(ans.request.source)}` may call it too", svc.span, ans.request,
                       lambda q: authorize(c.mesh, q).allowed)


def path_hops(c: Certifier, d: Diagnostic, last_hop_is_request: bool = False) -> None:
    """Each hop of the witness call path is an edge of the call graph (except
    the last when it is the witness request itself: `never A ~> B` with scope)."""
    path = (d.witness or {}).get("path")
    if not isinstance(path, list) or len(path) < 2:
        c.not_certified(f"this {d.code} finding carries no call path to certify", d.span)
        return
    hops = path[:-1] if last_hop_is_request else path
    for u, v in zip(hops, hops[1:]):
        if not c.graph.has_edge(u, v):
            c.disagree(f"the call path {' -> '.join(path)}", f"`{u}` -> `{v}` is not an edge of the call graph",
                       d.span)


@claim("MP551", "MP552", "MP553")
def _graph_path(c: Certifier, d: Diagnostic) -> None:
    """The path is made of certified edges; the cycle, the product of attempts
    or the sum of timeouts along it are computed by callgraph.py from the
    model's settings (one place), over a graph `_graph_edges` certifies."""
    path_hops(c, d)


@claim("MP554")
def _isolated(c: Certifier, d: Diagnostic) -> None:
    svc = c.service_at.get(d.span)
    if svc is None:
        c.not_certified("this MP554 finding names no service the certifier knows", d.span)
        return
    if c.graph.degree(svc.name):
        c.disagree(f"`{svc.name}` may call no service and no caller may call it", "the call graph has edges at it",
                   d.span)



# ---- rate limits ---------------------------------------------------------------------

def _limited(c: Certifier, sp, dest: str, sources) -> tuple[list[str | None], object]:
    """The callers limit `sources` stand for, without the destination itself
    (a names list, for reports, and the formula). A limit counts callers by
    who they are, as rules do (a service and the services sharing its identity,
    a namespace, any service, anyone)."""
    from ..semantics.admission import identity_mates

    z3 = sp.z3
    names: list[str | None] = []
    terms = []
    for s in sources:
        if s.kind == "service":
            got = [s.name, *identity_mates(c.mesh, s.name)] if c.mesh.service(s.name or "") else []
            names += got
            terms += [sp.caller_is(n) for n in got]
        elif s.kind == "namespace":
            got = [n for n, v in c.mesh.service_map.items() if v.namespace == s.name]
            names += got
            terms += [sp.caller_is(n) for n in got]
        else:
            names += list(c.mesh.service_map) + ([None] if s.kind == "any" else [])
            terms.append(z3.BoolVal(True) if s.kind == "any" else z3.Not(sp.caller_is(None)))
    names = [n for n in dict.fromkeys(names) if n != dest]
    return names, z3.And(z3.Or(*terms, z3.BoolVal(False)), z3.Not(sp.caller_is(dest)))


def _limit_expected(c: Certifier, lim) -> dict:
    """span -> the code (MP530/MP531) the limit should have there: the whole
    limit when no caller it names may call, else each named service that may not."""
    key = ("limit", lim.span)
    if key in c.limit_expected:
        return c.limit_expected[key]
    dest = lim.target.name
    sp = c.space(dest, lim.span)
    out: dict = {}
    c.limit_expected[key] = out
    if sp is None or dest in c.unproved:
        return out
    z3 = sp.z3
    default_allow = z3.BoolVal(c.mesh.settings.default == "allow")
    allow_any = z3.Or(default_allow, *[sp.auth[r.index] for r in sp.auth_rules if r.effect == "allow"])

    def dead(span, sources) -> str | None:
        names, who = _limited(c, sp, dest, sources)
        if not names:
            return None
        ans = c.ask(dest, ("limit-allowed", span), span, "whether a limited caller may call", who, sp.allowed)
        if not ans.unsat:
            return None
        shadow = c.ask(dest, ("limit-shadowed", span), span, "whether deny rules shadow the limit",
                       who, sp.admitted, allow_any, sp.denied_by_rule)
        return "MP531" if shadow.sat else ("MP530" if shadow.unsat else None)

    whole = dead(lim.span, lim.sources)
    if whole is not None:
        out[lim.span] = whole
    elif _limited(c, sp, dest, lim.sources)[0]:
        for s in lim.sources:
            if s.kind == "service":
                got = dead(s.span, [s])
                if got is not None:
                    out[s.span] = got
    return out


def _limit_of(c: Certifier, span):
    return next((lim for lim in c.mesh.rate_limits if lim.span == span or any(s.span == span for s in lim.sources)),
                None)


@claim("MP530", "MP531")
def _dead_limit(c: Certifier, d: Diagnostic) -> None:
    lim = _limit_of(c, d.span)
    if lim is None:
        c.not_certified(f"this {d.code} finding names no rate limit the certifier knows", d.span)
        return
    if any(s.kind == "internet" for s in lim.sources):
        c.not_certified(f"this {d.code} finding is about requests from the internet, which the certifier does "
                        "not encode", d.span)
        return
    if c.space(lim.target.name, d.span) is None:
        return  # the destination was not encoded: MP591 says so once
    want = _limit_expected(c, lim).get(d.span)
    if want != d.code:
        c.disagree(f"{d.code} here", f"the limit's callers may call `{lim.target.name}`" if want is None
                   else f"the finding is {want}", d.span)
    dest = lim.target.name
    if d.code == "MP531" and c.space(dest, d.span) is not None:
        c.check_witness(d, dest, lambda sp: sp.z3.And(sp.admitted, sp.denied_by_rule),
                        lambda q: (o := authorize(c.mesh, q)).rule is not None and o.rule.effect == "deny",
                        "a deny rule decides the limited request")
    elif d.code == "MP530":
        c.check_witness(d, dest, lambda sp: sp.z3.Not(sp.allowed), lambda q: not authorize(c.mesh, q).allowed,
                        "the limited caller's request is denied")


@claim("MP532")
def _retries_eat_limit(c: Certifier, d: Diagnostic) -> None:
    """The attempts per request are callgraph.py's arithmetic over the model's
    retries (one place); the path they multiply along must be certified edges."""
    path_hops(c, d)


@absence
def _limits_missed(c: Certifier) -> None:
    reported = {(d.code, d.span) for d in c.found if d.code in ("MP530", "MP531")}
    for lim in c.mesh.rate_limits:
        if c.mesh.service(lim.target.name) is None or any(s.kind == "internet" for s in lim.sources):
            continue  # (internet callers are not encoded: their findings are MP591)
        for span, code in _limit_expected(c, lim).items():
            if (code, span) not in reported and not any(sp == span for _, sp in reported):
                c.disagree("nothing about this rate limit", f"no caller it names may call `{lim.target.name}` "
                           f"({code})", span)
