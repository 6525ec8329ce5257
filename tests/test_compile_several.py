"""`meshc compile --target a,b` / `--target all`: one read, check and plan,
each target's files byte-identical to its own single-target compile, under
a folder per target, written all or nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.compile import several
from meshpolicy.compile.several import compile_targets, parse_targets
from meshpolicy.pipeline import check_project
from meshpolicy.project import load

from .conftest import ROOT, run_meshc

EXAMPLES = ROOT / "examples"


def tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != ".meshc-output"}


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_several_targets_write_each_targets_own_output(tmp_path, example):
    src = EXAMPLES / example
    r = run_meshc("compile", str(src), "--target", "istio,envoy", "-o", str(tmp_path / "both"), "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    both = tree(tmp_path / "both")
    for t in ("istio", "envoy"):
        one = run_meshc("compile", str(src), "--target", t, "-o", str(tmp_path / t), "-q")
        assert one.returncode == 0, one.stdout + one.stderr
        alone = tree(tmp_path / t)
        assert alone
        assert {p[len(t) + 1:]: b for p, b in both.items() if p.startswith(f"{t}/")} == alone
    assert {p.split("/", 1)[0] for p in both} == {"istio", "envoy"}
    # one manifest for the whole directory: a later run may replace it
    listed = json.loads((tmp_path / "both" / ".meshc-output").read_text())["files"]
    assert set(listed) == set(both)
    again = run_meshc("compile", str(src), "--target", "istio,envoy", "-o", str(tmp_path / "both"), "-q")
    assert again.returncode == 0, again.stdout + again.stderr
    assert tree(tmp_path / "both") == both


def test_one_failing_target_writes_nothing(tmp_path):
    # meshproxy refuses the shop's http2/grpc ports (MP701); istio compiles it
    out = tmp_path / "out"
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "istio,meshproxy", "-o", str(out), "--format", "json")
    assert r.returncode == 1
    assert "MP701" in {d["code"] for d in json.loads(r.stdout)["diagnostics"]}
    assert not out.exists()
    # an earlier output stays as it was
    assert run_meshc("compile", str(EXAMPLES / "shop"), "--target", "istio,envoy", "-o", str(out), "-q").returncode == 0
    before = tree(out)
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "istio,meshproxy", "-o", str(out), "-q")
    assert r.returncode == 1
    assert tree(out) == before


def test_single_target_layout_is_unchanged(tmp_path):
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "istio", "-o", str(tmp_path / "o"), "-q")
    assert r.returncode == 0
    assert (tmp_path / "o" / "kustomization.yaml").is_file()
    assert not (tmp_path / "o" / "istio").exists()


@pytest.mark.parametrize("value", ["bogus", "istio,", "all,istio", ",", "istio,,envoy"])
def test_bad_target_lists_are_usage_errors(tmp_path, value):
    r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", value, "-o", str(tmp_path / "o"))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_parse_targets():
    assert parse_targets("all") == ["istio", "envoy", "meshproxy", "gateway-api", "linkerd"]
    assert parse_targets("envoy, istio,envoy") == ["envoy", "istio"]
    with pytest.raises(ValueError):
        parse_targets("istio,nope")


@pytest.fixture(scope="module")
def bench_mesh(tmp_path_factory):
    from bench.gen import generate, write

    root = write(generate(120, 3), tmp_path_factory.mktemp("mesh") / "m")
    checked = check_project(load([root]))
    assert checked.ok
    return checked.mesh, checked.project.config.get("compile", {})


@pytest.mark.parametrize("cores", [1, 2])
def test_in_process_matches_single_target_compiles(bench_mesh, monkeypatch, cores):
    """Forked (2 cores) or in order (1 core): the same files and findings as
    compile_mesh per target, which is what a single-target run writes."""
    mesh, settings = bench_mesh
    targets = ["istio", "envoy", "meshproxy", "linkerd"]
    options = {t: CompileOptions(settings=settings.get(t, {})) for t in targets}
    monkeypatch.setattr(several.os, "cpu_count", lambda: cores)
    outputs, diags = compile_targets(mesh, targets, options)
    want_out, want_diags = [], []
    for t in targets:
        outs, found = compile_mesh(mesh, t, CompileOptions(settings=settings.get(t, {})))
        want_out += [(f"{t}/{o.path}", o.content) for o in outs]
        want_diags += found
    assert [(o.path, o.content) for o in outputs] == sorted(want_out)
    assert [(d.code, d.message, d.span) for d in diags] == [(d.code, d.message, d.span) for d in want_diags]
    assert any(d.code == "MP701" for d in diags)  # linkerd refuses some of the bench mesh: still reported


def test_a_crashing_target_is_reported_not_hung(bench_mesh, monkeypatch):
    mesh, settings = bench_mesh

    def boom(*_a, **_k):
        os._exit(3)  # the child dies without answering

    monkeypatch.setattr(several, "compile_mesh", boom)
    monkeypatch.setattr(several.os, "cpu_count", lambda: 2)
    with pytest.raises(RuntimeError, match="died"):
        compile_targets(mesh, ["istio", "envoy"], {t: CompileOptions() for t in ("istio", "envoy")})
