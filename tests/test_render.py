"""Output formats (SARIF, GitHub annotations, JSON, text), the language
reference's examples, and the benchmark mesh generator."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from jsonschema import Draft4Validator

from meshpolicy.codes import catalogue, diag
from meshpolicy.diagnostics import Diagnostic, Label, Severity
from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.render import render
from meshpolicy.render.github_format import annotation
from meshpolicy.render.sarif_format import sarif_log
from meshpolicy.span import SourceFile, Span
from meshpolicy.syntax.parser import parse_text

from .conftest import EXAMPLES, ROOT, codes, run_meshc, shared_file

SARIF_SCHEMA = ("schemas", "sarif", "sarif-schema-2.1.0.json")
ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def sarif_validator():
    return Draft4Validator(json.loads(shared_file(*SARIF_SCHEMA).read_text(encoding="utf-8")))


def _mesh_dirs() -> list[Path]:
    dirs = [EXAMPLES / "shop", EXAMPLES / "bookinfo"]
    broken = EXAMPLES / "broken"
    if any(broken.rglob("*.mesh")):
        dirs.append(broken)
        dirs += sorted(d for d in broken.iterdir() if d.is_dir() and any(d.rglob("*.mesh")))
    return dirs


def _write_mesh(tmp_path: Path, files: dict[str, str]) -> Path:
    """A mesh directory of its own (a meshc.toml marks the root), with a mesh block."""
    root = tmp_path / "mesh"
    root.mkdir()
    (root / "meshc.toml").write_text("")
    (root / "0-mesh.mesh").write_text('mesh m { trust_domain "example.org" }\n')
    for name, text in files.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def _checked(path: Path):
    return check_project(load([path]))


def _errors(msgs):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in msgs]


# ---- SARIF -------------------------------------------------------------------------


@pytest.mark.parametrize("path", _mesh_dirs(), ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_sarif_validates_for_every_example(path, sarif_validator):
    checked = _checked(path)
    log = sarif_log(checked.diagnostics, checked.project.files)
    assert _errors(sarif_validator.iter_errors(log)) == []
    (run,) = log["runs"]
    assert len(run["results"]) == len(checked.diagnostics)
    rules = run["tool"]["driver"]["rules"]
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        for loc in res.get("locations", []):
            art = loc["physicalLocation"]["artifactLocation"]
            assert art["uriBaseId"] == "%SRCROOT%" and not art["uri"].startswith(("/", "file:"))


def test_sarif_rule_metadata_covers_the_whole_catalogue(sarif_validator):
    log = sarif_log([], {})
    assert _errors(sarif_validator.iter_errors(log)) == []
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "meshc" and driver["version"] and driver["informationUri"].startswith("https://")
    cat = catalogue()
    assert [r["id"] for r in driver["rules"]] == list(cat)
    levels = {"error": "error", "warning": "warning", "info": "note"}
    for rule in driver["rules"]:
        info = cat[rule["id"]]
        assert rule["name"] == info.name
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert rule["help"]["text"] and rule["help"]["markdown"]
        assert rule["defaultConfiguration"]["level"] == levels[info.severity.value]


def test_rule_ids_are_the_stable_codes():
    # Codes are a public interface (SARIF baselines, suppressions): these must never change meaning.
    pinned = {"MP001": "unreadable-input", "MP002": "syntax-error", "MP101": "unknown-service",
              "MP103": "duplicate-name", "MP201": "split-weights", "MP301": "retry-exceeds-timeout"}
    rules = {r["id"]: r["name"] for r in sarif_log([], {})["runs"][0]["tool"]["driver"]["rules"]}
    assert {k: rules.get(k) for k in pinned} == pinned
    assert all(re.fullmatch(r"MP\d{3}", k) for k in rules)


def test_sarif_columns_count_utf16_units_after_non_ascii(tmp_path, sarif_validator):
    # U+1F600 is two UTF-16 units but one code point: the unknown version after it
    # starts one SARIF column later than its code-point column.
    line = 'route s { header "x-ü" = "😀é" -> v9 }'
    root = _write_mesh(tmp_path, {"a.mesh": 'service s {\n  port 80 http\n  version v1\n}\n' + line + "\n"
                                  "allow * -> s\n"})
    checked = _checked(root)
    assert "MP102" in codes(checked.diagnostics)
    log = sarif_log(checked.diagnostics, checked.project.files)
    assert _errors(sarif_validator.iter_errors(log)) == []
    assert log["runs"][0]["columnKind"] == "utf16CodeUnits"
    (res,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "MP102"]
    region = res["locations"][0]["physicalLocation"]["region"]
    cp_col = line.index("v9") + 1
    assert (region["startLine"], region["startColumn"], region["endColumn"]) == (5, cp_col + 1, cp_col + 3)
    assert region["snippet"]["text"] == "v9"
    ctx = res["locations"][0]["physicalLocation"]["contextRegion"]
    assert ctx["snippet"]["text"] == line


def test_sarif_uris_are_relative_to_the_repository(tmp_path):
    root = _write_mesh(tmp_path, {"a.mesh": "allow ghost -> s\n", "sub_b.mesh": "service s { port 80 http }\n"})
    (tmp_path / ".git").mkdir()  # the repository top-level is above the mesh root
    checked = _checked(root)
    log = sarif_log(checked.diagnostics, checked.project.files)
    run = log["runs"][0]
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base == tmp_path.resolve().as_uri() + "/"
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"] for loc in r.get("locations", [])}
    assert "mesh/a.mesh" in uris and all(u.startswith("mesh/") for u in uris)


def test_sarif_labels_fixes_witness_and_spanless(tmp_path, sarif_validator):
    root = _write_mesh(tmp_path, {"a.mesh": "service s { port 80 http }\nservice s { port 81 http }\nservce t { }\n"})
    checked = _checked(root)
    src = next(iter(checked.project.files.values()))
    extra = [
        diag("MP001", "`nowhere.mesh` does not exist"),
        Diagnostic("MP101", Severity.INFO, "a finding with a witness", src.span(0, 7),
                   witness={"request": "a -> s GET /", "path": ["a", "s"]}),
    ]
    diags = checked.diagnostics + extra
    log = sarif_log(diags, checked.project.files)
    assert _errors(sarif_validator.iter_errors(log)) == []
    results = {r["ruleId"]: r for r in log["runs"][0]["results"]}
    dup = results["MP103"]
    (rel,) = dup["relatedLocations"]
    assert rel["physicalLocation"]["region"]["startLine"] == 1 and rel["message"]["text"]
    typo = results["MP009"]
    (fix,) = typo["fixes"]
    (change,) = fix["artifactChanges"]
    (rep,) = change["replacements"]
    assert rep["insertedContent"]["text"] == "service"
    assert rep["deletedRegion"]["startLine"] == 3 and rep["deletedRegion"]["startColumn"] == 1
    assert "locations" not in results["MP001"]
    assert results["MP001"]["level"] == "error"
    witnessed = [r for r in log["runs"][0]["results"] if r.get("properties", {}).get("witness")]
    assert witnessed[0]["properties"]["witness"]["path"] == ["a", "s"] and witnessed[0]["level"] == "note"


def test_sarif_from_the_cli(tmp_path, sarif_validator):
    root = _write_mesh(tmp_path, {"a.mesh": "service s { port 80 http }\nallow ghost -> s\n"})
    proc = run_meshc("check", str(root), "--format", "sarif", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    log = json.loads(proc.stdout)
    assert _errors(sarif_validator.iter_errors(log)) == []
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["MP101"]
    ok = run_meshc("check", "examples/shop", "--format", "sarif")
    assert ok.returncode == 0 and _errors(sarif_validator.iter_errors(json.loads(ok.stdout))) == []


# ---- GitHub annotations ------------------------------------------------------------


def _unescape(s: str, prop: bool) -> str:
    """What the Actions runner does to a workflow command's parts."""
    if prop:
        s = s.replace("%3A", ":").replace("%2C", ",")
    return s.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _parse_command(line: str) -> tuple[str, dict[str, str], str]:
    m = re.fullmatch(r"::(\w+) ([^:]*)::(.*)", line, re.S)
    assert m, line
    props = dict(p.split("=", 1) for p in m.group(2).split(","))
    return m.group(1), {k: _unescape(v, True) for k, v in props.items()}, _unescape(m.group(3), False)


