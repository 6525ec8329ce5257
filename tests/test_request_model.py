"""The one request model (docs/semantics.md): transport admission, then path
normalization, then authorization and routing; `query`, `verify`, `diff`,
`graph`, assertions and the reference evaluator all follow it."""

from __future__ import annotations

import json

import pytest

from meshpolicy.semantics import Request, evaluate
from meshpolicy.semantics.admission import admits, same_identity
from meshpolicy.verify import run
from meshpolicy.verify.auth import may_call
from meshpolicy.verify.callgraph import OUTSIDE, build_graph

from .conftest import check_text, codes, run_meshc

STRICT = """
mesh m { trust_domain "t.example"; mtls MODE; default deny }
service orders { namespace shop; account orders; port 8080 http }
service web { namespace shop; account web; port 8080 http }
allow * -> orders GET
deny * -> orders /admin/**
assert only authenticated -> orders
"""


def mesh_of(text: str):
    result = check_text(text)
    assert result.ok, [(d.code, d.message) for d in result.diagnostics if d.is_error]
    return result.mesh


@pytest.mark.parametrize("mode, outside", [("strict", False), ("permissive", True), ("off", True)])
def test_admission_is_read_by_evaluator_graph_and_assertions(mode, outside):
    mesh = mesh_of(STRICT.replace("MODE", mode))
    assert admits(mesh, None, "orders") is outside
    assert evaluate(mesh, Request(None, "orders", "GET", "/x")).decision.allowed is outside
    assert (may_call(mesh, None, "orders") is not None) is outside
    assert build_graph(mesh).has_edge(OUTSIDE, "orders") is outside
    refuted = [d for d in run(mesh) if d.code == "MP601"]
    # `only authenticated`: a caller without identity refutes it only where it is admitted
    assert bool(refuted) is outside
    if mode == "permissive":
        assert refuted[0].witness["source"] is None


def test_refused_request_names_the_transport():
    mesh = mesh_of(STRICT.replace("MODE", "strict"))
    d = evaluate(mesh, Request(None, "orders", "GET", "/x")).decision
    assert not d.allowed and d.rule is None and "mTLS" in d.refused


@pytest.mark.parametrize("raw", ["//admin/users", "/static/../admin/users", "/%61dmin/users", "/./admin/users"])
def test_evaluator_normalizes_before_rules(raw):
    mesh = mesh_of(STRICT.replace("MODE", "strict"))
    assert not evaluate(mesh, Request("web", "orders", "GET", raw)).decision.allowed
    assert evaluate(mesh, Request("web", "orders", "GET", "/public/users")).decision.allowed


@pytest.mark.parametrize("raw", ["/a%2Fb", "/a%5cb", "/a\\b"])
def test_escaped_slash_is_refused_with_400(raw):
    mesh = mesh_of(STRICT.replace("MODE", "strict"))
    out = evaluate(mesh, Request("web", "orders", "GET", raw))
    assert not out.decision.allowed and out.decision.refused and out.route.kind == "rejected"
    assert out.route.status == 400


def test_query_normalizes_and_says_so(tmp_path):
    f = tmp_path / "m.mesh"
    f.write_text(STRICT.replace("MODE", "strict"))
    for raw in ("//admin/users", "/static/../admin/users", "/%61dmin/users"):
        r = run_meshc("query", str(f), f"web -> orders GET {raw}", "--format", "json")
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["decision"] == "deny" and got["path"] == {"raw": raw, "normalized": "/admin/users"}
        text = run_meshc("query", str(f), f"web -> orders GET {raw}").stdout
        assert "normalized to /admin/users" in text
    r = run_meshc("query", str(f), "web -> orders GET /a%2Fadmin")
    assert r.returncode == 0 and "400" in r.stdout and "REFUSED" in r.stdout
    r = run_meshc("query", str(f), "anonymous -> orders GET /x", "--format", "json")
    got = json.loads(r.stdout)
    assert got["decision"] == "deny" and "mTLS" in got["decided_by"]["refused"]


