"""The verifier against brute force: for generated small policies, every finding,
every assertion result and every may_call answer must agree with enumerating a
finite request space through the reference evaluator.

Policies come from two generators: the shared `tests/strategies.py`
`small_policies()` and a local one with overlapping path patterns of every
kind. The space covers every atom: all declared callers plus "no identity",
the methods the vocabularies use plus one they do not (PATCH stands for
every other method), every path atom's witness plus both vocabularies'
probe paths, and every header atom plus probe values. Both deciders are
checked: box algebra (the default) and Z3 alone (`box_limit = 0`).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshpolicy.semantics import Request, evaluate
from meshpolicy.semantics.evaluate import Outcome, auth_rule_matches, authorize, match_holds, source_matches
from meshpolicy.semantics.evaluate import route as route_of
from meshpolicy.verify import run
from meshpolicy.verify.auth import may_call
from meshpolicy.verify.partition import partition

from . import strategies as shared
from .conftest import check_text

SERVICES = {"a": "n1", "b": "n1", "c": "n2"}
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH"]
PATHS = ['/a', '/a/*', '/a/**', '/*/b', 'exact "/a/b"', 'prefix "/a"', 'prefix "/ab"',
         'regex "/a/[0-9]+"', 'regex "/(a|b)/.*"', 'regex "/a.*"', "/**"]
PROBE_PATHS = ["/", "/a", "/a/", "/a/b", "/a/1", "/a/12", "/ab", "/b", "/b/b", "/a/b/c", "/x/b", "/abc",
               "/a/x/b", "/b/"]
HEADER_TESTS = ['= "1"', 'prefix "1"', '~ "[0-9]+"', "present", "absent", '= "y"']
PROBE_VALUES = ["1", "12", "y", "", "x", "alice", "al", "bob", "yes"]
MY_CODES = {"MP501", "MP502", "MP503", "MP504", "MP506", "MP510", "MP511", "MP512", "MP520", "MP601", "MP602"}

names = st.sampled_from(sorted(SERVICES))


@st.composite
def sources(draw):
    kinds = draw(st.lists(st.sampled_from(["a", "b", "c", "namespace n1", "namespace n2", "authenticated", "*"]),
                          min_size=1, max_size=2, unique=True))
    return ", ".join(kinds)


@st.composite
def methods_paths(draw):
    parts = []
    ms = draw(st.lists(st.sampled_from(["GET", "POST"]), max_size=2, unique=True))
    if ms:
        parts.append(", ".join(ms))
    ps = draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True))
    if ps:
        parts.append(", ".join(ps))
    return " ".join(parts)


@st.composite
def route_rule(draw, versions):
    items = []
    ms = draw(st.lists(st.sampled_from(["GET", "POST"]), max_size=2, unique=True))
    if ms:
        items.append(", ".join(ms))
    for p in draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True)):
        items.append(p)
    for t in draw(st.lists(st.sampled_from(HEADER_TESTS), max_size=1)):
        items.append(f'header "x-h" {t}')
    fr = draw(st.lists(names, max_size=2, unique=True))
    if fr:
        items.append("from " + ", ".join(fr))
    match = " ".join(items) or "*"
    kind = draw(st.sampled_from(["one", "split", "mirror"]))
    if kind == "one" or len(versions) == 1:
        action = draw(st.sampled_from(versions))
    elif kind == "split":
        w = draw(st.sampled_from([0, 50, 100]))
        action = f"v1 {w}%, v2 {100 - w}%"
    else:
        action = "v1 mirror v2 " + draw(st.sampled_from(["0%", "10%"]))
    return f"  {match} -> {action}"


@st.composite
def small_policies(draw):
    out = [f"mesh m {{ default {draw(st.sampled_from(['deny', 'allow']))} }}"]
    routed = draw(st.lists(names, max_size=2, unique=True))
    for n, ns in SERVICES.items():
        mtls = draw(st.sampled_from(["strict", "permissive", "off"]))
        out.append(f"service {n} {{\n  namespace {ns}\n  port 80 http\n  mtls {mtls}\n  version v1\n  version v2\n}}")
    for n in routed:
        rules = draw(st.lists(route_rule(["v1", "v2"]), min_size=1, max_size=4))
        out.append(f"route {n} {{\n" + "\n".join(rules) + "\n}")
    for _ in range(draw(st.integers(1, 6))):
        eff = draw(st.sampled_from(["allow", "allow", "deny"]))
        out.append(f"{eff} {draw(sources())} -> {draw(names)} {draw(methods_paths())}".rstrip())
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(["never", "only", "can"]))
        src = draw(sources()) if kind == "only" else draw(names)
        out.append(f"assert {kind} {src} -> {draw(names)} {draw(methods_paths())}".rstrip())
    return "\n".join(out) + "\n"


# ---- the oracle -------------------------------------------------------------------

def request_space(mesh, dest, headers=True):
    p = partition(mesh, dest)
    paths = sorted({a.witness for a in p.paths} | set(PROBE_PATHS) | set(shared.PROBE_PATHS))
    header_names = p.header_names if headers else []
    values = {n: [None] + sorted({a.witness for a in p.header_atoms[n][1:]} | {"zz"}) for n in header_names}
    callers = [*mesh.service_map, None]
    for src, m, path in itertools.product(callers, METHODS, paths):
        for combo in itertools.product(*[values[n] for n in header_names]):
            hs = tuple((n, v) for n, v in zip(header_names, combo) if v is not None)
            yield Request(src, dest, m, path, hs)


def expected(mesh):
    """(code, line) for every finding and assertion result, by enumeration.
    Authorization ignores headers, so decisions are enumerated without them
    and routes with them."""
    found = set()
    calls = {}
    in_scope = {}
    for dest in mesh.service_map:
        decided = {}
        outcomes = []
        for q in request_space(mesh, dest, headers=False):
            decided[(q.source, q.method, q.path)] = d = authorize(mesh, q)
            outcomes.append(Outcome(q, d, None))
        rules = mesh.rules_by_target.get(dest, [])
        matched = {r.index: [o for o in outcomes if auth_rule_matches(mesh, r, o.request)] for r in rules}
        empty = {i for i, m in matched.items() if not m}
        dead = set()
        for r in rules:
            if r.index in empty:
                svc = mesh.service(dest)
                if not (r.effect == "allow" and mesh.mtls_of(svc) == "off" and all(s.kind != "any" for s in r.sources)):
                    found.add(("MP504", r.span.line))  # else MP562 (mtls.py) reports it
            elif r.effect == "allow":
                # what the transport refuses first (strict mTLS, no identity) is MP561's, not a deny rule's
                admitted = [o for o in matched[r.index] if o.decision.refused is None]
                denied = [o for o in admitted if not o.decision.allowed]
                if denied and len(denied) == len(admitted):
                    dead.add(r.index)
                    found.add(("MP501", r.span.line))
                elif denied:
                    found.add(("MP503", r.span.line))
        redundant = set()
        for r in reversed(rules):
            if r.index in empty or r.index in dead:
                continue
            others = [o for o in rules if o.effect == r.effect and o.index != r.index
                      and o.index not in redundant and o.index not in empty]
            if others and all(any(auth_rule_matches(mesh, o, q.request) for o in others) for q in matched[r.index]):
                redundant.add(r.index)
                found.add(("MP502", r.span.line))
        route = mesh.route_map.get(dest)
        if route:
            routed = [Outcome(q, decided[(q.source, q.method, q.path)], route_of(mesh, q))
                      for q in request_space(mesh, dest)]
            taken = {rr.index: [o for o in routed if o.route.rule is not None and o.route.rule.index == rr.index]
                     for rr in route.rules}
            fed, named = set(), {}
            for rr in route.rules:
                if not taken[rr.index]:
                    found.add(("MP510", rr.span.line))
                else:  # MP506: a listed path or method that this live rule never takes
                    alts = [(p.span.line, lambda q, p=p: _path_in(p, q.path)) for p in rr.match.paths] \
                        if len(rr.match.paths) > 1 else []
                    alts += [(rr.span.line, lambda q, m=m: q.method == m) for m in rr.match.methods] \
                        if len(rr.match.methods) > 1 else []
                    for line, holds in alts:
                        part = [o for o in routed if match_holds(rr.match, o.request) and holds(o.request)]
                        if part and not any(o.route.rule is not None and o.route.rule.index == rr.index
                                            for o in part):
                            found.add(("MP506", line))
                a = rr.action
                if a.kind != "forward":
                    continue
                for d in a.destinations:
                    named[d.version.name] = True
                if a.mirror:
                    named[a.mirror.version.name] = True
                if taken[rr.index]:
                    fed.update(v for v, w in evaluate(mesh, taken[rr.index][0].request).route.weights.items() if w > 0)
                    if a.mirror and a.mirror.percent > 0:
                        fed.add(a.mirror.version.name)
                    if not any(o.decision.allowed for o in taken[rr.index]):
                        found.add(("MP512", rr.span.line))
            for v in mesh.service(dest).versions:
                if v.name in named and v.name not in fed:
                    found.add(("MP511", v.span.line))
        for src in [*mesh.service_map, None]:
            calls[(src, dest)] = any(o.decision.allowed and o.request.source == src for o in outcomes)
        for a in mesh.assertions:
            if a.target.name != dest:
                continue
            scope = [o for o in outcomes if (not a.methods or o.request.method in a.methods)
                     and (not a.paths or any(_path_in(p, o.request.path) for p in a.paths))]
            in_scope[id(a)] = {o.request.source for o in scope if o.decision.allowed}
            if a.transitive:
                continue
            if a.kind == "never":
                bad = any(o.decision.allowed and o.request.source == a.source.name for o in scope)
            elif a.kind == "can":
                bad = not any(o.decision.allowed and o.request.source == a.source.name for o in scope)
            else:
                bad = any(o.decision.allowed and not any(source_matches(mesh, s, o.request) for s in a.sources)
                          for o in scope)
            if bad:
                found.add(("MP601", a.span.line))
    # transitive `never`: some service A reaches (A included; the call graph has
    # no self-edges) may send B an allowed request in scope
    for a in mesh.assertions:
        if a.kind == "never" and a.transitive:
            seen, todo = {a.source.name}, [a.source.name]
            while todo:
                u = todo.pop()
                for v in mesh.service_map:
                    if v != u and v not in seen and calls[(u, v)]:
                        seen.add(v)
                        todo.append(v)
            if seen & in_scope[id(a)]:
                found.add(("MP601", a.span.line))
    return found, calls


def _path_in(p, path):
    from meshpolicy.semantics import path_matches

    return path_matches(p, path)


@pytest.mark.parametrize("box_limit", [256, 0], ids=["boxes", "z3-only"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=small_policies())
def test_findings_agree_with_brute_force(box_limit, text):
    _agree(box_limit, text)


@pytest.mark.parametrize("box_limit", [256, 0], ids=["boxes", "z3-only"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=shared.small_policies())
def test_findings_agree_with_brute_force_on_shared_policies(box_limit, text):
    _agree(box_limit, text)


def _agree(box_limit, text):
    result = check_text(text)
    assume(not any(d.is_error for d in result.diagnostics))
    mesh = result.mesh
    # a transitive `never` from a service to itself is a call-graph convention, not ours
    assume(not any(a.transitive and a.source.name == a.target.name for a in mesh.assertions))
    diags = run(mesh, {"verify": {"box_limit": box_limit}})
    got = {(d.code, d.span.line) for d in diags if d.code in MY_CODES}
    want, calls = expected(mesh)
    assert not {c for c, _ in got} & {"MP520", "MP602"}, (text, got)
    assert got == want, f"verifier vs brute force differ\n{text}\nonly verifier: {got - want}\nonly brute force: {want - got}"
    for (src, dest), allowed in calls.items():
        req = may_call(mesh, src, dest, box_limit=box_limit)
        assert (req is not None) == allowed, (text, src, dest, req)
        if req is not None:
            assert req.source == src and evaluate(mesh, req).decision.allowed
