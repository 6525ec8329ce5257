"""Triage: meshc.toml [diagnostics] settings, `# meshc: ignore[CODE] reason`
comments, and --fail-on, the same in every output format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshpolicy.codes import catalogue
from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.triage import glob_regex

from .conftest import ROOT, codes, run_meshc
from .test_checks import _check_file, _marker_line

FIXTURES = ROOT / "tests" / "fixtures" / "codes"
TRIAGE_CODES = sorted(c for c, i in catalogue().items() if i.stage == "triage")

HEAD = '''mesh demo { trust_domain "example.org" }

service web {
  port 8080 http
  version v1
}
'''
# MP302 (non-idempotent-retry), a warning, on line 9
RETRY_POST = HEAD + '''
route web {
  POST /orders -> v1 retry 2 on 5xx%s
  * -> v1
}
allow * -> web
'''


def _mesh(tmp_path: Path, files: dict[str, str], toml: str = "") -> Path:
    root = tmp_path / "mesh"
    root.mkdir(parents=True)
    (root / "meshc.toml").write_text(toml)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _diags(root: Path):
    return check_project(load([root])).diagnostics


# ---- the code fixtures -----------------------------------------------------------------


def test_triage_codes_are_in_our_range():
    assert TRIAGE_CODES and all(90 <= int(c[2:]) <= 99 for c in TRIAGE_CODES)


@pytest.mark.parametrize("code", TRIAGE_CODES)
def test_bad_fixture_reports_code_on_marked_line(code):
    bad = FIXTURES / code / "bad.mesh"
    found = [d for d in _check_file(bad) if d.code == code]
    assert found and _marker_line(bad, code) in [d.span.line for d in found]


@pytest.mark.parametrize("code", TRIAGE_CODES)
def test_good_fixture_is_clean(code):
    diags = _check_file(FIXTURES / code / "good.mesh")
    assert not [d for d in diags if d.code == code or d.is_error]
    assert (FIXTURES / code / "README.md").read_text().strip()


# ---- inline suppression ----------------------------------------------------------------


def test_suppression_on_the_line_or_alone_on_the_line_before(tmp_path):
    same = RETRY_POST % "   # meshc: ignore[MP302] the orders API dedupes by request id"
    before = RETRY_POST.replace("  POST /orders", "  # meshc: ignore[MP302] dedupes by id\n  POST /orders") % ""
    for i, text in enumerate((same, before)):
        diags = check_project(load([_mesh(tmp_path / str(i), {"a.mesh": text})])).diagnostics
        [d] = [d for d in diags if d.code == "MP302"]
        assert d.suppressed and "dedupes" in d.suppressed
        assert not d.is_error and codes([d for d in diags if d.suppressed is None]) == []


def test_a_trailing_suppression_does_not_reach_the_next_line(tmp_path):
    text = RETRY_POST.replace("route web {", "route web {   # meshc: ignore[MP302] not here") % ""
    diags = _diags(_mesh(tmp_path, {"a.mesh": text}))
    assert [d.code for d in diags if d.suppressed is None] == ["MP090", "MP302"]


def test_suppression_checks(tmp_path):
    text = RETRY_POST % "  # meshc: ignore[MP302]"
    assert codes(d for d in _diags(_mesh(tmp_path / "a", {"a.mesh": text})) if d.suppressed is None) == ["MP091"]
    text = RETRY_POST % "  # meshc: ignore[mp302, MP9999] reason"
    diags = _diags(_mesh(tmp_path / "b", {"a.mesh": text}))
    assert codes(d for d in diags if d.suppressed is None) == ["MP092"]  # mp302 still counts
    text = RETRY_POST % "  # meshc: ignore MP302 reason"
    assert codes(d for d in _diags(_mesh(tmp_path / "c", {"a.mesh": text})) if d.suppressed is None) \
        == ["MP094", "MP302"]


def test_crlf_and_lone_cr_files_suppress_alike(tmp_path):
    text = RETRY_POST % "   # meshc: ignore[MP302] dedupes by id"
    for i, nl in enumerate(("\r\n", "\r")):
        root = _mesh(tmp_path / str(i), {})
        (root / "a.mesh").write_bytes(text.replace("\n", nl).encode())
        diags = _diags(root)
        [d] = [d for d in diags if d.code == "MP302"]
        assert d.suppressed == "dedupes by id", nl


def test_unused_suppression_of_a_verifier_code_waits_for_verify(tmp_path):
    text = RETRY_POST % "   # meshc: ignore[MP302] dedupes by id"
    text = text.replace("allow * -> web", "allow * -> web   # meshc: ignore[MP553] no inversion here")
    root = _mesh(tmp_path, {"a.mesh": text})
    r = run_meshc("check", str(root), "--format", "json")
    assert r.returncode == 0 and [d["code"] for d in json.loads(r.stdout)["diagnostics"]] == []
    r = run_meshc("verify", str(root), "--format", "json")
    doc = json.loads(r.stdout)
    [unused] = [d for d in doc["diagnostics"] if d["code"] == "MP090"]
    assert "MP553" in unused["message"] and unused["span"]["line"] == 12


def test_a_verifier_finding_is_suppressed(tmp_path):
    mesh = (FIXTURES / "MP553" / "bad.mesh").read_text()
    line = next(i for i, x in enumerate(mesh.splitlines()) if "<- MP553" in x)
    lines = mesh.splitlines()
    lines[line] = lines[line].split("#")[0] + "# meshc: ignore[MP553] b's callers retry"
    root = _mesh(tmp_path, {"a.mesh": "\n".join(lines) + "\n"})
    doc = json.loads(run_meshc("verify", str(root), "--format", "json").stdout)
    assert "MP553" not in [d["code"] for d in doc["diagnostics"]]
    assert [d["code"] for d in doc["suppressed"]] == ["MP553"] and doc["summary"]["suppressed"] == 1


# ---- every output format ---------------------------------------------------------------


def test_suppression_is_uniform_across_formats(tmp_path):
    root = _mesh(tmp_path, {"a.mesh": RETRY_POST % "   # meshc: ignore[MP302] dedupes by id"})
    text = run_meshc("check", str(root))
    assert "MP302" not in text.stdout and "1 suppressed" in text.stdout and text.returncode == 0
    assert run_meshc("check", str(root), "--format", "github").stdout == ""
    doc = json.loads(run_meshc("check", str(root), "--format", "json").stdout)
    assert doc["diagnostics"] == [] and doc["suppressed"][0]["justification"] == "dedupes by id"
    sarif = json.loads(run_meshc("check", str(root), "--format", "sarif").stdout)
    [res] = sarif["runs"][0]["results"]
    assert res["ruleId"] == "MP302"
    assert res["suppressions"] == [{"kind": "inSource", "status": "accepted", "justification": "dedupes by id"}]
    for fmt in ("text", "json", "sarif", "github"):
        assert run_meshc("check", str(root), "--format", fmt, "--fail-on", "warning").returncode == 0, fmt


def test_sarif_with_suppressions_validates(tmp_path):
    from jsonschema import Draft4Validator

    from .conftest import shared_file

    schema = json.loads(shared_file("schemas", "sarif", "sarif-schema-2.1.0.json").read_text())
    root = _mesh(tmp_path, {"a.mesh": RETRY_POST % "   # meshc: ignore[MP302] dedupes by id"})
    sarif = json.loads(run_meshc("check", str(root), "--format", "sarif").stdout)
    assert list(Draft4Validator(schema).iter_errors(sarif)) == []


# ---- meshc.toml [diagnostics] ----------------------------------------------------------


def test_config_ignore_severity_and_per_path(tmp_path):
    toml = '''
[diagnostics]
severity = { MP302 = "error" }

[[diagnostics.per-path]]
paths = ["legacy/**"]
ignore = ["MP302"]
'''
    legacy = RETRY_POST.replace("mesh demo { trust_domain \"example.org\" }\n", "").replace("web", "old") % ""
    root = _mesh(tmp_path, {"a.mesh": RETRY_POST % "", "legacy/deep/b.mesh": legacy}, toml)
    diags = _diags(root)
    [d] = [d for d in diags if d.code == "MP302"]
    assert d.is_error and d.span.file.endswith("a.mesh")
    assert run_meshc("check", str(root)).returncode == 1
    (root / "meshc.toml").write_text('[diagnostics]\nignore = ["MP302"]\n')
    assert [d.code for d in _diags(root)] == []


def test_config_rejects_unknown_codes_and_hiding_errors(tmp_path):
    toml = '''
[diagnostics]
ignore = ["MP101", "MP3022"]
severity = { MP103 = "warning", MP302 = "loud" }
'''
    diags = _diags(_mesh(tmp_path, {"a.mesh": RETRY_POST % ""}, toml))
    assert codes(d for d in diags if d.code == "MP012") == ["MP012"] * 4
    assert "MP302" in codes(diags)  # the bad setting was dropped, the finding stays


@pytest.mark.parametrize("pattern, path, hit", [
    ("legacy/**", "legacy/a.mesh", True), ("legacy/**", "legacy/x/y/a.mesh", True),
    ("legacy/**", "legacyx/a.mesh", False), ("**/gen.mesh", "gen.mesh", True),
    ("**/gen.mesh", "a/b/gen.mesh", True), ("*.mesh", "a/b.mesh", False), ("a?.mesh", "ab.mesh", True),
    ("legacy/*", "legacy/a/b.mesh", False),
])
def test_globs(pattern, path, hit):
    assert bool(glob_regex(pattern).fullmatch(path)) is hit


# ---- --fail-on -------------------------------------------------------------------------


@pytest.mark.parametrize("command", [("check",), ("verify",), ("compile", "--target", "istio", "--stdout")])
def test_fail_on_warning(tmp_path, command):
    root = _mesh(tmp_path, {"a.mesh": RETRY_POST % ""})
    assert run_meshc(*command, str(root)).returncode == 0
    r = run_meshc(*command, str(root), "--fail-on", "warning")
    assert r.returncode == 1 and "MP302" in r.stdout + r.stderr


def test_fail_on_warning_compile_writes_nothing(tmp_path):
    root = _mesh(tmp_path, {"a.mesh": RETRY_POST % ""})
    out = tmp_path / "out"
    r = run_meshc("compile", str(root), "--target", "istio", "-o", str(out), "--fail-on", "warning")
    assert r.returncode == 1 and not out.exists()


def test_language_server_publishes_what_the_command_line_reports(tmp_path):
    """The LSP's analysis reads the same pipeline: suppressed check and verifier findings are not published."""
    from meshpolicy.lsp.meshes import analyse, verify

    mesh = (FIXTURES / "MP553" / "bad.mesh").read_text().replace("# <- MP553", "# meshc: ignore[MP553] known")
    root = _mesh(tmp_path, {"a.mesh": mesh, "b.mesh": (RETRY_POST % "  # meshc: ignore[MP302] dedupes")
                            .replace('mesh demo { trust_domain "example.org" }\n', "")})
    a = analyse(str(root), {}, 1)
    a.verified = verify(a)
    assert a.verified is not None
    shown = codes(a.diagnostics)
    assert "MP553" not in shown and "MP302" not in shown and "MP090" not in shown
    assert {d.code for d in a.checked.diagnostics + a.verified if d.suppressed} == {"MP302", "MP553"}