def test_diff_does_not_list_refused_outside_calls(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = tmp_path / "old" / "m.mesh", tmp_path / "new" / "m.mesh"
    old.write_text(STRICT.replace("MODE", "strict").replace("allow * -> orders GET\n", ""))
    new.write_text(STRICT.replace("MODE", "strict"))
    r = run_meshc("diff", str(old), str(new), "--format", "json")
    got = json.loads(r.stdout)
    assert all(e["source"] != OUTSIDE for e in got["edges_added"]), got["edges_added"]
    assert all(c["witness"]["source"] is not None for c in got["decisions"]), got["decisions"]
    assert any(e["source"] == "web" for e in got["edges_added"])


def test_graph_does_not_draw_refused_outside_calls(tmp_path):
    f = tmp_path / "m.mesh"
    f.write_text(STRICT.replace("MODE", "strict"))
    assert "outside" not in run_meshc("graph", str(f), "--format", "dot").stdout
    f.write_text(STRICT.replace("MODE", "permissive"))
    assert "outside" in run_meshc("graph", str(f), "--format", "dot").stdout


# ---- normalization in the verifier -----------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from meshpolicy.semantics.patterns import normalize_path  # noqa: E402
from meshpolicy.verify.atoms import NORMALIZED_PATH, is_normalized  # noqa: E402

_PIECES = st.sampled_from(["/", ".", "..", "a", ";", "%2e", "%2E", "%41", "%7e", "%7B", "%2F", "%5c", "%", "~",
                           "?", "#", "\\", "x.", "...", ";x"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_PIECES, max_size=8).map(lambda xs: "/" + "".join(xs)))
def test_path_universe_is_exactly_the_normalized_paths(s):
    import re2

    assert (re2.fullmatch(NORMALIZED_PATH, s) is not None) == is_normalized(s) == (normalize_path(s) == s), s


BASE = """
mesh m { trust_domain "t.example"; mtls strict; default deny }
service api { namespace a; account api; port 8080 http }
service web { namespace a; account web; port 8080 http }
allow web -> api
"""


@pytest.mark.parametrize("pattern", ["//admin/**", "/static/../admin/**", "exact \"/%61dmin\"", "/a/./b",
                                     "/admin/%2Fx", "prefix \"/a//\"", "/admin/..", "/x/..;y/admin"])
def test_raw_path_tricks_are_mp505_with_a_witness(pattern):
    diags = run(mesh_of(BASE + f"deny * -> api {pattern}\n"))
    [d] = [d for d in diags if d.code == "MP505"]
    assert "MP504" not in codes(diags)  # one report for a wholly dead rule
    assert d.witness["source"] == "web" and normalize_path(d.witness["path"]) == d.witness["normalized_path"]
    assert d.witness["normalized_path"] != d.witness["path"]


def test_partly_dead_rule_keeps_its_live_part():
    diags = run(mesh_of(BASE + "deny * -> api //admin/**, /admin/**\n"))
    assert codes(diags).count("MP505") == 1 and "this part of the rule" in next(
        d.message for d in diags if d.code == "MP505")
    assert not evaluate(mesh_of(BASE + "deny * -> api //admin/**, /admin/**\n"),
                        Request("web", "api", "GET", "//admin/users")).decision.allowed


@pytest.mark.parametrize("pattern", ["/admin/**", "prefix \"/a/.\"", "exact \"/a%20b\"", "/a/", "/**"])
def test_normal_spellings_are_not_mp505(pattern):
    assert "MP505" not in codes(run(mesh_of(BASE + f"deny * -> api {pattern}\n")))


def test_verifier_does_not_claim_raw_spellings_get_past_a_deny():
    """`never web -> api /admin/**` holds: `//admin/x` is `/admin/x` to every proxy."""
    text = BASE + "deny * -> api /admin/**\nassert never web -> api /admin/**\n"
    assert "MP601" not in codes(run(mesh_of(text)))
    text = BASE.replace("allow web -> api\n", "allow web -> api /**\ndeny web -> api /admin\n") + \
        "assert can web -> api /admin/**\n"
    diags = run(mesh_of(text))
    # every witness of the verifier is a normalized path
    assert all(normalize_path(d.witness["path"]) == d.witness["path"]
               for d in diags if d.witness and "path" in d.witness and d.code != "MP505")


# ---- north-south requests follow the same steps (issue 15) ----------------------

NS = """
mesh m { mtls MODE; default deny }
jwt auth { issuer "https://a.example/"; jwks_uri "https://a.example/jwks" }
service orders { namespace shop; account orders; port 8080 http }
ingress web { namespace edge; listen 8080 http; /** -> orders }
allow internet with jwt role = "admin" -> orders
allow * -> orders GET /public/**
"""


@pytest.mark.parametrize("mode", ["strict", "permissive", "off"])
def test_an_ingress_is_a_caller_with_identity(mode):
    from meshpolicy.semantics.evaluate import Token

    mesh = mesh_of(NS.replace("MODE", mode))
    admin = Token("auth", {"role": "admin"})
    assert admits(mesh, "web", "orders")  # the ingress presents a certificate, even under strict
    out = evaluate(mesh, Request(None, "web", "DELETE", "/x", token=admin)).forwarded["orders"]
    # with mTLS off no identity is visible: `internet` cannot match, only `*` can
    assert out.decision.allowed is (mode != "off")
    assert evaluate(mesh, Request(None, "web", "GET", "/public/a")).forwarded["orders"].decision.allowed
    # the ingress normalizes first, and the service sees the normalized path with the query kept
    got = evaluate(mesh, Request(None, "web", "GET", "/x/../public/a?x=1", token=admin)).forwarded["orders"]
    assert (got.request.path, got.request.query, got.request.token) == ("/public/a", "x=1", admin)


def test_normalizing_keeps_the_query_host_and_token():
    from meshpolicy.semantics.evaluate import Token, normalized

    tok = Token("auth", {"sub": "a"})
    req = Request("web", "orders", "GET", "//a/./b?q=1", host="h.example", token=tok)
    got = normalized(req)
    assert (got.path, got.query, got.host, got.token) == ("/a/b", "q=1", "h.example", tok)
    assert got.query_params == {"q": ["1"]}
    # the old five-field form is unchanged
    assert normalized(Request("a", "b", "GET", "/x")) == Request("a", "b", "GET", "/x")


def test_an_external_or_an_ingress_refuses_no_connection_for_want_of_a_certificate():
    """Egress is decided at the caller's sidecar and an ingress listener takes
    outside callers: transport admission does not refuse either (the call
    graph's egress edges and the evaluator agree with it)."""
    from meshpolicy.semantics.admission import admits

    from .conftest import check_text

    mesh = check_text("""
mesh m { trust_domain "t.example"; mtls strict }
service web { port 80 tcp }
external stripe { host "api.stripe.example"; port 80 http }
ingress edge { listen 8080 http; * -> web }
allow web -> stripe
allow internet -> web
""").mesh
    assert admits(mesh, "web", "stripe") and admits(mesh, None, "edge")
    assert not admits(mesh, None, "web") and not admits(mesh, "web", "nowhere")
