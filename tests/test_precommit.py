"""The pre-commit hooks, run by the real pre-commit framework.

`pre-commit try-repo` installs this repository (HEAD plus tracked,
uncommitted changes) into a fresh virtualenv, as a user's pre-commit would,
and runs the `meshc-verify` hook in a temporary git repository holding two
meshes: a clean one and a broken one. The three runs go in parallel, once
per session. try-repo always builds its environment in a throwaway store,
so to keep the test near a minute the virtualenvs see this interpreter's
site-packages (VIRTUALENV_SYSTEM_SITE_PACKAGES): pip then only builds and
installs meshpolicy itself instead of downloading every dependency.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, ROOT

BROKEN_FROM = "allow reviews -> ratings GET /ratings/*"
BROKEN_TO = "allow reviews -> ratngs GET /ratings/*"


def _git(*args: str, cwd: Path, env: dict) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def _env(base: Path) -> dict:
    """A git author, no colour, and pre-commit's cache under base."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(NO_COLOR="1", PRE_COMMIT_HOME=str(base / "cache"), VIRTUALENV_SYSTEM_SITE_PACKAGES="true",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.org", PRE_COMMIT_COLOR="never")
    return env


@pytest.fixture(scope="session")
def hook_runs(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    base = tmp_path_factory.mktemp("precommit")
    repo = base / "repo"
    (repo / "clean").mkdir(parents=True)
    shutil.copy(EXAMPLES / "bookinfo" / "bookinfo.mesh", repo / "clean" / "bookinfo.mesh")
    shutil.copy(EXAMPLES / "bookinfo" / "meshc.toml", repo / "clean" / "meshc.toml")
    shutil.copytree(repo / "clean", repo / "broken")
    broken = repo / "broken" / "bookinfo.mesh"
    text = broken.read_text()
    assert BROKEN_FROM in text
    broken.write_text(text.replace(BROKEN_FROM, BROKEN_TO))
    line = text[: text.index(BROKEN_FROM)].count("\n") + 1
    env = _env(base)
    _git("init", "-q", ".", cwd=repo, env=env)
    _git("add", ".", cwd=repo, env=env)
    _git("commit", "-q", "-m", "two meshes", cwd=repo, env=env)
    runs = {
        "clean": ["--files", "clean/bookinfo.mesh"],
        "broken": ["--files", "broken/bookinfo.mesh"],
        "all": ["--all-files"],
    }
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "meshc-verify", *args],
                               cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, args in runs.items()
    }
    out = {}
    for name, p in procs.items():
        try:
            stdout, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, _ = p.communicate()
        out[name] = (p.returncode, stdout)
    return out, line


def test_clean_mesh_passes(hook_runs):
    runs, _ = hook_runs
    code, out = runs["clean"]
    assert code == 0, out
    assert re.search(r"meshc verify\.+Passed", out), out


def test_broken_mesh_fails_with_location(hook_runs):
    runs, line = hook_runs
    code, out = runs["broken"]
    assert code == 1, out
    assert re.search(r"meshc verify\.+Failed", out), out
    assert f"broken/bookinfo.mesh:{line}:" in out and "MP101" in out, out
    assert "Traceback" not in out


def test_all_files_reports_the_broken_mesh(hook_runs):
    runs, line = hook_runs
    code, out = runs["all"]
    assert code == 1, out
    assert "belong to different meshes" not in out, out  # each mesh is checked on its own
    assert f"broken/bookinfo.mesh:{line}:" in out, out
    assert f"clean/bookinfo.mesh:{line}:" not in out, out


def test_a_commit_that_only_deletes_a_file(tmp_path):
    """pre-commit passes no deleted files: meshc-verify is skipped, so
    meshc-verify-all exists to catch the mesh such a commit breaks."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "meshc.toml").write_text("")
    (repo / "m" / "web.mesh").write_text("service web { port 80 http }\nallow api -> web\n")
    (repo / "m" / "api.mesh").write_text("service api { port 80 http }\nallow * -> api\n")
    env = _env(tmp_path)
    _git("init", "-q", ".", cwd=repo, env=env)
    _git("add", ".", cwd=repo, env=env)
    _git("commit", "-q", "-m", "a mesh", cwd=repo, env=env)
    _git("rm", "-q", "m/api.mesh", cwd=repo, env=env)  # web's caller is gone: MP101
    out = {}
    for hook in ("meshc-verify", "meshc-verify-all"):
        p = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), hook], cwd=repo, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        out[hook] = (p.returncode, p.stdout)
    code, text = out["meshc-verify"]
    assert code == 0 and re.search(r"meshc verify\.+\(no files to check\)Skipped", text), text
    code, text = out["meshc-verify-all"]
    assert code == 1 and re.search(r"meshc verify \(every mesh\)\.+Failed", text), text
    assert "m/web.mesh:2:" in text and "MP101" in text, text
