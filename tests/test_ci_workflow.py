"""The CI workflow in docs/ci.md, run for real.

The GitHub Actions workflow is read from the docs and its steps executed in
order by a small runner that follows Actions' rules for `if:`,
`continue-on-error` and failed steps, in a temporary git repository with
two revisions of a policy (`origin/main` and the pull request). Steps that
need GitHub itself (actions from the marketplace, installing the package,
commenting) are skipped; everything that runs meshc runs, against this
checkout's meshc."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import EXAMPLES, ROOT, shared_path

DOC = ROOT / "docs" / "ci.md"
SKIPPED_RUN_STEPS = {"Install meshc", "Comment on the pull request"}  # need PyPI / GitHub
CONTEXT = {
    "github.event_name": "pull_request",
    "github.base_ref": "main",
    "github.token": "unused",
    "github.event.pull_request.number": "1",
}


def _yaml_blocks(section: str) -> list[str]:
    text = DOC.read_text()
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", part, re.S)


def workflow() -> dict:
    return yaml.safe_load(_yaml_blocks("GitHub Actions")[0])


def _expand(s: str) -> str:
    def sub(m):
        key = m.group(1).strip()
        assert key in CONTEXT, f"the test does not know ${{{{ {key} }}}}"
        return CONTEXT[key]
    return re.sub(r"\$\{\{(.*?)\}\}", sub, s)


def _condition(expr: str | None, outcomes: dict[str, str], job_failed: bool) -> bool:
    """GitHub's `if:` for the forms the workflow uses; a bare condition
    implies success(), so it is false once the job has failed."""
    if expr is None:
        return not job_failed
    expr = expr.strip()
    if expr == "always()":
        return True
    m = re.fullmatch(r"github\.event_name == '(\w+)'", expr)
    if m:
        return not job_failed and CONTEXT["github.event_name"] == m.group(1)
    m = re.fullmatch(r"steps\.(\w+)\.outcome == '(\w+)'", expr)
    if m:
        return not job_failed and outcomes.get(m.group(1)) == m.group(2)
    raise AssertionError(f"the test runner does not understand `if: {expr}`")


def run_workflow(repo: Path, bindir: Path) -> tuple[bool, list[tuple[str, str]]]:
    """Run the job's steps; returns (job failed?, [(step name, what happened)])."""
    job = workflow()["jobs"]["meshc"]
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "NO_COLOR": "1",
           "PYTHONPATH": str(ROOT)}
    outcomes: dict[str, str] = {}
    log = []
    job_failed = False
    for step in job["steps"]:
        name = step.get("name", step.get("uses", "?"))
        if not _condition(step.get("if"), outcomes, job_failed):
            log.append((name, "not run"))
            continue
        if "uses" in step or name in SKIPPED_RUN_STEPS:
            log.append((name, "skipped: needs GitHub"))
            continue
        script = _expand(step["run"])
        r = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env={**env, **step.get("env", {})},
                           capture_output=True, text=True, timeout=300)
        assert "Traceback" not in r.stderr, r.stderr
        outcome = "success" if r.returncode == 0 else "failure"
        if "id" in step:
            outcomes[step["id"]] = outcome
        if outcome == "failure" and not step.get("continue-on-error"):
            job_failed = True
        log.append((name, outcome))
    return job_failed, log


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"})


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose origin/main holds examples/bookinfo in policy/; returns (repo, bin dir)."""
    if shutil.which("git") is None or shutil.which("bash") is None:
        pytest.skip("needs git and bash")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    meshc = bindir / "meshc"  # this checkout's meshc, whatever is installed
    meshc.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m meshpolicy.cli "$@"\n')
    meshc.chmod(0o755)
    r = tmp_path / "repo"
    (r / "policy").mkdir(parents=True)
    for f in ("bookinfo.mesh", "meshc.toml"):
        shutil.copy(EXAMPLES / "bookinfo" / f, r / "policy" / f)
    _git(r, "init", "-q", "-b", "main", ".")
    _git(r, "add", ".")
    _git(r, "commit", "-q", "-m", "policy")
    _git(r, "update-ref", "refs/remotes/origin/main", "HEAD")
    _git(r, "checkout", "-q", "-b", "change")
    return r, bindir


def _edit(repo: Path, old: str, new: str) -> int:
    p = repo / "policy" / "bookinfo.mesh"
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new))
    _git(repo, "commit", "-q", "-am", "change the policy")
    return text[: text.index(old)].count("\n") + 1


def test_workflow_is_valid_and_uses_the_documented_commands():
    wf = workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "pull_request" in on and wf["permissions"]["security-events"] == "write"
    steps = wf["jobs"]["meshc"]["steps"]
    uses = [s["uses"].split("@")[0] for s in steps if "uses" in s]
    assert "github/codeql-action/upload-sarif" in uses and "actions/upload-artifact" in uses
    runs = " ".join(s.get("run", "") for s in steps)
    for cmd in ("meshc verify policy --format sarif", "meshc compile policy --target istio",
                "--format markdown", "meshc diff --git"):
        assert cmd in runs
    assert SKIPPED_RUN_STEPS <= {s.get("name") for s in steps}
    gitlab = yaml.safe_load(_yaml_blocks("GitLab CI")[0])["meshc"]
    script = "\n".join(gitlab["before_script"] + gitlab["script"])
    for cmd in ("meshc verify policy --format sarif", "meshc compile policy --target istio",
                "meshc diff --git", "--format markdown"):
        assert cmd in script
    assert set(gitlab["artifacts"]["paths"]) >= {"meshc.sarif", "out/istio", "meshc-diff.md"}


def test_pull_request_with_a_policy_change(repo):
    r, bindir = repo
    _edit(r, "allow productpage -> reviews GET /reviews/*", "allow productpage -> reviews GET, POST /reviews/*")
    failed, log = run_workflow(r, bindir)
    outcome = dict(log)
    assert not failed, log
    assert outcome["Verify"] == "success" and outcome["Compile"] == "success"
    assert outcome["Policy diff"] == "success" and outcome["Fail on policy errors"] == "not run"
    sarif = json.loads((r / "meshc.sarif").read_text())
    schema = shared_path("schemas", "sarif", "sarif-schema-2.1.0.json")
    if schema.is_file():
        jsonschema.validate(sarif, json.loads(schema.read_text()))
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["tool"]["driver"]["name"] == "meshc"
    assert not [x for x in sarif["runs"][0].get("results", []) if x.get("level") == "error"]
    out = list((r / "out" / "istio").rglob("*"))
    assert any(p.is_file() and p.stat().st_size > 0 for p in out)
    diff = (r / "meshc-diff.md").read_text()
    assert "productpage" in diff and "reviews" in diff and "POST" in diff


def test_pull_request_with_a_broken_policy(repo):
    r, bindir = repo
    line = _edit(r, "allow reviews -> ratings GET /ratings/*", "allow reviews -> ratngs GET /ratings/*")
    failed, log = run_workflow(r, bindir)
    outcome = dict(log)
    assert failed, log
    assert outcome["Verify"] == "failure"  # continue-on-error: the upload still happens
    assert outcome["Upload findings to code scanning"] == "skipped: needs GitHub"
    assert outcome["Compile"] == "failure" and outcome["Policy diff"] == "not run"
    assert not (r / "out" / "istio").exists()  # a failed compile writes nothing
    sarif = json.loads((r / "meshc.sarif").read_text())
    errors = [x for x in sarif["runs"][0]["results"] if x.get("level") == "error"]
    assert [x["ruleId"] for x in errors] == ["MP101"]
    loc = errors[0]["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"]["uri"].endswith("policy/bookinfo.mesh") and loc["region"]["startLine"] == line


# ---- a plain clone: no ../shared --------------------------------------------------


def test_tests_that_need_shared_skip_naming_the_file_on_a_plain_clone():
    """The README's test command on a clone without ../shared: the SARIF tests skip with
    the schema's name instead of erroring."""
    env = {**os.environ, "MESHPOLICY_SHARED_DIR": "/nonexistent/shared"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                        "tests/test_render.py", "-k", "sarif"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " error" not in r.stdout.splitlines()[-1]
    assert "needs ../shared/schemas/sarif/sarif-schema-2.1.0.json" in r.stdout


def test_only_the_conftest_helper_builds_paths_into_shared():
    # written in pieces so that this test does not find itself
    pattern = re.compile(r"""/\s*["']shared["']|["'](?:\.\./)+shared/|\b""" + "SHA" + r"""RED\b""")
    offenders = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == "conftest.py":
            continue
        text = path.read_text(encoding="utf-8")
        if pattern.search(text):
            offenders.append(path.name)
    assert offenders == [], "read ../shared through tests.conftest.shared_path/shared_file"


def test_install_instructions_name_something_pip_can_install():
    """meshpolicy is not on the package index: no command we print or document may say
    `pip install meshpolicy` (or `meshpolicy[envoy]`); the documented form installs from git."""
    bad = re.compile(r"""pip install\s+(?:-\S+\s+)*["']?meshpolicy\b""")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```[a-z]*\n(.*?)```", path.read_text(encoding="utf-8"), re.S):
            found += [f"{path.name}: {m.group()}" for m in bad.finditer(block)]
    for path in sorted((ROOT / "meshpolicy").rglob("*.py")):
        found += [f"{path.name}: {m.group()}" for m in bad.finditer(path.read_text(encoding="utf-8"))]
    assert found == []
    install = [s for s in workflow()["jobs"]["meshc"]["steps"] if s.get("name") == "Install meshc"]
    assert len(install) == 1 and re.search(r'pip install "git\+[^"@]+@[^"]+"', install[0]["run"])