HOSTILE = ["100% sure: a, b", "two\nlines\r\nand %0A literal", "::error::injected", "50%25 %3A %2C", "ü😀"]


@pytest.mark.parametrize("message", HOSTILE)
def test_github_escaping_round_trips(message):
    file = "dir, with: odd%chars/a.mesh"
    d = Diagnostic("MP101", Severity.WARNING, message, Span(file, 3, 5, 3, 9, 20, 24), help="fix: it, 100%")
    line = annotation(d)
    assert "\n" not in line and "\r" not in line
    kind, props, text = _parse_command(line)
    assert kind == "warning"
    assert props == {"file": file, "line": "3", "col": "5", "endLine": "3", "endColumn": "9", "title": "MP101"}
    assert text == f"{message}\nhelp: fix: it, 100%\nsee: https://meshpolicy.dev/diagnostics/MP101"


def test_github_levels_and_spanless():
    span = Span("a.mesh", 1, 1, 1, 2, 0, 1)
    kinds = [_parse_command(annotation(Diagnostic("MP101", sev, "m", span)))[0] for sev in Severity]
    assert kinds == ["error", "warning", "notice"]
    kind, props, _ = _parse_command(annotation(diag("MP001", "`x` does not exist")))
    assert kind == "error" and props == {"title": "MP001"}


