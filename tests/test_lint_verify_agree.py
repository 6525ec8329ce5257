"""The lint (meshc check) and the verifier never contradict each other in one
run. Both read the request model of docs/semantics.md; this test runs them
together on generated meshes and fails on any finding of one that a finding
of the other denies, e.g. MP561 ("`*` callers without identity are refused
by strict mTLS") beside a call-graph edge, diff entry or assertion witness
that lets such a caller through."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings

from meshpolicy.semantics import Request, evaluate
from meshpolicy.semantics.admission import admits
from meshpolicy.semantics.patterns import normalize_path
from meshpolicy.verify import run
from meshpolicy.verify.callgraph import OUTSIDE, build_graph

from . import strategies as shared
from .conftest import check_text


def _request(w: dict) -> Request | None:
    if not isinstance(w, dict) or "destination" not in w or "method" not in w:
        return None
    if not isinstance(w["path"], str):  # a transitive `never`: `path` is the call path, the hop is its last request
        return None
    return Request(w["source"], w["destination"], w["method"], w["path"], tuple((w.get("headers") or {}).items()))


def contradictions(text: str) -> list[str]:
    result = check_text(text)
    if any(d.is_error for d in result.diagnostics):
        return []
    mesh = result.mesh
    lint = result.diagnostics
    found = run(mesh)
    graph = build_graph(mesh)
    out = []
    refused_outside = {d.witness["destination"] for d in found if d.code == "MP561" and d.witness}
    for dest in refused_outside:
        if graph.has_edge(OUTSIDE, dest):
            out.append(f"MP561 says callers without identity are refused by `{dest}`, the call graph has the edge")
    for d in found:
        w = d.witness
        req = _request(w) if w else None
        if req is None:
            continue
        # (MP561 names the pattern, `(a path matching ...)`, when no request path matches it: MP504 says so)
        if d.code != "MP505" and not req.path.startswith("(") and normalize_path(req.path) != req.path:
            out.append(f"{d.code} witness {req} is not a normalized path (MP505 says rules never see those)")
        if d.code == "MP601" and "is allowed" in d.message:
            if not admits(mesh, req.source, req.destination):
                out.append(f"MP601 refutes with {req}, which the transport refuses (MP561)")
            if not evaluate(mesh, req).decision.allowed:
                out.append(f"MP601 refutes with {req}, which the reference evaluator denies")
    uncallable = {d.span.line for d in lint if d.code == "MP402"}
    for svc in mesh.services:
        if svc.span.line in uncallable and graph.in_degree(svc.name):
            out.append(f"MP402 says nobody may call `{svc.name}`; the call graph has an edge into it")
    for u, v, data in graph.edges(data=True):
        req = data["witness"]
        if not admits(mesh, req.source, v) or not evaluate(mesh, req).decision.allowed:
            out.append(f"edge {u} -> {v} has witness {req}, which is not allowed")
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=shared.small_policies())
def test_lint_and_verifier_agree_on_small_policies(text):
    assert contradictions(text) == [], text


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(text=shared.mesh_programs())
def test_lint_and_verifier_agree_on_full_programs(text):
    result = check_text(text)
    assume(not any(d.is_error for d in result.diagnostics))
    assert contradictions(text) == [], text


def test_the_reported_case_mp561_beside_an_outside_edge_is_caught():
    """The issue's example: strict mTLS, `allow * -> orders`, an `only
    authenticated` assertion. Before the one request model the verifier let
    the caller without identity through here."""
    text = """
mesh m { trust_domain "t.example"; mtls strict; default deny }
service orders { namespace shop; port 8080 http }
service web { namespace shop; port 8080 http }
allow * -> orders
assert only authenticated -> orders
"""
    assert contradictions(text) == []
    assert "MP561" in {d.code for d in run(check_text(text).mesh)}
