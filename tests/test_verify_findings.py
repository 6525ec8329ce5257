"""Findings added to the request model: route/authorization agreement that
does not depend on unrelated allow rules (MP512), ineffective parts of route
rules (MP506) and rate limits (MP530-MP532)."""

from __future__ import annotations

import pytest

from meshpolicy.semantics import evaluate
from meshpolicy.semantics.evaluate import Request
from meshpolicy.verify import run

from .conftest import check_text, codes

ROUTED = """
mesh m { trust_domain "t.example" }
service api { namespace a; port 8080 http; version v1 { version: "v1" } }
service web { namespace a; port 8080 http }
service other { namespace a; port 8080 http }
route api {
  GET /orders/** -> v1
}
"""


def verify(text: str):
    result = check_text(text)
    assert result.ok, [(d.code, d.message) for d in result.diagnostics if d.is_error]
    return result.mesh, run(result.mesh)


@pytest.mark.parametrize("extra", ["", "allow web -> other\n", "allow web -> api POST\n"])
def test_route_denied_for_everyone_is_reported_whatever_else_is_allowed(extra):
    """Item (e): the same route rule is MP512 with no allow rule naming `api`,
    with an unrelated allow, and with an allow for other requests to `api`."""
    mesh, diags = verify(ROUTED + extra)
    [d] = [d for d in diags if d.code == "MP512"]
    assert d.span.line == 7
    assert not evaluate(mesh, Request(d.witness["source"], "api", d.witness["method"], d.witness["path"])).decision.allowed


def test_route_allowed_for_someone_is_not_mp512():
    _, diags = verify(ROUTED + "allow web -> api GET\n")
    assert "MP512" not in codes(diags)


def test_ineffective_path_and_method_are_notes_not_dead_rules():
    text = ROUTED.replace("  GET /orders/** -> v1\n", "  GET /orders/** -> v1\n  GET /orders/** /items -> v1\n"
                          "  GET, POST /items -> v1\n") + "allow web -> api\n"
    mesh, diags = verify(text)
    notes = [d for d in diags if d.code == "MP506"]
    assert [(d.span.line, d.witness["path"]) for d in notes][:1] == [(8, "/orders/")]
    assert {d.span.line for d in notes} == {8, 9}  # /orders/** of rule 2; GET of rule 3
    assert "MP510" not in codes(diags)  # both rules still route something
    assert all(n.severity.value == "info" for n in notes)


# ---- rate limits --------------------------------------------------------------------------

LIMITS = """
mesh m { trust_domain "t.example"; default deny }
service api { namespace a; port 8080 http; retry 2 on connect-failure }
service web { namespace a; port 8080 http; retry 3 on connect-failure }
service gw { namespace a; port 8080 http }
service lone { namespace a; port 8080 http }
allow gw -> web GET
allow web -> api GET
"""


def test_dead_limit_mp530_and_dead_named_caller():
    mesh, diags = verify(LIMITS + "limit gw -> api 10/s\nlimit web, lone -> api 10/s\n")
    dead = sorted((d.span.line, d.span.col) for d in diags if d.code == "MP530")
    assert dead == [(9, 1), (10, 12)]  # the whole first limit; `lone` in the second
    for d in diags:
        if d.code == "MP530":
            req = Request(d.witness["source"], "api", d.witness["method"], d.witness["path"])
            assert not evaluate(mesh, req).decision.allowed


def test_limit_shadowed_by_deny_mp531():
    mesh, diags = verify(LIMITS + "allow lone -> api\ndeny lone -> api\nlimit lone -> api 10/s\n")
    [d] = [d for d in diags if d.code == "MP531"]
    assert d.span.line == 11 and "MP530" not in codes(diags)
    out = evaluate(mesh, Request("lone", "api", d.witness["method"], d.witness["path"]))
    assert not out.decision.allowed and out.decision.rule.effect == "deny"


def test_retries_times_limit_mp532_multiplies_along_the_path():
    _, diags = verify(LIMITS + "limit web -> api 120/s\n")
    [d] = [d for d in diags if d.code == "MP532"]
    # gw -> web: 4 attempts, web -> api: 3 attempts; 120/s serves 10/s such requests
    assert d.witness["path"] == ["gw", "web", "api"] and d.witness["attempts"] == 12
    assert d.witness["served"] == 10