def test_github_from_the_cli(tmp_path):
    root = _write_mesh(tmp_path, {"a.mesh": "service s { port 80 http }\nallow ghost -> s\nallow * -> s\n"})
    proc = run_meshc("check", str(root), "--format", "github", cwd=tmp_path)
    assert proc.returncode == 1
    parsed = [_parse_command(ln) for ln in proc.stdout.splitlines()]
    assert [(k, p["title"], p["file"], p["line"]) for k, p, _ in parsed] == [("error", "MP101", "mesh/a.mesh", "2")]


# ---- JSON --------------------------------------------------------------------------


def test_json_from_the_cli(tmp_path):
    root = _write_mesh(tmp_path, {"a.mesh": "service s { port 80 http }\nservice s { port 81 http }\nallow * -> s\n"})
    proc = run_meshc("check", str(root), "--format", "json", cwd=tmp_path)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["version"] == 1 and doc["tool"]["name"] == "meshc"
    (d,) = doc["diagnostics"]
    assert (d["code"], d["name"], d["severity"]) == ("MP103", "duplicate-name", "error")
    assert d["span"] == {"file": "mesh/a.mesh", "line": 2, "column": 9, "end_line": 2, "end_column": 10}
    assert d["labels"][0]["span"]["line"] == 1
    assert doc["summary"] == {"errors": 1, "warnings": 0, "infos": 0, "suppressed": 0} and doc["suppressed"] == []
    clean = json.loads(run_meshc("check", "examples/bookinfo", "--format", "json").stdout)
    assert clean["summary"]["errors"] == 0


@pytest.mark.parametrize("fmt", ["json", "sarif", "github", "text"])
def test_quiet_keeps_errors_only(fmt):
    span = Span("a.mesh", 1, 1, 1, 2, 0, 1)
    diags = [Diagnostic("MP101", Severity.ERROR, "e", span), Diagnostic("MP104", Severity.WARNING, "w", span)]
    out = io.StringIO()
    render(fmt, diags, {}, out, quiet=True)
    text = out.getvalue()
    if fmt == "json":
        assert [d["code"] for d in json.loads(text)["diagnostics"]] == ["MP101"]
    elif fmt == "sarif":
        assert [r["ruleId"] for r in json.loads(text)["runs"][0]["results"]] == ["MP101"]
    else:
        assert "MP101" in text and "MP104" not in text


