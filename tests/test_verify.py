"""The verifier core: atoms, findings (golden, one per Istio issue class),
assertions, the code fixtures and `meshc verify`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpolicy.semantics import Request, evaluate
from meshpolicy.verify import run
from meshpolicy.verify.atoms import Splitter, Undecided, Unsupported, matches, split
from meshpolicy.verify.auth import may_call
from meshpolicy.verify.witness import WitnessMismatch, confirmed

from .conftest import EXAMPLES, ROOT, check_text, codes, run_meshc

FIXTURES = ROOT / "tests" / "fixtures" / "codes"
MY_FIXTURES = sorted(p for p in FIXTURES.glob("MP*") if re.fullmatch(r"MP5[0-4]\d|MP60\d", p.name))


def verify(text: str, **cfg):
    result = check_text(text)
    assert result.ok, [(d.code, d.message) for d in result.diagnostics if d.is_error]
    return result.mesh, run(result.mesh, {"verify": cfg})


def by_code(diags, code):
    return [d for d in diags if d.code == code]


# ---- atoms ------------------------------------------------------------------------

PATTERNS = [("exact", "/a"), ("exact", "/a/b"), ("prefix", "/a"), ("prefix", "/a/"), ("glob", "/a/*"),
            ("glob", "/a/**"), ("glob", "/*/b"), ("glob", "/**/b"), ("regex", "/a/[0-9]+"),
            ("regex", "/(a|bc)*"), ("regex", "/a.?b"), ("regex", r"/\d{2,3}"), ("regex", "/[^a]*")]


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.sampled_from(PATTERNS), max_size=5, unique=True),
       probes=st.lists(st.text(alphabet="/ab0123", max_size=6).map(lambda s: "/" + s), max_size=30))
def test_atoms_cover_every_string_and_witnesses_are_inside(keys, probes):
    atoms = split(keys)
    vectors = {a.members for a in atoms}
    assert len(vectors) == len(atoms), "two atoms with the same membership"
    for a in atoms:
        assert a.members == frozenset(k for k in keys if matches(k, a.witness))
    for s in probes:
        assert frozenset(k for k in keys if matches(k, s)) in vectors, (keys, s)


@settings(max_examples=25, deadline=None)
@given(keys=st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3, unique=True))
def test_automaton_and_z3_agree_on_every_region(keys):
    """The two exact deciders (automata first, Z3's regex theory as fallback)
    must agree on emptiness of every combination they are asked about."""
    from meshpolicy.verify.atoms import _Region

    sp = Splitter("path", 5000)
    for mask in range(2 ** len(keys)):
        pos = tuple(k for i, k in enumerate(keys) if mask >> i & 1)
        neg = tuple(k for i, k in enumerate(keys) if not mask >> i & 1)
        r = _Region(pos, list(keys), len(keys), "")  # neg: every key split so far that is not in pos
        assert set(r.neg) == set(neg)
        auto, z3w = sp._solve(r), sp._solve_z3(r)
        assert (auto is None) == (z3w is None), (pos, neg, auto, z3w)


def test_regex_translation_follows_re2():
    # \d is ASCII in RE2; `.` never matches a newline; classes and counted repeats are exact
    atoms = split([("regex", r"/\d+"), ("regex", "/[a-c]{2}"), ("exact", "/ab")])
    ws = {a.members: a.witness for a in atoms}
    assert ws[frozenset({("regex", "/[a-c]{2}"), ("exact", "/ab")})] == "/ab"
    assert any(m == frozenset({("regex", "/[a-c]{2}")}) for m in ws)
    assert not any(("regex", r"/\d+") in m and len(m) > 1 for m in ws)


def test_unsupported_regex_is_reported_not_guessed():
    with pytest.raises(Unsupported):
        split([("regex", r"/a\b.*")])
    with pytest.raises(Unsupported):
        split([("regex", "(?i)/a")])


def test_too_many_atoms_is_undecided():
    from meshpolicy.verify import atoms as mod

    old = mod.MAX_ATOMS
    mod.MAX_ATOMS = 2
    try:
        with pytest.raises(Undecided):
            split([("prefix", "/a"), ("prefix", "/b"), ("prefix", "/c")])
    finally:
        mod.MAX_ATOMS = old


def test_witness_recheck_catches_a_wrong_claim():
    mesh, _ = verify("mesh m { default deny }\nservice a { port 80 http }\nservice b { port 80 http }\nallow a -> b\n")
    with pytest.raises(WitnessMismatch):
        confirmed(mesh, Request("a", "b", "GET", "/"), lambda o: not o.decision.allowed, "denied")


# ---- may_call ---------------------------------------------------------------------

def test_may_call_is_exact_through_deny_carve_outs():
    mesh, _ = verify("""
mesh m { default deny }
service a { port 80 http }
service b { port 80 http }
service c { port 80 http
  mtls off }
allow a -> b GET /x/**
deny * -> b /x/*, exact "/x/"
allow * -> c
allow a -> c POST
""")
    req = may_call(mesh, "a", "b")
    assert req is not None and evaluate(mesh, req).decision.allowed and req.path.count("/") >= 3
    assert may_call(mesh, "c", "b") is None
    assert may_call(mesh, None, "b") is None
    assert may_call(mesh, None, "c") is not None  # `*` admits callers without identity


@pytest.mark.parametrize("box_limit", [256, 0], ids=["boxes", "z3-only"])
def test_find_answers_for_allowed_denied_and_empty_scopes(box_limit):
    from meshpolicy.verify.partition import Partition

    mesh, _ = verify("""
mesh m { default deny }
service a { port 80 http }
service b { port 80 http }
allow a -> b GET /x/**
""")
    p = Partition(mesh, "b", box_limit=box_limit)
    a_only = p.scope_box(p.source_index("a"))
    allowed, denied = p.find(a_only, allowed=True), p.find(a_only, allowed=False)
    assert allowed.sat and evaluate(mesh, p.request_for("a", allowed.request)).decision.allowed
    assert denied.sat and not evaluate(mesh, p.request_for("a", denied.request)).decision.allowed
    assert p.find(p.scope_box(p.source_index(None)), allowed=True).unsat  # no identity: never allowed
    empty = p.scope_box(frozenset())
    assert all(p.find(empty, allowed=x).unsat for x in (True, False, None))


# ---- golden findings: one per Istio issue class -------------------------------------

BASE = """
mesh m { trust_domain "example.org" }
service web { namespace shop
  port 8080 http }
service api { namespace shop
  port 8080 http
  version v1
  version v2 }
"""


def test_deny_shadowing_an_allow_is_dead():
    _, diags = verify(BASE + "allow web -> api GET /orders/*\ndeny * -> api /orders/**\n")
    [d] = by_code(diags, "MP501")
    assert d.span.line == BASE.count("\n") + 1
    assert [lab.span.line for lab in d.labels] == [BASE.count("\n") + 2]
    w = d.witness
    assert set(w) >= {"request", "source", "destination", "method", "path", "headers"}
    assert not evaluate(_mesh(BASE + "allow web -> api GET /orders/*\ndeny * -> api /orders/**\n"),
                        Request(w["source"], w["destination"], w["method"], w["path"])).decision.allowed


def _mesh(text):
    return check_text(text).mesh


def test_allow_nothing_policy_denies_everything():
    text = BASE.replace("port 8080 http\n  version v1", "port 8080 http\n  mtls off\n  version v1") + \
        "allow web -> api\nassert can web -> api GET /\n"
    _, diags = verify(text)
    # mtls.py says why the rule cannot match (MP562); the verifier proves the consequence
    assert "MP562" in codes(diags) and "MP601" in codes(diags) and "MP504" not in codes(diags)
    _, diags = verify(BASE + 'allow web -> api regex "orders/.*"\ndeny web -> api DELETE\n')
    assert [d.span.line for d in by_code(diags, "MP504")] == [BASE.count("\n") + 1]


def test_partial_overlap_is_info_with_a_deny_witness():
    _, diags = verify(BASE + "allow web -> api\ndeny * -> api /admin/**\n")
    [d] = by_code(diags, "MP503")
    assert d.severity.value == "info" and d.witness["path"].startswith("/admin/")


def test_redundant_rule_reports_the_later_copy():
    _, diags = verify(BASE + "allow web -> api GET\nallow web -> api GET\n")
    [d] = by_code(diags, "MP502")
    assert d.span.line == BASE.count("\n") + 2


def test_conflicting_route_rules_for_one_host():
    # a catch-all above a specific rule (IST0130), and regex/header/source kinds
    _, diags = verify(BASE + """route api {
  from web                          -> v1
  header "x-user" ~ "a.*"           -> v1
  header "x-user" prefix "ab"       -> v2
  regex "/v[0-9]+/.*"               -> v1
  GET /v1/*                         -> v2
  *                                 -> v1
  DELETE                            -> v1
}
allow web -> api
""")
    dead = sorted(d.span.line for d in by_code(diags, "MP510"))
    first = BASE.count("\n") + 2
    assert dead == [first + 2, first + 4, first + 6]
    for d in by_code(diags, "MP510"):
        assert d.labels and d.witness


def test_two_route_blocks_for_one_host_stop_verify():
    result = check_text(BASE + "route api {\n  * -> v1\n}\nroute api {\n  * -> v2\n}\nallow web -> api\n")
    assert "MP103" in codes(result.diagnostics)


def test_version_without_traffic():
    _, diags = verify(BASE + "route api {\n  * -> v1 100%, v2 0%\n}\nallow web -> api\n")
    [d] = by_code(diags, "MP511")
    assert "v2" in d.message


def test_route_out_of_step_with_authorization():
    _, diags = verify(BASE + "route api {\n  POST /orders -> v2\n  * -> v1\n}\nallow web -> api GET\n")
    [d] = by_code(diags, "MP512")
    assert d.witness["method"] == "POST"


def test_assertions_proved_refuted_and_verbose():
    text = BASE + """allow namespace shop -> api GET
assert never web -> api POST
assert never web -> api GET /x
assert only web -> api
assert can web -> api GET /anything
assert can web -> api POST
"""
    _, diags = verify(text)
    refuted = sorted(d.span.line for d in by_code(diags, "MP601"))
    first = BASE.count("\n") + 2
    assert refuted == [first + 1, first + 2, first + 4]
    for d in by_code(diags, "MP601"):
        assert d.witness and d.witness["destination"] == "api"
    _, verbose = verify(text, verbose=True)
    assert sorted(d.span.line for d in by_code(verbose, "MP603")) == [first, first + 3]


def test_transitive_never_with_paths():
    _, diags = verify(BASE + """service db { namespace data
  port 5432 http }
allow web -> api
allow api -> db GET /rows/*
assert never web ~> db POST
assert never web ~> db GET /rows/1
""")
    [d] = by_code(diags, "MP601")
    assert d.witness["path"] == ["web", "api", "db"]


def test_unsupported_regex_gives_not_proved_warnings():
    _, diags = verify(BASE + 'allow web -> api regex "/a\\\\b.*"\nassert can web -> api GET /a\n')
    assert {"MP520", "MP602"} <= set(codes(diags))
    assert not by_code(diags, "MP601")


def test_z3_path_finds_the_same_findings():
    text = BASE + """route api {
  GET /a/**     -> v1
  GET /a/*      -> v2
  * -> v1
}
allow web -> api GET /a/**
deny * -> api /a/*/x
allow web -> api GET /a/*
"""
    _, boxes = verify(text)
    _, z3only = verify(text, box_limit=0)
    key = lambda ds: sorted((d.code, d.span.line) for d in ds if d.code.startswith("MP5"))  # noqa: E731
    assert key(boxes) == key(z3only) and key(boxes)


# ---- fixtures ---------------------------------------------------------------------

@pytest.mark.parametrize("fixture", MY_FIXTURES, ids=[p.name for p in MY_FIXTURES])
def test_code_fixture(fixture: Path):
    code = fixture.name
    command = (fixture / "command").read_text().split()
    assert command[0] == "verify"
    cfg = {"verbose": "--verbose" in command}
    # `name=value`: a [verify] setting of meshc.toml the fixture needs (a limit)
    cfg.update((k, int(v)) for k, _, v in (w.partition("=") for w in command[1:] if "=" in w))
    bad = (fixture / "bad.mesh").read_text()
    marked = [i + 1 for i, line in enumerate(bad.splitlines()) if f"# <- {code}" in line]
    assert marked, "bad.mesh must mark the expected line"
    _, diags = verify(bad, **cfg)
    assert sorted(d.span.line for d in by_code(diags, code)) == marked
    _, good = verify((fixture / "good.mesh").read_text(), **cfg)
    assert code not in codes(good)
    assert not any(d.is_error for d in good)


def test_every_verify_code_has_a_fixture():
    from meshpolicy.codes import catalogue

    mine = {c for c in catalogue() if re.fullmatch(r"MP5[0-4]\d|MP60\d", c)}
    assert mine == {p.name for p in MY_FIXTURES}


# ---- the command line ---------------------------------------------------------------

def test_cli_verify_reports_check_warnings_and_exit_codes(tmp_path):
    (tmp_path / "a.mesh").write_text(BASE + """route api {
  * -> v1 retry 2 per_try 100ms on 5xx fault abort 500 10%
}
allow web -> api
""")
    r = run_meshc("verify", str(tmp_path), "--format", "json", "--timeout-ms", "500")
    out = json.loads(r.stdout)
    got = {d["code"] for d in out["diagnostics"]}
    assert {"MP302", "MP303"} <= got  # POST retried by default; a fault turns retries off
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "b.mesh").write_text("assert never web -> api\n")
    r = run_meshc("verify", str(tmp_path), "--format", "json")
    out = json.loads(r.stdout)
    [d] = [d for d in out["diagnostics"] if d["code"] == "MP601"]
    assert d["witness"]["source"] == "web" and r.returncode == 1


def test_cli_verify_stops_on_check_errors(tmp_path):
    (tmp_path / "a.mesh").write_text(BASE + "route api {\n  * -> v3\n}\nallow web -> api\nassert never web -> api\n")
    r = run_meshc("verify", str(tmp_path), "--format", "json")
    got = [d["code"] for d in json.loads(r.stdout)["diagnostics"]]
    assert "MP102" in got and "MP601" not in got and r.returncode == 1


def test_cli_verify_example_sarif(tmp_path):
    shutil.copytree(EXAMPLES / "bookinfo", tmp_path / "bookinfo")
    r = run_meshc("verify", str(tmp_path / "bookinfo"), "--format", "sarif")
    sarif = json.loads(r.stdout)
    assert sarif["version"] == "2.1.0" and r.returncode in (0, 1)


# ---- robustness: every construct, and meshes with check errors (the language server runs verify on those) ----

@settings(max_examples=25, deadline=None)
@given(text=__import__("tests.strategies", fromlist=["mesh_programs"]).mesh_programs())
def test_run_never_crashes_and_every_witness_rechecks(text):
    result = check_text(text)
    for d in run(result.mesh, {"verify": {"timeout_ms": 2000}}):
        assert d.code in __import__("meshpolicy.codes", fromlist=["catalogue"]).catalogue()


@pytest.mark.parametrize("path", sorted(p for p in (EXAMPLES / "broken").iterdir() if p.is_dir()), ids=lambda p: p.name)
def test_run_on_broken_examples(path):
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    result = check_project(load([path]))
    assert not result.ok
    run(result.mesh, {})
