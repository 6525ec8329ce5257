"""`meshc verify --certify`: the independent Z3 certifier agrees with the fast
deciders on every example and on generated meshes, and it can fail: when a
decider is broken on purpose (a dropped finding, a live rule called dead, a
missing call-graph edge, a wrong verdict, a wrong witness) it reports MP590."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpolicy.verify import run
from meshpolicy.verify.certify import CLAIMS, NO_CLAIM, certify
from meshpolicy.verify.certify_regex import Untranslatable, regex_to_z3

from .conftest import EXAMPLES, ROOT, check_text, run_meshc
from .strategies import mesh_programs, small_policies

FIXTURES = ROOT / "tests" / "fixtures" / "codes"


def verified(text: str, **cfg):
    result = check_text(text)
    assert result.ok, [(d.code, d.message) for d in result.diagnostics if d.is_error]
    config = {"verify": cfg}
    return result.mesh, run(result.mesh, config), config


def certified(text: str, **cfg):
    mesh, found, config = verified(text, **cfg)
    return found, certify(mesh, found, config)


def codes_of(diags, code):
    return [d for d in diags if d.code == code]


def disagreements(diags):
    return [(d.code, d.span.line if d.span else None, d.message) for d in diags if d.code == "MP590"]


# ---- every example ------------------------------------------------------------------------

EXAMPLE_DIRS = [EXAMPLES / "shop", EXAMPLES / "bookinfo"] + sorted(p for p in (EXAMPLES / "broken").iterdir()
                                                                   if p.is_dir())


@pytest.mark.parametrize("path", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_every_example_is_certified_without_disagreement(path: Path):
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    checked = check_project(load([path]))
    found = run(checked.mesh, {"verify": {"verbose": True}})
    out = certify(checked.mesh, found, {})
    assert not disagreements(out)
    if checked.ok:  # the clean examples are certified completely, but for what the encoding lacks
        assert not [d for d in codes_of(out, "MP591") if not _north_south(d)], [d.message for d in out]
        assert bool(codes_of(out, "MP591")) == bool(checked.mesh.ingresses or checked.mesh.externals)


def _north_south(d) -> bool:
    """An MP591 saying the encoding has no ingress callers, tokens, egress or
    query tests (docs/verify.md, "The internet as a caller")."""
    return "not encoded by the certifier" in d.message or "the certifier does not encode" in d.message


def test_cli_certify_on_the_shop_exits_clean():
    r = run_meshc("verify", str(EXAMPLES / "shop"), "--certify", "--format", "json")
    got = {d["code"] for d in json.loads(r.stdout)["diagnostics"]}
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MP590" not in got and "MP503" in got
    # what is not certified is only what the encoding lacks (the shop's ingress and external)
    assert all("not encoded by the certifier" in d["message"] or "the certifier does not encode" in d["message"]
               for d in json.loads(r.stdout)["diagnostics"] if d["code"] == "MP591")


# ---- generated meshes ---------------------------------------------------------------------

def _no_disagreement(text: str) -> None:
    result = check_text(text)
    if not result.ok:
        return
    found = run(result.mesh, {"verify": {}})
    out = certify(result.mesh, found, {})
    assert not disagreements(out), text


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=small_policies())
def test_generated_small_policies_are_certified(text):
    _no_disagreement(text)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=small_policies(routes=False, source_kinds=("service", "namespace", "authenticated", "any")))
def test_generated_authorization_only_policies_are_certified(text):
    _no_disagreement(text)


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=mesh_programs())
def test_generated_programs_with_every_construct_are_certified(text):
    _no_disagreement(text)


# ---- the certifier can fail: deciders broken on purpose -------------------------------------

DEAD = """mesh demo { trust_domain "example.org" }
service web { port 8080 http }
service api { port 8080 http; version v1; version v2 }
route api {
  GET /orders/** -> v1
  GET -> v2
}
allow web -> api GET /orders/*
deny * -> api /orders/**
allow web -> api POST
allow * -> web
assert never web -> api POST
assert can web -> api GET
"""


def test_unbroken_deciders_agree_on_the_mutation_mesh():
    found, out = certified(DEAD)
    assert codes_of(found, "MP501") and codes_of(found, "MP601")
    assert not disagreements(out) and not codes_of(out, "MP591")


def test_a_dropped_finding_is_caught(monkeypatch):
    from meshpolicy.verify import auth

    real = auth.findings
    monkeypatch.setattr(auth, "findings", lambda mesh, p: [d for d in real(mesh, p) if d.code != "MP501"])
    found, out = certified(DEAD)
    assert not codes_of(found, "MP501")
    [d] = disagreements(out)
    assert d[1] == 8  # the dead allow rule


def test_a_live_route_rule_called_dead_is_caught(monkeypatch):
    from meshpolicy.verify import routes

    real = routes.live_rules

    def wrong(p):
        live = list(real(p))
        if p.dest == "api":
            live[1] = False  # `GET -> v2` takes every GET outside /orders/**
        return live

    monkeypatch.setattr(routes, "live_rules", wrong)
    found, out = certified(DEAD)
    assert [d.span.line for d in codes_of(found, "MP510")] == [6]
    bad = disagreements(out)
    assert any(line == 6 for _, line, _ in bad)  # MP510 on a live rule, with a request it takes
    assert any(d.code == "MP590" and d.witness and d.witness["method"] == "GET"
               and not d.witness["path"].startswith("/orders/") for d in out)


def test_a_missing_call_graph_edge_is_caught(monkeypatch):
    from meshpolicy.verify import auth

    real = auth.may_call
    monkeypatch.setattr(auth, "may_call", lambda mesh, s, d, *a: None if (s, d) == ("web", "api")
                        else real(mesh, s, d, *a))
    _, out = certified(DEAD)
    assert any("may call it too" in m for _, _, m in disagreements(out))
    assert any(d.code == "MP590" and d.witness and d.witness["source"] == "web" for d in out)


def test_a_wrong_assertion_verdict_is_caught(monkeypatch):
    from meshpolicy.verify import assertions

    real = assertions.check
    monkeypatch.setattr(assertions, "check", lambda mesh, a, *args, **kw: [] if a.kind == "never"
                        else real(mesh, a, *args, **kw))
    found, out = certified(DEAD)
    assert [d.span.line for d in codes_of(found, "MP601")] == [13]  # `never` now passes, wrongly
    assert [line for _, line, _ in disagreements(out)] == [12]


def test_a_witness_that_does_not_show_the_finding_is_caught(monkeypatch):
    from meshpolicy.verify import auth

    real = auth.findings

    def wrong_witness(mesh, p):
        out = real(mesh, p)
        for d in out:
            if d.code == "MP501":
                d.witness = dict(d.witness, method="POST")  # POST is allowed: it shows nothing
        return out

    monkeypatch.setattr(auth, "findings", wrong_witness)
    _, out = certified(DEAD)
    assert [line for _, line, _ in disagreements(out)] == [8]


def test_unknown_codes_are_not_certified_never_passed():
    from meshpolicy.codes import diag
    from meshpolicy.verify.certify_core import CLAIMS as registry

    mesh, found, config = verified(DEAD)
    stray = diag("MP554", "a finding of a kind without a certifying function", found[0].span)
    saved = registry.pop("MP554")
    try:
        out = certify(mesh, found + [stray], config)
    finally:
        registry["MP554"] = saved
    assert [d.code for d in out] == ["MP591"]


def test_every_verify_code_is_certified_or_makes_no_claim():
    from meshpolicy.codes import catalogue

    verify_codes = {c for c, info in catalogue().items() if info.stage == "verify"}
    assert verify_codes <= set(CLAIMS) | set(NO_CLAIM), sorted(verify_codes - set(CLAIMS) - set(NO_CLAIM))


# ---- its own regex translation ----------------------------------------------------------

REGEXES = ["/a/[0-9]+", "/(a|bc)*", "/a.?b", r"/\d{2,3}", "/[^a]*", "^/v[0-9]+/.*$", "/x{0}y", "/x{2,}",
           "[[:alpha:]]+-\\w*", "[[:^digit:]]?", "/[a\\-z]", "[]a]", r"\x41\x{42}", r"\.\/", "(?P<n>ab)|c", "a|",
           "()", r"[^\d]x", r"/\101\0", r"\A/a\z", "/a{1,2}?b+?", r"[\s\S]a", "a{,3}"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(REGEXES), st.lists(st.text(alphabet="ab/01-xyz.{},3AB]_ \t\n\x00:", max_size=7),
                                          min_size=20, max_size=20))
def test_regex_translation_follows_re2(regex, strings):
    import re2
    import z3

    compiled, translated = re2.compile(regex), regex_to_z3(regex)
    rng = random.Random(regex)
    samples = strings + [rng.choice(["/", "", "a", "/a/"]) + s for s in strings]
    for s in samples:
        got = z3.is_true(z3.simplify(z3.InRe(z3.StringVal(s), translated)))
        assert got == (compiled.fullmatch(s) is not None), (regex, s)


@pytest.mark.parametrize("regex", [r"/orders\b.*", "(?i)/a", r"/\pN", r"/a\C", r"/\Qa.b\E", "/a^b", "/a$b", r"\1"])
def test_regex_constructs_outside_the_encoding_are_refused(regex):
    with pytest.raises(Untranslatable):
        regex_to_z3(regex)


# ---- fixtures ---------------------------------------------------------------------------

def _fixture_config(fixture: Path) -> dict:
    command = (fixture / "command").read_text().split()
    assert command[:2] == ["verify", "--certify"]
    m = re.search(r"--timeout-ms (\d+)", " ".join(command))
    return {"timeout_ms": int(m.group(1))} if m else {}


def test_mp591_fixture():
    fixture = FIXTURES / "MP591"
    cfg = _fixture_config(fixture)
    bad = (fixture / "bad.mesh").read_text()
    marked = [i + 1 for i, line in enumerate(bad.splitlines()) if "# <- MP591" in line]
    _, out = certified(bad, **cfg)
    assert sorted({d.span.line for d in codes_of(out, "MP591")}) == marked
    _, out = certified((fixture / "good.mesh").read_text(), **cfg)
    assert not out
    _, out = certified(bad)  # the default budget certifies it
    assert not out


def test_mp590_fixture(monkeypatch):
    from meshpolicy.verify import auth

    fixture = FIXTURES / "MP590"
    cfg = _fixture_config(fixture)
    bad = (fixture / "bad.mesh").read_text()
    marked = [i + 1 for i, line in enumerate(bad.splitlines()) if "# <- MP590" in line]
    found, out = certified(bad, **cfg)
    assert codes_of(found, "MP501") and not out  # an unbroken verifier: MP501, certified
    real = auth.findings
    monkeypatch.setattr(auth, "findings", lambda mesh, p: [d for d in real(mesh, p) if d.code != "MP501"])
    _, out = certified(bad, **cfg)
    assert [d.span.line for d in codes_of(out, "MP590")] == marked
    _, out = certified((fixture / "good.mesh").read_text(), **cfg)
    assert not out


def test_a_destination_the_verifier_did_not_verify_is_not_held_against_it():
    text = """mesh demo { trust_domain "example.org" }
service web { port 8080 http }
service api { port 8080 http }
allow web -> api GET /a/*
deny web -> api /a/**
allow web -> api GET /b/*
allow api -> web
"""
    found, out = certified(text, max_rules_per_destination=2)
    assert [d.span.line for d in codes_of(found, "MP507")] == [3] and not codes_of(found, "MP501")
    assert not out  # the dead rule at line 4 is not a missed finding: MP507 says api was not verified
    found, out = certified(text)
    assert codes_of(found, "MP501") and not out