# ---- text --------------------------------------------------------------------------


def _text(diags, sources, **opts) -> str:
    out = io.StringIO()
    render("text", diags, sources, out, **opts)
    return out.getvalue()


def test_text_has_no_ansi_unless_forced(tmp_path, monkeypatch):
    root = _write_mesh(tmp_path, {"a.mesh": "allow ghost -> s\nservice s { port 80 http }\n"})
    checked = _checked(root)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert not ANSI.search(_text(checked.diagnostics, checked.project.files))  # not a terminal
    assert ANSI.search(_text(checked.diagnostics, checked.project.files, color=True))

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    tty = Tty()
    render("text", checked.diagnostics, checked.project.files, tty)
    assert "MP101" in tty.getvalue() and not ANSI.search(tty.getvalue())
    monkeypatch.delenv("NO_COLOR")
    tty = Tty()
    render("text", checked.diagnostics, checked.project.files, tty)
    assert ANSI.search(tty.getvalue())
    proc = run_meshc("check", str(root), cwd=tmp_path)
    assert proc.returncode == 1 and "MP101" in proc.stdout and not ANSI.search(proc.stdout + proc.stderr)


def test_text_no_colour_on_a_dumb_terminal(tmp_path, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    d = Diagnostic("MP101", Severity.ERROR, "e", Span("a.mesh", 1, 1, 1, 2, 0, 1))
    monkeypatch.delenv("NO_COLOR", raising=False)
    for term, coloured in (("dumb", False), ("unknown", False), ("xterm-256color", True)):
        monkeypatch.setenv("TERM", term)
        tty = Tty()
        render("text", [d], {}, tty)
        assert bool(ANSI.search(tty.getvalue())) is coloured, term
    monkeypatch.setenv("TERM", "dumb")
    assert ANSI.search(_text([d], {}, color=True))  # --color still forces it


def test_text_shows_control_characters_visibly_everywhere():
    # ESC, CR, BEL and a C1 CSI in every field that reaches the terminal
    nasty = "x\x1b[2J\r\x07\x9by"
    src = SourceFile(f"dir{nasty}/a.mesh", f"allow {nasty} -> s\n")
    span = src.span(6, 6 + len(nasty))
    d = Diagnostic("MP101", Severity.ERROR, f"unknown {nasty}", span,
                   labels=[Label(span, f"label {nasty}"), Label(Span(f"other{nasty}", 1, 1, 1, 2, 0, 1), nasty)],
                   help=f"help {nasty}", notes=[f"note {nasty}"], witness={"request": f"GET /{nasty}"})
    out = _text([d], {src.path: src}, color=False)
    assert not any(ord(c) < 32 and c != "\n" or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)
    assert out.count("x␛[2J␍␇\ufffdy") >= 7  # message, path, source line, label, note, help, witness
    # carets still sit under the span: one cell per control character
    lines = out.splitlines()
    quoted = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("1 |"))
    assert lines[quoted + 1].index("^") == lines[quoted].index("x␛")


@pytest.mark.parametrize("prefix", ["allow ", "allow\t", 'allow  ', "allow \t "])
def test_text_carets_sit_under_the_span(prefix):
    text = f"# 😀 wide 字\n{prefix}ghost -> s\n"
    src = SourceFile("a.mesh", text)
    start = text.index("ghost")
    d = diag("MP101", "unknown", src.span(start, start + 5),
             labels=[Label(src.span(2, 3), "an emoji")])
    out = _text([d], {"a.mesh": src}).splitlines()
    quoted = next(i for i, ln in enumerate(out) if ln.lstrip().startswith("2 |"))
    code, carets = out[quoted], out[quoted + 1]
    assert carets.index("^") == code.index("ghost") and carets.rstrip().endswith("^^^^^")
    assert carets.count("^") == 5
    # the label's caret sits under the emoji on line 1, which takes two cells
    lab = next(i for i, ln in enumerate(out) if ln.lstrip().startswith("1 |"))
    assert out[lab + 1].index("^") == out[lab].index("😀") and "^^ an emoji" in out[lab + 1]


