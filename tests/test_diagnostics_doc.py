"""The diagnostics catalogue, its fixtures, docs/diagnostics.md and `meshc explain` agree."""

from __future__ import annotations

import pytest

from meshpolicy.codes import catalogue
from meshpolicy.codes.docgen import REGENERATE, grouped, render, section

from .conftest import ROOT, run_meshc

FIXTURES = ROOT / "tests" / "fixtures" / "codes"
DOC = ROOT / "docs" / "diagnostics.md"


def test_every_code_has_a_fixture_pair():
    def has_pair(code: str, ext: str) -> bool:
        return (FIXTURES / code / f"bad.{ext}").is_file() and (FIXTURES / code / f"good.{ext}").is_file()

    # the import codes (stage "import") read Kubernetes YAML: their pair is bad.yaml and good.yaml
    missing = [code for code, info in catalogue().items() if not has_pair(code, "yaml" if info.stage == "import"
                                                                           else "mesh")]
    assert not missing, f"codes without tests/fixtures/codes/<CODE>/bad.mesh and good.mesh (.yaml): {missing}"


def test_every_fixture_dir_is_a_catalogued_code():
    assert not [p.name for p in FIXTURES.iterdir() if p.is_dir() and p.name not in catalogue()]


def test_doc_is_up_to_date():
    expected = render()
    actual = DOC.read_text(encoding="utf-8") if DOC.is_file() else ""
    assert actual == expected, f"docs/diagnostics.md is stale; regenerate it with `{REGENERATE}`"


def test_doc_has_every_code_grouped_by_stage():
    doc = render()
    stages = grouped()
    assert sum(len(infos) for _, infos in stages) == len(catalogue())
    firsts = [infos[0].code for _, infos in stages]
    assert firsts == sorted(firsts)
    for _, infos in stages:
        assert len({i.stage for i in infos}) == 1
    for code, info in catalogue().items():
        assert f"### {code} {info.name}\n" in doc
        assert info.help in doc and info.summary in doc


def test_section_shows_fixtures_readme_and_command(tmp_path):
    info = catalogue()["MP301"]
    d = tmp_path / "MP301"
    d.mkdir()
    (d / "bad.mesh").write_text("service bad {}\n")
    (d / "good.mesh").write_text("service good {}\n")
    (d / "README.md").write_text("Why it matters.\n")
    (d / "command").write_text("compile --target istio\n")
    text = "\n".join(section(info, tmp_path))
    assert text.index("Why it matters.") < text.index("service bad") < text.index("service good")
    assert "`meshc compile --target istio`" in text
    assert "No example yet" in "\n".join(section(catalogue()["MP302"], tmp_path / "none"))


def test_explain_prints_the_catalogue_entry():
    info = catalogue()["MP301"]
    for query in ("MP301", "mp301", "301", info.name):
        proc = run_meshc("explain", query)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        for part in (info.code, info.name, info.severity.value, info.summary, info.help):
            assert part in out


@pytest.mark.parametrize("query, suggested", [("MP3011", "MP301"), ("retry-exceds-timeout", "retry-exceeds-timeout"),
                                              ("zzz", None)])
def test_explain_unknown_code_suggests_and_exits_2(query, suggested):
    proc = run_meshc("explain", query)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    if suggested:
        assert f"`{suggested}`" in proc.stderr
