"""Machine fixes (the quick fixes editors apply, and the `fixes` of JSON and
SARIF output): every fix of every code fixture, applied on its own, removes
its finding and brings in no new one."""

from __future__ import annotations

import shlex
import shutil
from collections import Counter
from pathlib import Path

import pytest

from meshpolicy.diagnostics import Diagnostic, Fix, has_errors
from meshpolicy.pipeline import check_project
from meshpolicy.project import load

FIXTURES = Path(__file__).parent / "fixtures" / "codes"
HAS_BAD = sorted(p.name for p in FIXTURES.iterdir() if (p / "bad.mesh").is_file())


def _findings(folder: Path, command: list[str]) -> list[Diagnostic]:
    """What the fixture's command (check by default) reports on folder/bad.mesh."""
    checked = check_project(load([folder / "bad.mesh"]))
    diags = list(checked.diagnostics)
    if not checked.ok or has_errors(diags) or not command:
        return diags
    if command[0] == "verify":
        from meshpolicy.verify import run

        diags += run(checked.mesh, checked.project.config)
    elif command[0] == "compile" and "--target" in command:
        from meshpolicy.compile import CompileOptions, compile_mesh

        target = command[command.index("--target") + 1]
        settings = checked.project.config.get("compile", {}).get(target, {})
        diags += compile_mesh(checked.mesh, target, CompileOptions(settings=settings))[1]
    return diags


def _apply(text: str, fix: Fix) -> str:
    return text[: fix.span.start] + fix.replacement + text[fix.span.end:]


def _fixture_folder(code: str, tmp_path: Path) -> tuple[Path, list[str]]:
    src = FIXTURES / code
    shutil.copy(src / "bad.mesh", tmp_path / "bad.mesh")
    for toml in ("meshc.toml", "bad.toml"):
        if (src / toml).is_file():
            shutil.copy(src / toml, tmp_path / "meshc.toml")
    if not (tmp_path / "meshc.toml").exists():
        (tmp_path / "meshc.toml").write_text("")
    command = shlex.split((src / "command").read_text()) if (src / "command").is_file() else []
    return tmp_path, command


@pytest.mark.parametrize("code", HAS_BAD)
def test_every_fix_of_the_fixture_removes_its_finding_and_adds_none(code: str, tmp_path: Path):
    folder, command = _fixture_folder(code, tmp_path)
    bad = folder / "bad.mesh"
    text = bad.read_text(encoding="utf-8", errors="surrogateescape")
    before = _findings(folder, command)
    fixed = [(d, f) for d in before for f in d.fixes]
    for d, fix in fixed:
        assert fix.span.file == str(bad.resolve()) or Path(fix.span.file).resolve() == bad.resolve()
        bad.write_text(_apply(text, fix), encoding="utf-8")
        after = _findings(folder, command)
        expected = Counter(x.code for x in before)
        expected[d.code] -= 1
        new = Counter(x.code for x in after) - expected
        assert not new, (fix, bad.read_text(), [(x.code, x.message) for x in after])
    bad.write_text(text, encoding="utf-8", errors="surrogateescape")


def test_retry_zero_becomes_retry_off_in_services_and_route_rules(tmp_path: Path):
    """MP208's fix replaces the count (and the options `retry off` does not
    take), wherever the retry is: a service's span starts at `retry`, a
    route rule's at the count."""
    text = ('mesh m { trust_domain "example.org" }\n'
            "service web {\n  port 8080 http\n  retry 0 per_try 2s on 5xx\n"
            '  version v1 { version: "v1" }\n}\n'
            "route web {\n  GET /x -> v1 retry 0\n  * -> v1 retry 0 per_try 1s\n}\n"
            "allow * -> web\n")
    (tmp_path / "meshc.toml").write_text("")
    (tmp_path / "a.mesh").write_text(text)
    diags = [d for d in check_project(load([tmp_path / "a.mesh"])).diagnostics if d.code == "MP208"]
    assert len(diags) == 3 and all(len(d.fixes) == 1 for d in diags)
    out = text
    for fix in sorted((d.fixes[0] for d in diags), key=lambda f: -f.span.start):
        out = _apply(out, fix)
    assert "  retry off\n" in out and "GET /x -> v1 retry off\n" in out and "* -> v1 retry off\n" in out
    (tmp_path / "a.mesh").write_text(out)
    assert not check_project(load([tmp_path / "a.mesh"])).diagnostics