def test_live_limit_without_retries_is_quiet():
    text = LIMITS.replace("; retry 2 on connect-failure", "").replace("; retry 3 on connect-failure", "") \
        + "limit web -> api 120/s\n"
    _, diags = verify(text)
    assert not {"MP530", "MP531", "MP532"} & set(codes(diags))


def test_limit_on_self_calls_is_not_a_dead_limit():
    _, diags = verify(LIMITS + "limit web -> web 1/s\n")
    assert not {"MP530", "MP531"} & set(codes(diags))


# ---- limits -------------------------------------------------------------------------------

def test_rule_limit_ends_in_seconds_with_mp507_and_unproved_assertions():
    import time

    rules = "".join(f"allow web -> api GET /r{i}/**, /r{i}/x/*\n" for i in range(3000))
    text = ROUTED.replace("route api {\n  GET /orders/** -> v1\n}\n", "") + rules + \
        "assert never web -> api DELETE\nallow web -> other\n"
    result = check_text(text)
    t0 = time.perf_counter()
    diags = run(result.mesh, {"verify": {"max_rules_per_destination": 1000}})
    assert time.perf_counter() - t0 < 20
    got = codes(diags)
    assert got.count("MP507") == 1 and "MP602" in got and "MP601" not in got
    assert not [d for d in diags if d.code == "MP554" and "`api`" in d.message]


def test_time_limit_mp508_stops_and_claims_nothing():
    _, diags = verify(LIMITS + "assert can web -> api GET\n")
    result = check_text(LIMITS + "assert can web -> api GET\n")
    diags = run(result.mesh, {"verify": {"max_seconds": 0}})
    assert codes(diags).count("MP508") == 1 and "MP603" not in codes(diags)
    assert [d.code for d in diags if d.code.startswith("MP6")] == ["MP602"]


def test_posix_classes_in_regexes_are_read_as_re2_reads_them(tmp_path):
    """`[[:digit:]]` is a POSIX class to RE2; Python's parser read it as a set
    holding `[`, `:`, `d`..., and the verifier's witness disagreed with the
    reference matcher (an internal error, exit 3)."""
    import pytest

    from meshpolicy.verify.automata import NotRegular, parse_re2, witness
    from .conftest import run_meshc

    assert witness((("regex", "/[[:digit:]]+"),), ()) == "/0"
    with pytest.raises(NotRegular):  # a negated class has no spelling here: refused, never misread
        witness((("regex", "/[[:^digit:]]"),), ())
    (tmp_path / "a.mesh").write_text('service api { port 80 http; version v1 }\nservice web { port 80 http }\n'
                                     'allow web -> api regex "/[[:digit:]]+"\n'
                                     'route api {\n  regex "/x[[:alpha:]]" -> v1\n  * -> v1\n}\n')
    proc = run_meshc("verify", str(tmp_path))
    assert proc.returncode in (0, 1) and "internal error" not in proc.stderr, proc.stderr
    assert parse_re2("[]a]") and parse_re2("[^[:digit:]a]")
    (tmp_path / "a.mesh").write_text('service api { port 80 http; version v1 }\nservice web { port 80 http }\n'
                                     'allow web -> api regex "/[[:^digit:]]"\n')
    proc = run_meshc("verify", str(tmp_path), "--format", "json")
    assert proc.returncode in (0, 1) and "internal error" not in proc.stderr, proc.stderr


def test_z3_reads_a_zero_repeat_as_the_empty_string():
    import z3

    from meshpolicy.verify.atoms import z3_regex

    s = z3.String("s")
    solver = z3.Solver()
    solver.add(z3.InRe(s, z3_regex(("regex", "/a(x){0}"))), s != z3.StringVal("/a"))
    assert solver.check() == z3.unsat  # only "/a" itself; Loop(x, 0, 0) alone meant x*


def test_the_verify_limits_are_settings_meshc_toml_accepts(tmp_path):
    from .conftest import run_meshc

    (tmp_path / "meshc.toml").write_text("[verify]\nmax_rules_per_destination = 1\nmax_seconds = 60\n")
    (tmp_path / "a.mesh").write_text("service api { port 80 http }\nservice web { port 80 http }\n"
                                     "allow web -> api GET\ndeny web -> api /admin\n")
    out = run_meshc("verify", str(tmp_path)).stdout
    assert "MP013" not in out and "MP507" in out  # the setting is read, not ignored as unknown
