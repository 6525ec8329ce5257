"""The call graph's edges decided a destination at a time (verify.auth.allowed_callers).

allowed_callers must give exactly what asking may_call caller by caller
gives (same callers, same witnesses, same order), while skipping the members
of a caller class box arithmetic denies wholly: behind `allow *` plus
`deny authenticated` every service of the mesh is a candidate, and asking
each made the call graph quadratic in the mesh.
"""

from __future__ import annotations

import pytest

from meshpolicy.semantics import authorize
from meshpolicy.verify import auth, callgraph
from meshpolicy.verify.partition import partition

from .conftest import check_text
from .test_callgraph import brute_may_call


def _mesh(text: str):
    result = check_text(text)
    errors = [d for d in result.diagnostics if d.severity.value == "error"]
    assert not errors, errors
    return result.mesh


def _services(names: list[str], namespace: str, extra: str = "") -> str:
    return "".join(f"service {n} {{ port 80 http\n  namespace {namespace}\n{extra}}}\n" for n in names)


MIXED = ("mesh m { default deny }\n"
         + _services(["a1", "a2", "a3"], "na")
         + _services(["b1", "b2"], "nb")
         + _services(["x", "y", "z", "w"], "core")
         + "service gw { port 80 http\n  namespace core\n  mtls permissive }\n"
         + _services(["twin1", "twin2"], "core")
         + "service plain { port 80 http\n  namespace core\n  mtls off }\n"
         + """
allow * -> gw
deny authenticated -> gw
deny * -> gw /admin/**
allow namespace na -> x GET
deny a2 -> x
allow authenticated -> y GET /v1/**
deny namespace nb -> y
deny b1 -> y /v1/secret
allow b2 -> z POST
allow * -> plain GET
allow authenticated -> w
deny namespace na -> w
deny namespace nb -> w
deny x, y, z, gw, plain -> w
assert never a1 -> y /v2/**
""")


def _one_by_one(mesh, dest):
    known = mesh.service_map
    out = []
    for c in callgraph.candidate_callers(mesh, dest):
        if c == dest or (c is not None and c not in known):
            continue
        req = auth.may_call(mesh, c, dest)
        if req is not None:
            out.append((c, req))
    return out


@pytest.mark.parametrize("text", [MIXED], ids=["mixed"])
def test_same_answers_as_may_call_one_by_one(text):
    mesh = _mesh(text)
    for dest in mesh.service_map:
        got = auth.allowed_callers(mesh, dest, callgraph.candidate_callers(mesh, dest))
        assert got == _one_by_one(mesh, dest), dest
        for _caller, req in got:
            assert authorize(mesh, req).allowed


def test_graph_agrees_with_brute_force():
    mesh = _mesh(MIXED)
    exact = callgraph.build_graph(mesh)
    brute = callgraph.build_graph(mesh, brute_may_call)
    assert set(exact.edges) == set(brute.edges)
    # the wholly denied classes are really denied: only the unnamed services of core reach w
    assert {u for u, v in exact.edges if v == "gw"} == {callgraph.OUTSIDE}
    assert {u for u, v in exact.edges if v == "w"} == {"twin1", "twin2"}
    assert {u for u, v in exact.edges if v == "z"} == {"b2"}


def test_wholly_denied_classes_are_not_asked_member_by_member(monkeypatch):
    many = [f"s{i}" for i in range(60)]
    mesh = _mesh("mesh m {\n  default deny\n  mtls permissive\n}\n" + _services(["gw", *many], "core")
                 + "allow * -> gw\ndeny authenticated -> gw\nallow s1 -> s2 GET\n")
    asked: list = []
    real = auth.may_call

    def counting(mesh, source, dest, *args):
        asked.append((source, dest))
        return real(mesh, source, dest, *args)

    monkeypatch.setattr(auth, "may_call", counting)
    candidates = callgraph.candidate_callers(mesh, "gw")
    assert len(candidates) == 62  # None and every service
    got = auth.allowed_callers(mesh, "gw", candidates)
    assert [c for c, _ in got] == [None]
    # only the class that is not wholly denied is asked about (the callers without identity)
    assert asked == [(None, "gw")]
    keep, drop = partition(mesh, "gw").callers_not_denied()
    assert keep == {None} and drop == set()