def test_text_quiet_and_summary():
    span = Span("a.mesh", 1, 1, 1, 2, 0, 1)
    diags = [Diagnostic("MP101", Severity.ERROR, "e", span), Diagnostic("MP104", Severity.WARNING, "w", span)]
    full = _text(diags, {})
    assert "MP104" in full and "1 error, 1 warning" in full
    quiet = _text(diags, {}, quiet=True)
    assert "MP101" in quiet and "MP104" not in quiet


# ---- docs/language.md --------------------------------------------------------------

LANGUAGE_MD = ROOT / "docs" / "language.md"


def _mesh_blocks() -> list[tuple[int, str]]:
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```mesh\n(.*?)^```", text, re.S | re.M)]


def test_language_reference_examples_parse():
    blocks = _mesh_blocks()
    assert len(blocks) >= 20
    bad = []
    for line, block in blocks:
        _, diags = parse_text(block, f"language.md:{line}")
        bad += [(line, d.code, d.span.line if d.span else 0, d.message) for d in diags]
    assert bad == []


def test_language_reference_covers_every_statement_keyword():
    text = LANGUAGE_MD.read_text(encoding="utf-8")
    blocks = "\n".join(b for _, b in _mesh_blocks())
    grammar = (ROOT / "grammar" / "mesh.lark").read_text(encoding="utf-8")
    keywords = set(re.findall(r'"([a-z_0-9]+)"', grammar)) - {"h", "m", "s", "ms"}
    missing = sorted(k for k in keywords if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", blocks))
    assert missing == []
    for section in ["Output formats", "Files and projects", "meshc.toml"]:
        assert section in text


# ---- bench/gen.py ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gen():
    sys.path.insert(0, str(ROOT))
    try:
        from bench import gen as module
    finally:
        sys.path.remove(str(ROOT))
    return module


@pytest.mark.parametrize("n", [4, 60, 400])
def test_generated_meshes_check_without_errors(gen, n, tmp_path):
    files = gen.generate(n, seed=7)
    assert files == gen.generate(n, seed=7)
    assert files != gen.generate(n, seed=8)
    root = gen.write(files, tmp_path / "g")
    checked = _checked(root)
    assert [d for d in checked.diagnostics if d.is_error] == []
    mesh = checked.mesh
    assert len(mesh.services) == n and len(mesh.files) >= 3
    assert mesh.assertions and mesh.auth_rules
    if n >= 60:
        callers: dict[str, int] = {}
        for r in mesh.auth_rules:
            callers[r.target.name] = callers.get(r.target.name, 0) + 1
        counts = sorted(callers.values(), reverse=True)
        assert counts[0] >= 4 * counts[len(counts) // 2]  # a few hubs take many callers
        assert {a.kind for a in mesh.assertions} >= {"never", "only", "can"}
        assert any(len(r.rules) > 1 for r in mesh.routes) and mesh.rate_limits


def test_generated_assertions_hold(gen, tmp_path):
    """The generator writes assertions from its own graph; the verifier must
    prove every one (a refutation means gen.py's bookkeeping is wrong)."""
    verify = pytest.importorskip("meshpolicy.verify")
    root = gen.write(gen.generate(60, seed=3), tmp_path / "g")
    checked = _checked(root)
    config = {**checked.project.config, "verify": {**checked.project.config.get("verify", {}), "verbose": True}}
    results = [d for d in verify.run(checked.mesh, config) if d.code.startswith("MP6")]
    assert len(checked.mesh.assertions) >= 5
    assert sorted(d.code for d in results) == ["MP603"] * len(checked.mesh.assertions)
