"""Checks: every syntax/check code has a fixture that shows it (on the marked
line) and a fixed version that does not; the tricky definitions have focused
tests. Assertions are on codes and spans, never on wording."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from meshpolicy.checks import rules, run_checks
from meshpolicy.codes import catalogue
from meshpolicy.diagnostics import Severity
from meshpolicy.model.build import build
from meshpolicy.pipeline import check_project, gc_paused
from meshpolicy.project import load
from meshpolicy.syntax.parser import parse_text

from .conftest import EXAMPLES, check_text, codes, run_meshc

FIXTURES = Path(__file__).parent / "fixtures" / "codes"
OUR_STAGES = ("syntax", "check")
OUR_CODES = sorted(c for c, i in catalogue().items() if i.stage in OUR_STAGES)
HEAD = 'mesh m { trust_domain "example.org" }\n'


def _check_file(path: Path):
    """Check one fixture file; a fixture about meshc.toml (bad.toml/good.toml
    beside it) is checked in a folder of its own with that config."""
    toml = path.with_suffix(".toml")
    if toml.is_file():
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            shutil.copy(path, Path(tmp) / path.name)
            shutil.copy(toml, Path(tmp) / "meshc.toml")
            diags = check_project(load([Path(tmp) / path.name], whole_mesh=False)).diagnostics
            for d in diags:  # report against the fixture's own files
                if d.span is not None and d.span.file.endswith("meshc.toml"):
                    d.span = d.span._replace(file=str(toml))
            return diags
    return check_project(load([path], whole_mesh=False)).diagnostics


def _marker_line(path: Path, code: str) -> int | None:
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    hits = [i + 1 for i, line in enumerate(lines) if re.search(rf"#\s*<-\s*{code}\b", line)]
    assert len(hits) <= 1, f"{path}: more than one `# <- {code}` marker"
    return hits[0] if hits else None


def with_code(diags, code):
    return [d for d in diags if d.code == code]


# ---- fixtures -------------------------------------------------------------------------------

@pytest.mark.parametrize("code", OUR_CODES)
def test_bad_fixture_reports_code_on_marked_line(code):
    bad = FIXTURES / code / "bad.mesh"
    assert bad.is_file(), f"missing fixture {bad}"
    found = with_code(_check_file(bad), code)
    assert found, f"{bad} does not report {code}"
    marked = bad.with_suffix(".toml") if bad.with_suffix(".toml").is_file() else bad
    line = _marker_line(marked, code)
    if line is None:  # project-wide findings (unreadable file, no mesh block) have no span
        assert all(d.span is None for d in found), f"{bad}: mark the line with `# <- {code}`"
    else:
        assert line in [d.span.line for d in found if d.span], (code, line, [d.span for d in found])


@pytest.mark.parametrize("code", OUR_CODES)
def test_fixture_has_a_readme(code):
    assert (FIXTURES / code / "README.md").read_text().strip()


@pytest.mark.parametrize("code", OUR_CODES)
def test_good_fixture_is_clean(code):
    good = FIXTURES / code / "good.mesh"
    diags = _check_file(good)
    assert not with_code(diags, code)
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]


def test_every_code_has_a_rule_and_every_rule_a_code():
    registered = {c for cs, _ in rules() for c in cs}
    check_codes = {c for c, i in catalogue().items() if i.stage == "check"}
    assert registered == check_codes


def test_examples_have_no_errors():
    for ex in ("shop", "bookinfo"):
        diags = check_project(load([EXAMPLES / ex])).diagnostics
        assert not [d for d in diags if d.is_error], [(d.code, d.span, d.message) for d in diags]


# ---- names and vocabulary --------------------------------------------------------------------

def test_unknown_method_and_condition_suggest_fixes():
    r = check_text(HEAD + "service a { port 80 http\n retry 1 on conect-failure }\n"
                   "allow * -> a PSOT\nassert can a -> a DELET\n")
    (m105a, m105b), (m106,) = with_code(r.diagnostics, "MP105"), with_code(r.diagnostics, "MP106")
    assert [f.replacement for f in m105a.fixes + m105b.fixes] == ["POST", "DELETE"]
    assert m106.fixes[0].replacement == "connect-failure"
    assert m106.span.line == 3 and m106.span.end_col - m106.span.col == len("conect-failure")


def test_missing_mesh_block_is_a_spanless_warning_and_needs_files():
    r = check_text("service a { port 80 http }\nallow * -> a\n")
    (d,) = with_code(r.diagnostics, "MP107")
    assert d.span is None and d.severity is Severity.WARNING
    assert not with_code(run_checks(build([])[0]), "MP107")


# ---- values ----------------------------------------------------------------------------------

ROUTED = HEAD + "service a { port 80 http\n version v1\n version v2\n version v3 }\nallow * -> a\n"


@pytest.mark.parametrize("action, n", [
    ("-> v1 50%", 1),                  # one destination, not 100%
    ("-> v1 50%, v2", 1),              # a missing weight
    ("-> v1, v2, v3 10%", 2),          # two missing weights
    ("-> v1 33.3%, v2 33.3%, v3 33.4%", 0),
    ("-> v1 100%", 0),
    ("-> v1", 0),
    ("-> v1 60%, v2 60%", 1),
])
def test_split_weights(action, n):
    r = check_text(ROUTED + f"route a {{\n  * {action} mirror v3 1%\n}}\n")
    assert len(with_code(r.diagnostics, "MP201")) == n


def test_every_percentage_is_range_checked():
    r = check_text('mesh m { trust_domain "e.org"; tracing w3c sample 101% }\n'
                   "service a { port 80 http\n version v1\n version v2\n"
                   " fault delay 1ms 101% abort 503 200%\n outlier consecutive_5xx 3 max 150%\n"
                   " retry 1 on connect-failure budget 120% }\n"
                   "route a { GET -> v1 101%, v2 0% mirror v2 300% }\nallow * -> a\n")
    assert len(with_code(r.diagnostics, "MP202")) == 7


def test_zero_durations_and_backoff_cap():
    r = check_text(HEAD + "service a { port 80 http\n version v1\n timeout 0ms\n"
                   " retry 2 per_try 0s on connect-failure backoff 100ms max 10ms\n"
                   " outlier consecutive_5xx 1 interval 0s eject 0s\n fault delay 0ms 10% }\n"
                   "route a { GET -> v1 timeout 0s }\nallow * -> a GET\nassert latency a ~> a <= 0ms\n")
    lines = sorted(d.span.line for d in with_code(r.diagnostics, "MP203"))
    assert lines == [4, 5, 5, 6, 6, 7, 8, 10]


def test_regexes_are_judged_by_re2_not_python():
    # lookahead and backreferences: fine for Python's re, rejected by RE2
    bad = check_text(HEAD + "service a { port 80 http; version v1 }\nroute a {\n"
                     '  regex "^/(?=x)" -> v1\n  header "x-id" ~ "(a)\\\\1" -> v1\n  * -> v1\n}\nallow * -> a\n')
    assert [d.span.line for d in with_code(bad.diagnostics, "MP204")] == [4, 5]
    # Unicode classes: fine for RE2, rejected by Python's re
    good = check_text(HEAD + "service a { port 80 http; version v1 }\nroute a {\n"
                      '  regex "^/\\\\pL+$" -> v1\n  * -> v1\n}\nallow * -> a\n')
    assert not with_code(good.diagnostics, "MP204")
    import re as python_re
    with pytest.raises(python_re.error):
        python_re.compile(r"^/\pL+$")


@pytest.mark.parametrize("td, ok", [
    ("example.org", True), ("cluster.local", True), ("my_td-1.example", True),
    ("spiffe://example.org", False), ("example.org:8443", False), ("example.org/x", False),
    ("Example.org", False), ("", False), ("a b", False),
])
def test_trust_domain(td, ok):
    r = check_text(f'mesh m {{ trust_domain "{td}" }}\nservice a {{ port 80 http }}\nallow * -> a\n')
    assert bool(with_code(r.diagnostics, "MP205")) is not ok


@pytest.mark.parametrize("decl, ok", [
    ("namespace shop", True), ("namespace a-b-9", True), ("namespace " + "n" * 63, True),
    ("namespace " + "n" * 64, False), ("namespace Shop", False), ("namespace shop_x", False),
    ("namespace _x", False), ("account web-sa", True), ("account Web", False),
])
def test_namespace_and_account_are_dns_labels(decl, ok):
    r = check_text(HEAD + f"service a {{ port 80 http\n {decl} }}\nallow * -> a\n")
    found = with_code(r.diagnostics, "MP205")
    assert bool(found) is not ok
    assert all(d.span.line == 3 for d in found)


def test_default_account_is_the_service_name():
    r = check_text(HEAD + "service Web_1 { port 80 http }\nallow * -> Web_1\n")
    (d,) = with_code(r.diagnostics, "MP205")
    assert d.span.line == 2  # the service name, which the account defaults to
    r = check_text(HEAD + "service Web_1 { port 80 http; account web-1 }\nallow * -> Web_1\n")
    assert not with_code(r.diagnostics, "MP205")


def test_ports():
    r = check_text(HEAD + "service a {\n port 0 http\n port 80 http\n port 80 tcp\n port 65535 grpc\n}\n"
                   "allow * -> a\n")
    (zero, dup) = with_code(r.diagnostics, "MP206")
    assert (zero.span.line, dup.span.line) == (3, 5)
    assert dup.labels[0].span.line == 4


def test_statuses():
    r = check_text(ROUTED + 'route a {\n GET /a -> respond 600\n GET /b -> redirect "/x" 302\n'
                   ' GET /c -> redirect "/x" 304\n GET /d -> respond 204\n'
                   ' * -> v1 fault abort 100 1%\n * -> v2\n * -> v3\n}\n')
    assert sorted(d.span.line for d in with_code(r.diagnostics, "MP207")) == [8, 10, 12]


def test_retry_zero_fix_makes_it_retry_off():
    text = HEAD + "service a { port 80 http\n  retry 0 per_try 1s\n}\nallow * -> a GET\n"
    (d,) = with_code(check_text(text).diagnostics, "MP208")
    (fix,) = d.fixes
    fixed = text[:fix.span.start] + fix.replacement + text[fix.span.end:]
    assert "retry off" in fixed
    assert check_text(fixed).diagnostics == []


def test_counts():
    r = check_text(HEAD + "service a { port 80 http\n"
                   " circuit max_connections 0 max_pending 1 max_requests 4294967296 max_retries 0 }\n"
                   "allow * -> a\nlimit * -> a 0/s burst 0\nassert amplification a ~> a <= 0\n")
    assert len(with_code(r.diagnostics, "MP208")) == 5  # max_retries 0 is meaningful (no concurrent retries)


@pytest.mark.parametrize("path, ok", [
    ("/orders", True), ("/orders/*", True), ("/orders/**", True), ("/a/*/b", True), ("/a/**/b", True),
    ("/orders*", False), ("/a/**b", False), ("/a/*.json", False), ("/a/***", False),
    ('exact "/a?b=1"', False), ('prefix "api"', False), ('exact "/a b"', False), ('exact "/a*"', True),
])
def test_paths(path, ok):
    r = check_text(HEAD + f"service a {{ port 80 http }}\nallow * -> a GET {path}\n")
    assert bool(with_code(r.diagnostics, "MP209")) is not ok


@pytest.mark.parametrize("name, ok", [
    ("x-user-id", True), (":authority", True), ("X-Upper", True), ("x_y.z", True),
    ("x user", False), ("", False), ("a:b", False), ("x/y", False),
])
def test_header_names(name, ok):
    r = check_text(HEAD + f'service a {{ port 80 http; version v1\n balance hash header "{name}" }}\n'
                   f'route a {{ header "{name}" present -> v1\n * -> v1 }}\nallow * -> a\n')
    assert len(with_code(r.diagnostics, "MP210")) == (0 if ok else 2)


@pytest.mark.parametrize("label, ok", [
    ('app: "web"', True), ('"app.kubernetes.io/name": "web"', True), ('track: ""', True),
    ('track: "a_b.c-d"', True), ('track: "-a"', False), ('track: "a b"', False),
    ('"Bad_Prefix/name": "x"', False), ('"a/b/c": "x"', False), ('"/x": "y"', False),
    ('track: "' + "v" * 64 + '"', False),
])
def test_labels(label, ok):
    r = check_text(HEAD + f"service a {{ port 80 http\n version v1 {{ {label} }} }}\nallow * -> a\n")
    assert bool(with_code(r.diagnostics, "MP211")) is not ok


def test_label_from_a_bare_version_name():
    r = check_text(HEAD + "service a { port 80 http\n version v1_ }\nallow * -> a\n")
    (d,) = with_code(r.diagnostics, "MP211")
    assert d.span.line == 3


# ---- meaning ---------------------------------------------------------------------------------

def svc(body: str, route: str = "", allow: str = "allow * -> a GET") -> str:
    text = HEAD + "service a {\n  port 80 http\n  version v1\n" + body + "}\n"
    if route:
        text += "route a {\n" + route + "}\n"
    return text + allow + "\n"


def test_retry_exceeds_timeout_points_at_retry_and_labels_timeout():
    r = check_text(svc("  timeout 1s\n  retry 2 per_try 400ms on connect-failure\n"))
    (d,) = with_code(r.diagnostics, "MP301")
    assert d.span.line == 6 and d.is_error
    assert [lab.span.line for lab in d.labels] == [5]


@pytest.mark.parametrize("body, route, n", [
    ("  timeout 1200ms\n  retry 2 per_try 400ms\n", "", 0),             # exactly fits
    ("  timeout 1s\n  retry 2\n", "", 0),                                 # no per-try timeout
    ("  retry 2 per_try 400ms\n", "", 0),                                 # no timeout
    ("  timeout 1s\n  retry off\n", "", 0),
    # inherited by three rules: reported once, at the service's retry
    ("  timeout 1s\n  retry 2 per_try 400ms\n", "  GET /a -> v1\n  GET /b -> v1\n  * -> v1\n", 1),
    # a rule's own timeout makes room; another rule's own retry does not fit
    ("  timeout 1s\n  retry 2 per_try 400ms\n", "  GET /a -> v1 timeout 2s\n", 0),
    ("  timeout 5s\n", "  GET /a -> v1 retry 4 per_try 2s\n  * -> v1\n", 1),
    ("  timeout 1s\n  retry 2 per_try 400ms\n", "  GET /a -> v1 retry off\n", 0),
    # a direct response never reaches the service, so its inherited retries never run
    ("  timeout 1s\n  retry 2 per_try 400ms\n", '  GET /a -> respond 200\n', 0),
])
def test_retry_exceeds_timeout_uses_effective_settings(body, route, n):
    r = check_text(svc(body, route))
    assert len(with_code(r.diagnostics, "MP301")) == n


@pytest.mark.parametrize("retry, match, n", [
    ("retry 2 on 5xx", "GET", 0),
    ("retry 2 on 5xx", "GET, PUT /x", 0),
    ("retry 2 on 5xx", "*", 1),
    ("retry 2 on 5xx", "/x", 1),
    ("retry 2 on 5xx", "GET, POST", 1),
    ("retry 2 on 5xx", "PATCH", 1),
    ("retry 2", "POST", 1),                                  # Istio's defaults include 503
    ("retry 2 on 5xx non_idempotent", "POST", 0),
    ("retry 2 on connect-failure, refused-stream", "POST", 0),
    ("retry 2 on connect-failure, reset", "POST", 1),
    ("retry off", "POST", 0),
])
def test_non_idempotent_retry_on_rules(retry, match, n):
    r = check_text(svc("", f"  {match} -> v1 {retry}\n"))
    found = with_code(r.diagnostics, "MP302")
    assert len(found) == n
    assert all(d.severity is Severity.WARNING for d in found)


def test_non_idempotent_retry_inherited_and_overridden():
    r = check_text(svc("  retry 2 on 5xx\n", "  POST /a -> v1 retry off\n  GET -> v1\n  * -> v1\n"))
    (d,) = with_code(r.diagnostics, "MP302")
    assert d.span.line == 10  # the catch-all rule, labelled with the inherited retry
    assert [lab.span.line for lab in d.labels] == [5]


@pytest.mark.parametrize("mesh, allow, n", [
    ("", "allow * -> a GET", 0),
    ("", "allow * -> a GET, HEAD /x", 0),
    ("", "allow * -> a", 1),
    ("", "allow * -> a POST", 1),
    ("", "deny * -> a", 0),                                  # deny rules admit nothing
    ("default allow", "deny * -> a POST", 1),                # the default admits POST
])
def test_non_idempotent_retry_on_routeless_service(mesh, allow, n):
    text = f'mesh m {{ trust_domain "e.org"\n {mesh} }}\n' + \
        "service a { port 80 http; version v1\n retry 2 on 5xx }\n" + allow + "\n"
    assert len(with_code(check_text(text).diagnostics, "MP302")) == n


@pytest.mark.parametrize("body, route, n", [
    ("  fault abort 503 1%\n  retry 2 on connect-failure\n", "", 1),
    ("  fault abort 503 1%\n  retry off\n", "", 0),
    ("  retry 2 on connect-failure\n", "  GET -> v1 fault delay 1s 5%\n  * -> v1\n", 1),
    ("  retry 2 on connect-failure\n  fault delay 1s 5%\n", "  GET -> v1\n  * -> v1\n", 1),  # once
    ("  fault delay 1s 5%\n", "  GET -> v1 retry 1 on connect-failure\n", 1),
    ("  fault delay 1s 5%\n", "  GET -> v1\n", 0),
])
def test_fault_disables_retry(body, route, n):
    assert len(with_code(check_text(svc(body, route)).diagnostics, "MP303")) == n


def test_http_features_on_tcp_service():
    text = HEAD + ("service db {\n  port 5432 tcp\n  version v1\n  timeout 1s\n  retry 1\n  fault delay 1s 1%\n"
                   '  balance hash header "x-id"\n}\nroute db { * -> v1 }\n'
                   "allow * -> db GET\nallow * -> db /x\nallow * -> db\nlimit * -> db 1/s\n"
                   "assert can db -> db GET\nassert never db -> db\n")
    found = with_code(check_text(text).diagnostics, "MP304")
    assert sorted(d.span.line for d in found) == [5, 6, 7, 8, 10, 11, 12, 14, 15]


def test_http_features_fine_on_mixed_ports():
    text = HEAD + "service db {\n  port 5432 tcp\n  port 8080 http\n  timeout 1s\n}\nallow * -> db GET\n"
    assert not with_code(check_text(text).diagnostics, "MP304")


def test_self_reference_everywhere():
    text = HEAD + ("service a { port 80 http; version v1 }\nservice b { port 80 http }\n"
                   "allow a, b -> a\nlimit a -> a 1/s\nroute a { from a -> v1 }\n"
                   "assert never a ~> a\nassert only b, a -> a\nallow * -> b\n")
    found = with_code(check_text(text).diagnostics, "MP305")
    assert sorted(d.span.line for d in found) == [4, 5, 6, 7, 8]


def test_mirror_to_live_destination():
    text = HEAD + ("service a { port 80 http; version v1; version v2 }\n"
                   "route a {\n GET -> v1 90%, v2 10% mirror v2\n POST -> v1 100%, v2 0% mirror v2\n}\n"
                   "allow * -> a\n")
    (d,) = with_code(check_text(text).diagnostics, "MP306")
    assert d.span.line == 4 and d.labels[0].span.line == 4


# ---- unused ----------------------------------------------------------------------------------

def test_unused_versions_only_with_a_route():
    base = HEAD + "service a { port 80 http\n version v1\n version v2\n version v3 }\nallow * -> a\n"
    assert not with_code(check_text(base).diagnostics, "MP401")
    r = check_text(base + 'route a {\n GET -> v1 mirror v3\n * -> respond 404 }\n')
    (d,) = with_code(r.diagnostics, "MP401")
    assert d.span.line == 4


def test_uncallable_services():
    text = 'mesh m {\n trust_domain "e.org"\n default %s\n}\nservice a { port 80 http }\n' \
           "service b { port 80 http }\nservice c { port 80 http }\nallow a -> b GET\ndeny * -> c\n"
    found = with_code(check_text(text % "deny").diagnostics, "MP402")
    assert sorted(d.span.line for d in found) == [7]  # a is a caller: an entry point, not unused
    assert not with_code(check_text(text % "allow").diagnostics, "MP402")


# ---- speed -----------------------------------------------------------------------------------

def big_mesh(n: int) -> str:
    """A mesh shaped like the benchmark: n services with routes, rules and limits."""
    out = [HEAD.replace("m {", "big {")]
    for i in range(n):
        out.append(f"""service s{i} {{
  namespace ns{i % 20}; account s{i}
  port 8080 http
  version v1 {{ version: "v1", app: "s{i}" }}
  version v2 {{ version: "v2", app: "s{i}" }}
  timeout 2s
  retry 2 per_try 500ms on 5xx, connect-failure backoff 25ms
  circuit max_connections 100 max_pending 10
  outlier consecutive_5xx 5 interval 10s eject 30s max 50%
  balance least_request
}}
route s{i} {{
  header "x-canary" = "on" -> v2
  GET /items/* regex "^/items/[0-9]+$" -> v1 90%, v2 10% mirror v2 5%
  POST /items -> v1 retry 1 per_try 400ms on connect-failure
  GET /health -> respond 200 "ok"
  * -> v1
}}
allow s{(i + 1) % n}, namespace ns{(i + 3) % 20} -> s{i} GET, POST /items, /items/**
limit s{(i + 1) % n} -> s{i} 100/s burst 20
""")
    return "".join(out)


def _timings(n: int) -> tuple[float, float, list]:
    """(parse seconds, best-of-3 check seconds, diagnostics) for big_mesh(n), GC paused as in the pipeline."""
    text = big_mesh(n)
    with gc_paused():
        start = time.process_time()
        tree, _ = parse_text(text, "big.mesh")
        parse = time.process_time() - start
        mesh, _ = build([tree])
        run_checks(mesh)  # warm: imports, RE2
        best = float("inf")
        for _ in range(3):
            mesh, _ = build([tree])  # fresh model: no cached indexes
            start = time.process_time()
            diags = run_checks(mesh)
            best = min(best, time.process_time() - start)
    return parse, best, diags


def test_checks_are_linear_and_cheap_next_to_parsing():
    # CPU time and relative bounds, so a loaded machine does not make this flaky; a services x rules
    # loop would break both. (Absolute numbers for 1000 services: see the report / bench.)
    _, small, _ = _timings(100)
    parse, large, diags = _timings(400)
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags[:5]]
    # (parse / 2 until issue 16 made the parser 1.5-1.7x faster: the checks now take 0.6-0.8 of a parse)
    assert large < parse, (large, parse)
    assert large < 10 * small, (small, large)  # 4x the services: about 4x the time (16x if quadratic)


# ---- broken examples -------------------------------------------------------------------------

BROKEN = EXAMPLES / "broken"
BROKEN_EXPECTED = {
    "typos": {"MP101", "MP102", "MP104", "MP105", "MP106", "MP009"},
    "weights": {"MP201", "MP202", "MP306", "MP401"},
    "regex": {"MP204", "MP209", "MP210"},
    "retries": {"MP301", "MP302", "MP303", "MP208"},
    "misplaced": {"MP005", "MP011", "MP304"},
    "syntax": {"MP002", "MP003", "MP004", "MP006", "MP007", "MP008"},
}


def test_broken_examples_are_all_listed():
    assert sorted(p.name for p in BROKEN.iterdir() if p.is_dir()) == sorted(BROKEN_EXPECTED)


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTED))
def test_broken_example_reports_its_codes(name):
    assert (BROKEN / name / "meshc.toml").is_file()
    proc = run_meshc("check", str(BROKEN / name), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    import json
    diags = json.loads(proc.stdout)["diagnostics"]
    reported = {d["code"] for d in diags}
    assert BROKEN_EXPECTED[name] <= reported, BROKEN_EXPECTED[name] - reported
    if name == "typos":  # every typo comes with a "did you mean" fix
        assert all(d["fixes"] for d in diags if d["code"] in BROKEN_EXPECTED["typos"])


def test_unused_version_is_not_reported_next_to_a_version_typo():
    text = HEAD + "service a { port 80 http\n version stable\n version canary }\n" \
        "route a {\n GET -> canry\n * -> stable }\nallow * -> a\n"
    found = codes(check_text(text).diagnostics)
    assert "MP102" in found and "MP401" not in found
