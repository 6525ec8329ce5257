"""`meshc compile -o DIR`: only a directory meshc wrote is replaced, atomically;
`--verify` writes nothing when verification fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshpolicy.compile import Output, write_atomic
from meshpolicy.compile import output_dir

from .conftest import ROOT, run_meshc

FIXTURES = ROOT / "tests" / "fixtures"

MESH = """
mesh demo { trust_domain "example.org" }
service web { namespace shop; port 8080 http }
service api { namespace shop; port 8080 http }
allow web -> api GET
"""


@pytest.fixture
def mesh_dir(tmp_path) -> Path:
    d = tmp_path / "policy"
    d.mkdir()
    (d / "demo.mesh").write_text(MESH)
    return d


def compile_to(mesh_dir: Path, out: Path, *extra: str):
    return run_meshc("compile", str(mesh_dir), "--target", "meshproxy", "-o", str(out), "--format", "json", *extra)


def codes(r) -> list[str]:
    return [d["code"] for d in json.loads(r.stdout)["diagnostics"]] if r.stdout.strip() else []


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_checkout_is_refused_and_left_alone(mesh_dir, tmp_path):
    out = tmp_path / "repo"
    (out / ".git").mkdir(parents=True)
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (out / "notes.txt").write_text("mine\n")
    before = tree(out)
    r = compile_to(mesh_dir, out)
    assert r.returncode == 2 and codes(r) == ["MP704"], r.stdout + r.stderr
    assert tree(out) == before
    assert sorted(os.listdir(tmp_path)) == ["policy", "repo"]  # no temporary folder left


def test_new_empty_and_own_output_are_replaced(mesh_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "deep", empty):
        for _ in range(2):  # the second run replaces meshc's own output
            r = compile_to(mesh_dir, out)
            assert r.returncode == 0, r.stdout + r.stderr
        listed = json.loads((out / output_dir.MANIFEST).read_text())["files"]
        assert set(listed) == set(tree(out)) - {output_dir.MANIFEST} and listed


@pytest.mark.parametrize("change", ["add", "edit", "symlink"])
def test_a_touched_output_is_refused_unless_forced(mesh_dir, tmp_path, change):
    out = tmp_path / "out"
    assert compile_to(mesh_dir, out).returncode == 0
    first = sorted(p for p in out.rglob("*.json"))[0]
    if change == "add":
        (out / "added-by-hand.yaml").write_text("x\n")
    elif change == "edit":
        first.write_text(first.read_text() + " ")
    else:
        (out / "link").symlink_to(tmp_path)
    before = tree(out)
    r = compile_to(mesh_dir, out)
    assert r.returncode == 2 and codes(r) == ["MP704"], r.stdout
    assert tree(out) == before
    r = compile_to(mesh_dir, out, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "added-by-hand.yaml" not in os.listdir(out) and not (out / "link").is_symlink()


def test_force_still_never_replaces_mesh_sources(mesh_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "other.mesh").write_text(MESH)
    r = compile_to(mesh_dir, out, "--force")
    assert r.returncode == 2 and (out / "other.mesh").exists()


def test_unusable_output_paths_exit_2_with_a_diagnostic(mesh_dir, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    f = tmp_path / "file"
    f.write_text("x")
    r = compile_to(mesh_dir, a)
    assert r.returncode == 2 and codes(r) == ["MP705"], r.stdout + r.stderr
    r = compile_to(mesh_dir, f)  # a regular file is already a usage error of the option
    assert r.returncode == 2 and "is a file" in r.stderr and "Traceback" not in r.stderr
    assert f.read_text() == "x"


@pytest.mark.parametrize("code", ["MP704", "MP705"])
def test_fixture_commands(code, tmp_path):
    fixture = FIXTURES / "codes" / code
    args = (fixture / "command").read_text().split()
    d = tmp_path / "m"
    d.mkdir()
    (d / "x.mesh").write_text((fixture / "bad.mesh").read_text())
    r = run_meshc(*args, str(d), "--format", "json")
    assert r.returncode == 2 and code in codes(r), r.stdout + r.stderr


def test_a_symlinked_output_keeps_its_link(mesh_dir, tmp_path):
    real = tmp_path / "volume" / "out"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    for _ in range(2):
        assert compile_to(mesh_dir, link).returncode == 0
    assert link.is_symlink() and output_dir.MANIFEST in os.listdir(real)
    assert sorted(os.listdir(tmp_path / "volume")) == ["out"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux only")
def test_the_swap_is_an_exchange_so_the_directory_never_goes_missing(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "A").write_text("a")
    (b / "B").write_text("b")
    assert output_dir._exchange(a, b)
    assert os.listdir(a) == ["B"] and os.listdir(b) == ["A"]
    # A watcher in another process never sees the output directory missing.
    out = tmp_path / "out"
    write_atomic(out, [Output("x.json", "{}")])
    watcher = subprocess.Popen([sys.executable, "-c", (
        "import os, sys\n"
        "out, stop = sys.argv[1:]\n"
        "while not os.path.exists(stop):\n"
        "    if not os.path.isdir(out):\n"
        "        print('missing')\n"
        "        break\n"
    ), str(out), str(tmp_path / "stop")], stdout=subprocess.PIPE, text=True)
    try:
        for i in range(300):
            assert write_atomic(out, [Output("x.json", f'{{"i": {i}}}')]) == []
    finally:
        (tmp_path / "stop").write_text("")
        seen = watcher.communicate(timeout=30)[0]
    assert seen == ""


def test_leftovers_of_killed_runs_are_cleaned_and_nothing_else(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = tmp_path
    stale = [parent / f".out.meshc-new-{dead.pid}-0badc0de", parent / f".out.meshc-old-{dead.pid}-deadbeef"]
    kept = [parent / f".out.meshc-new-{os.getpid()}-00000000",  # a run still going (this one)
            parent / f".other.meshc-new-{dead.pid}-0badc0de",  # beside another output
            parent / ".out.new-abc", parent / f"out.meshc-new-{dead.pid}-0badc0de"]  # not meshc's names
    for d in stale + kept:
        d.mkdir()
        (d / "f").write_text("x")
    assert write_atomic(parent / "out", [Output("a.json", "{}")]) == []
    assert not any(d.exists() for d in stale)
    assert all((d / "f").exists() for d in kept)


def test_verify_flag_writes_nothing_when_an_assertion_fails(tmp_path):
    fixture = FIXTURES / "codes" / "MP601"
    d = tmp_path / "m"
    d.mkdir()
    (d / "x.mesh").write_text((fixture / "bad.mesh").read_text())
    out = tmp_path / "out"
    r = compile_to(d, out, "--verify")
    assert r.returncode == 1 and "MP601" in codes(r), r.stdout + r.stderr
    assert not out.exists()
    # without --verify the same policy compiles (the assertion is the verifier's)
    assert compile_to(d, out).returncode == 0
    (d / "x.mesh").write_text((fixture / "good.mesh").read_text())
    r = compile_to(d, out, "--verify")
    assert r.returncode == 0 and not any(c.startswith("MP6") for c in codes(r)), r.stdout


def test_compile_shows_progress_only_on_a_terminal(tmp_path):
    from .test_cli_ergonomics import _big_mesh, _env, _run_in_pty

    (tmp_path / "big").mkdir()
    mesh = _big_mesh(tmp_path / "big")
    out = tmp_path / "out"
    code, tty, stdout = _run_in_pty(["compile", str(mesh), "--target", "meshproxy", "-o", str(out)], _env(), "stderr")
    # rich redraws 10 times a second; its last frame shows the last step
    assert code == 0 and "writing" in tty and "━" in tty, tty
    assert "━" not in stdout and "wrote" in stdout
    r = run_meshc("compile", str(mesh), "--target", "meshproxy", "-o", str(out))  # stderr a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""


def test_an_empty_or_unreadable_subfolder_is_not_meshcs(mesh_dir, tmp_path):
    out = tmp_path / "out"
    assert compile_to(mesh_dir, out).returncode == 0
    (out / "kept-by-hand").mkdir()
    r = compile_to(mesh_dir, out)
    assert r.returncode == 2 and codes(r) == ["MP704"] and (out / "kept-by-hand").is_dir()
    other = tmp_path / "other"
    (other / "locked").mkdir(parents=True)
    (other / "locked" / "secret").write_text("x")
    (other / "locked").chmod(0)
    try:
        r = compile_to(mesh_dir, other)
        assert r.returncode == 2 and codes(r) == ["MP704"], r.stdout
    finally:
        (other / "locked").chmod(0o755)
    assert (other / "locked" / "secret").read_text() == "x"
