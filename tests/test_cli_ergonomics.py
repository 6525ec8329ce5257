"""The command line as people meet it: --version, help with examples, shell
completion, colour rules, the progress bar, --quiet and `meshc init`."""

from __future__ import annotations

import gc
import os
import pty
import re
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from meshpolicy import __version__
from meshpolicy.cli import cli
from tests.conftest import ROOT, run_meshc

ANSI = re.compile(r"\x1b\[")
BROKEN = "service a { port 80 http }\nallow a -> nosuch\n"


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def _run_in_pty(args: list[str], env: dict, pty_for: str, cwd: Path = ROOT, timeout: float = 60) -> tuple[int, str, str]:
    """Run meshc with stdout or stderr (pty_for) on a pseudo-terminal; returns
    (exit code, what the terminal got, what the other stream got)."""
    master, slave = pty.openpty()
    kwargs = {"stdout": slave, "stderr": subprocess.PIPE} if pty_for == "stdout" else \
        {"stdout": subprocess.PIPE, "stderr": slave}
    proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", *args], cwd=cwd, env=env, **kwargs)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    other = (proc.stderr if pty_for == "stdout" else proc.stdout).read()
    code = proc.wait(timeout)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace"), other.decode("utf-8", "replace")


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    (tmp_path / "a.mesh").write_text(BROKEN)
    return tmp_path


def test_version():
    r = run_meshc("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"meshc, version {__version__}"


def test_every_command_help_has_examples():
    runner = CliRunner()
    names = cli.list_commands(None)
    assert {"check", "lsp", "init"} <= set(names)
    missing = []
    for name in [None, *names]:
        args = [name, "--help"] if name else ["--help"]
        r = runner.invoke(cli, args, prog_name="meshc")
        assert r.exit_code == 0, (name, r.output)
        if not re.search(r"^\s*Examples?:\s*$\n\s+meshc ", r.output, re.M):
            missing.append(name or "meshc")
    assert not missing, f"--help without an Examples section: {missing}"


def test_completion_script_and_answers():
    r = run_meshc(env={"_MESHC_COMPLETE": "bash_source"})
    assert r.returncode == 0 and "_meshc_completion" in r.stdout and "complete -o nosort -F" in r.stdout
    r = run_meshc(env={"_MESHC_COMPLETE": "bash_complete", "COMP_WORDS": "meshc ch", "COMP_CWORD": "1"})
    assert "plain,check" in r.stdout.split()
    r = run_meshc(env={"_MESHC_COMPLETE": "bash_complete", "COMP_WORDS": "meshc check --fo", "COMP_CWORD": "2"})
    assert "plain,--format" in r.stdout.split()
    r = run_meshc(env={"_MESHC_COMPLETE": "zsh_source"})
    assert r.returncode == 0 and "compdef _meshc_completion meshc" in r.stdout


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("meshc") is None, reason="needs bash and meshc on PATH")
def test_completion_in_real_bash():
    script = ('eval "$(_MESHC_COMPLETE=bash_source meshc)"; COMP_WORDS=(meshc ver); COMP_CWORD=1; '
              '_meshc_completion meshc ver meshc; printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=_env())
    assert r.returncode == 0, r.stderr
    assert "verify" in r.stdout.split() and "check" not in r.stdout.split()


def test_no_colour_when_piped_or_no_color(broken: Path):
    r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "check", str(broken)], capture_output=True,
                       text=True, env=_env(), cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "MP101" in r.stdout and not ANSI.search(r.stdout)
    r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "check", str(broken), "--color"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
    assert ANSI.search(r.stdout)  # --color forces it even into a pipe
    code, tty, _ = _run_in_pty(["check", str(broken)], _env(), "stdout")
    assert code == 1 and "MP101" in tty and ANSI.search(tty)  # a terminal gets colour
    code, tty, _ = _run_in_pty(["check", str(broken)], _env(NO_COLOR="1"), "stdout")
    assert code == 1 and "MP101" in tty and not ANSI.search(tty)  # ... unless NO_COLOR is set


def _big_mesh(d: Path, files: int = 25) -> Path:
    (d / "meshc.toml").write_text("")
    (d / "mesh.mesh").write_text('mesh big { trust_domain "example.org" }\n')
    for i in range(files):
        (d / f"s{i:02}.mesh").write_text(f"service s{i} {{\n  port 8080 http\n}}\nallow s{(i + 1) % files} -> s{i}\n")
    return d


def test_progress_bar_only_on_a_terminal(tmp_path: Path):
    mesh = _big_mesh(tmp_path)
    code, tty, out = _run_in_pty(["check", str(mesh)], _env(), "stderr")
    # 26 files + build + checks = 28 steps; the bar shows them done before it clears
    assert code == 0 and "━" in tty and "28/28" in tty
    assert "no problems" in out and "━" not in out
    code, tty, _ = _run_in_pty(["check", str(mesh), "--quiet"], _env(), "stderr")
    assert code == 0 and tty.strip() == ""
    r = run_meshc("check", str(mesh))  # stderr a pipe: no bar
    assert r.returncode == 0 and r.stderr == ""
    # verify: the check's steps, then 25 destinations + call graph + assertions = 27 steps
    code, tty, out = _run_in_pty(["verify", str(mesh)], _env(), "stderr")
    assert code == 0 and "27/27" in tty and "━" not in out
    code, tty, _ = _run_in_pty(["verify", str(mesh), "--quiet"], _env(), "stderr")
    assert code == 0 and tty.strip() == ""
    r = run_meshc("verify", str(mesh))
    assert r.returncode == 0 and r.stderr == ""


def test_quiet_prints_errors_only(tmp_path: Path):
    (tmp_path / "a.mesh").write_text("service a { port 80 http }\nservice b { port 80 http }\nallow a -> b\n")
    r = run_meshc("check", str(tmp_path))
    assert r.returncode == 0 and "warning[" in r.stdout  # `a` is callable by no one
    r = run_meshc("check", str(tmp_path), "--quiet")
    assert r.returncode == 0 and r.stdout == ""
    (tmp_path / "b.mesh").write_text("allow a -> nosuch\n")
    r = run_meshc("check", str(tmp_path), "-q")
    assert r.returncode == 1 and "error[MP101]" in r.stdout and "warning[" not in r.stdout


def test_bad_input_is_a_diagnostic_not_a_traceback(tmp_path: Path):
    r = run_meshc("check", str(tmp_path / "missing.mesh"))
    assert r.returncode == 2 and "MP001" in r.stdout and "Traceback" not in r.stderr
    r = run_meshc("init", str(tmp_path / "a.mesh"), env={})
    (tmp_path / "file").write_text("x")
    r = run_meshc("init", str(tmp_path / "file"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_init_writes_a_clean_starter(tmp_path: Path):
    target = tmp_path / "policy"
    r = run_meshc("init", str(target))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in target.iterdir()) == [".gitignore", ".pre-commit-config.yaml", "mesh.mesh",
                                                         "meshc.toml"]
    assert ".meshc/" in (target / ".gitignore").read_text().splitlines()
    r = run_meshc("check", str(target))
    assert r.returncode == 0 and "warning" not in r.stdout and "error" not in r.stdout, r.stdout
    config = yaml.safe_load((target / ".pre-commit-config.yaml").read_text())
    hooks = {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}
    assert set(hooks) == {"meshc-verify", "meshc-fmt"}
    assert hooks["meshc-verify"]["entry"] == "meshc verify" and hooks["meshc-fmt"]["entry"] == "meshc fmt --check"
    # the config is one pre-commit accepts
    v = subprocess.run([sys.executable, "-m", "pre_commit", "validate-config", str(target / ".pre-commit-config.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
    assert run_meshc("fmt", "--check", str(target)).returncode == 0
    r = run_meshc("verify", str(target))
    assert r.returncode == 0 and "warning[" not in r.stdout and "error[" not in r.stdout, r.stdout
    # the comment shows the remote form as one would paste it (single braces)
    text = (target / ".pre-commit-config.yaml").read_text()
    assert "hooks: [{id: meshc-verify}, {id: meshc-fmt}]" in text and "{{" not in text


def test_init_names_the_mesh_after_its_directory(tmp_path: Path):
    for dirname, expected in (("ünï", "uni"), ("my policy", "my-policy"), ("東京", "starter")):
        target = tmp_path / dirname
        assert run_meshc("init", str(target)).returncode == 0
        assert f"mesh {expected} {{" in (target / "mesh.mesh").read_text()
        assert run_meshc("check", str(target)).returncode == 0


def test_init_hooks_rev_needs_hooks_repo(tmp_path: Path):
    r = run_meshc("init", str(tmp_path / "p"), "--hooks-rev", "v1")
    assert r.returncode == 2 and "--hooks-repo" in r.stderr and not (tmp_path / "p").exists()
    r = run_meshc("init", str(tmp_path / "q"), "--hooks-repo", "https://example.org/m.git")
    assert r.returncode == 0 and yaml.safe_load((tmp_path / "q" / ".pre-commit-config.yaml").read_text())[
        "repos"][0]["rev"] == "main"


def test_init_with_hooks_repo(tmp_path: Path):
    r = run_meshc("init", str(tmp_path), "--hooks-repo", "https://example.org/meshpolicy.git", "--hooks-rev", "v1")
    assert r.returncode == 0
    config = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text())
    assert config["repos"] == [{"repo": "https://example.org/meshpolicy.git", "rev": "v1",
                                "hooks": [{"id": "meshc-verify"}, {"id": "meshc-fmt"}]}]
    # the hook ids exist in this repository's manifest
    manifest = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {"meshc-verify", "meshc-fmt"} <= {h["id"] for h in manifest}


def test_init_refuses_to_overwrite(tmp_path: Path):
    (tmp_path / "meshc.toml").write_text("# mine\n")
    r = run_meshc("init", str(tmp_path))
    assert r.returncode == 2 and "meshc.toml" in r.stderr
    assert (tmp_path / "meshc.toml").read_text() == "# mine\n"
    assert not (tmp_path / "mesh.mesh").exists() and not (tmp_path / ".pre-commit-config.yaml").exists()
    # a second init over a complete one changes nothing
    d = tmp_path / "again"
    assert run_meshc("init", str(d)).returncode == 0
    before = {p.name: p.read_text() for p in d.iterdir()}
    assert run_meshc("init", str(d)).returncode == 2
    assert {p.name: p.read_text() for p in d.iterdir()} == before


def test_files_of_several_meshes_are_checked_mesh_by_mesh():
    """pre-commit passes changed files of every mesh in one call."""
    from .conftest import EXAMPLES, run_meshc

    for command in ("check", "verify"):
        r = run_meshc(command, str(EXAMPLES / "shop" / "orders.mesh"), str(EXAMPLES / "broken" / "typos"),
                      "--format", "json")
        files = {d["span"]["file"] for d in __import__("json").loads(r.stdout)["diagnostics"] if d["span"]}
        assert r.returncode == 1
        assert any("broken/typos" in f for f in files)
        assert not any(d for d in files if "different meshes" in d)


def test_a_repository_of_meshes(tmp_path: Path):
    """A directory with a meshc.toml below the root is a mesh of its own: it
    is not merged into the outer one, and a directory argument checks every
    mesh below it."""
    import json

    repo = tmp_path / "repo"
    for name in ("a", "b"):  # both declare `web`: merged, that would be MP103
        (repo / name).mkdir(parents=True)
        (repo / name / "meshc.toml").write_text("")
        (repo / name / "m.mesh").write_text("service web { port 80 http }\nallow * -> web\n")
    (repo / "b" / "m.mesh").write_text("service web { port 80 http }\nallow * -> ghost\n")  # MP101 in b only
    for command in ("check", "verify"):
        r = run_meshc(command, str(repo), "--format", "json")
        found = [(d["code"], Path(d["span"]["file"]).parent.name) for d in json.loads(r.stdout)["diagnostics"]
                 if d["severity"] == "error"]
        assert r.returncode == 1 and found == [("MP101", "b")], r.stdout
    assert run_meshc("check", str(repo / "a")).returncode == 0
    # loose files at the top are a mesh of their own, without the nested ones
    (repo / "top.mesh").write_text("service api { port 80 http }\nallow * -> api\n")
    assert run_meshc("check", str(repo / "top.mesh")).returncode == 0
    # a command that takes one mesh says which ones a directory holds
    (repo / "top.mesh").unlink()
    r = run_meshc("compile", str(repo), "--target", "istio", "-o", str(tmp_path / "out"))
    assert r.returncode == 2 and "has no `.mesh` files of its own" in r.stdout and "repo/a" in r.stdout


# What a pre-commit run loads. Each of these cost 4-130 ms of a cold start
# (bench/bench_cli.py, docs/performance.md); they load only when a run needs
# them. pydantic: the model classes are not pydantic's (model/base.py), it
# loads to validate a model on purpose, and with it asyncio, ssl and sockets
# (pydantic_core, through typing_extensions' @deprecated). The plan: only
# plan/hosts.py (a service's host names) is needed to verify.
_HEAVY = ("z3", "networkx", "rich.console", "pygls", "google.protobuf", "pydantic", "pydantic_core", "asyncio",
          "ssl", "yaml", "jinja2", "cryptography", "jwt", "meshpolicy.plan.build", "meshpolicy.plan.types")
_PROBE = """
import sys
from meshpolicy.cli import main
sys.argv[0] = "meshc"
try:
    main()
except SystemExit as exc:
    code = exc.code
model = sys.modules.get("meshpolicy.model.types")  # fmt does not build the model
validators = sorted(n for n, c in (vars(model) if model else {}).items()
                    if isinstance(c, type) and "_Model__validator" in c.__dict__)
heavy = sorted(m for m in %r if m in sys.modules)
print(code, validators, heavy)
""" % (_HEAVY,)


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_a_hook_run_loads_only_what_it_needs(example: str):
    files = sorted(str(p) for p in (ROOT / "examples" / example).glob("*.mesh"))
    for args in (["verify", *files], ["check", *files], ["fmt", "--check", *files]):
        r = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=ROOT,
                           timeout=60)
        assert r.stdout.splitlines()[-1] == "0 [] []", (args[0], r.stdout[-2000:], r.stderr[-2000:])


_FROZEN_PROBE = """
import gc, sys
from meshpolicy.cli import main
sys.argv[0] = "meshc"
try:
    main()
except SystemExit as exc:
    print(exc.code, gc.get_freeze_count(), "meshpolicy.pipeline" in sys.modules)
"""


def test_a_hook_run_freezes_what_its_imports_made():
    """The console script imports its command with the GC paused and freezes
    the result, so no collection (nor the one at exit) scans the modules and
    classes again (a quarter of a hook run's CPU time). A test's in-process
    CliRunner does not freeze its process."""
    from click.testing import CliRunner

    from meshpolicy.cli import LazyGroup, cli

    files = sorted(str(p) for p in (ROOT / "examples" / "shop").glob("*.mesh"))
    r = subprocess.run([sys.executable, "-c", _FROZEN_PROBE, "verify", *files], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    code, frozen, loaded = r.stdout.splitlines()[-1].split()
    assert (code, loaded) == ("0", "True") and int(frozen) > 10_000, (r.stdout[-2000:], r.stderr[-2000:])
    before = gc.get_freeze_count()
    assert CliRunner().invoke(cli, ["check", *files]).exit_code == 0
    assert gc.get_freeze_count() == before and LazyGroup.settle_imports is False


# ---- meshc explain and documentation links ---------------------------------------------


def test_explain_prints_the_example_and_its_fix():
    from meshpolicy.codes.explanations import explanation

    ex = explanation("MP301")
    r = run_meshc("explain", "MP301")
    assert r.returncode == 0
    for text in (ex.readme, ex.bad, ex.good):
        assert all(line.strip() in r.stdout for line in text.splitlines())
    assert r.stdout.index(ex.bad.splitlines()[-1].strip()) < r.stdout.index("Fixed:")
    assert "https://meshpolicy.dev/diagnostics/MP301" in r.stdout


def test_explain_list():
    from meshpolicy.codes import catalogue

    r = run_meshc("explain", "--list")
    assert r.returncode == 0
    assert [line.split()[0] for line in r.stdout.splitlines()] == list(catalogue())
    assert run_meshc("explain").returncode == 2 and run_meshc("explain", "--list", "MP301").returncode == 2


@pytest.mark.parametrize("query, suggested", [
    ("MP999", None), ("MP3011", "MP301"), ("MP130", "MP103"), ("MP5533", "MP553"), ("MP55", None),
    ("retry-exceds-timeout", "retry-exceeds-timeout"), ("timeout", None)])
def test_explain_suggests_only_close_matches(query, suggested):
    from meshpolicy.commands.explain import suggestion

    assert suggestion(query) == suggested


def test_explain_works_from_an_installed_layout(tmp_path: Path):
    """The wheel's layout (pyproject force-includes the fixtures as
    meshpolicy/_data/explanations): explain reads them with no checkout around."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    hatch = project["tool"]["hatch"]["build"]["targets"]
    included = hatch["wheel"]["force-include"]
    assert included["tests/fixtures/codes"] == "meshpolicy/_data/explanations"
    assert "tests/fixtures/codes" in hatch["sdist"]["include"]  # a wheel built from the sdist has them too
    site = tmp_path / "site"
    shutil.copytree(ROOT / "meshpolicy", site / "meshpolicy", ignore=shutil.ignore_patterns("__pycache__"))
    for src, dst in included.items():
        shutil.copytree(ROOT / src, site / dst)
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "explain", "MP553"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Fixed:" in r.stdout and "timeout 1s" in r.stdout


def test_wheel_carries_the_explanations(tmp_path: Path):
    pytest.importorskip("hatchling", reason="needs hatchling (meshpolicy's build backend) to build the wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    import zipfile

    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for code in ("MP101", "MP553"):
        for f in ("README.md", "bad.mesh", "good.mesh"):
            assert f"meshpolicy/_data/explanations/{code}/{f}" in names


@pytest.mark.parametrize("fmt", ["text", "github", "json", "sarif"])
def test_every_format_links_the_code_documentation(fmt, tmp_path: Path):
    from meshpolicy.codes import doc_url

    (tmp_path / "a.mesh").write_text(BROKEN)
    r = run_meshc("check", str(tmp_path), "--format", fmt)
    assert doc_url("MP101") in r.stdout
    if fmt == "sarif":
        import json

        rules = json.loads(r.stdout)["runs"][0]["tool"]["driver"]["rules"]
        assert all(rule["helpUri"] == doc_url(rule["id"]) for rule in rules)


# ---- every diagnostic-printing command honours --format ----------------------------------

UNFORMATTED = "service  a {port 80 http}\nallow * -> a\n"


@pytest.mark.parametrize("fmt", ["json", "sarif", "github"])
def test_fmt_check_honours_format(fmt, tmp_path: Path):
    import json

    (tmp_path / "a.mesh").write_text(UNFORMATTED)
    (tmp_path / "b.mesh").write_text("service b {\n  port 80 http\n}\n\nallow * -> b\n")
    r = run_meshc("fmt", "--check", str(tmp_path), "--format", fmt, cwd=tmp_path)
    assert r.returncode == 1 and "would reformat" not in r.stdout + r.stderr
    if fmt == "json":
        [d] = json.loads(r.stdout)["diagnostics"]
        assert (d["code"], d["span"]["file"], d["span"]["line"]) == ("MP095", "a.mesh", 1)
    elif fmt == "sarif":
        [res] = json.loads(r.stdout)["runs"][0]["results"]
        assert res["ruleId"] == "MP095"
    else:
        assert r.stdout.startswith("::error file=a.mesh,line=1,") and "title=MP095" in r.stdout
    assert (tmp_path / "a.mesh").read_text() == UNFORMATTED  # --check writes nothing
    run_meshc("fmt", str(tmp_path / "a.mesh"))
    r = run_meshc("fmt", "--check", str(tmp_path), "--format", fmt, cwd=tmp_path)
    assert r.returncode == 0
    if fmt == "json":
        assert json.loads(r.stdout)["diagnostics"] == []
    elif fmt == "sarif":
        assert json.loads(r.stdout)["runs"][0]["results"] == []
    else:
        assert r.stdout == ""


def test_mp095_fixture_pair():
    bad, good = (ROOT / "tests" / "fixtures" / "codes" / "MP095" / f for f in ("bad.mesh", "good.mesh"))
    import json

    r = run_meshc("fmt", "--check", str(bad), "--format", "json")
    marked = next(i + 1 for i, line in enumerate(bad.read_text().splitlines()) if "<- MP095" in line)
    assert [(d["code"], d["span"]["line"]) for d in json.loads(r.stdout)["diagnostics"]] == [("MP095", marked)]
    assert run_meshc("fmt", "--check", str(good), "--format", "json").returncode == 0


@pytest.mark.parametrize("command", ["check", "verify"])
def test_check_and_verify_read_standard_input(command):
    import json

    text = (ROOT / "tests" / "fixtures" / "codes" / "MP101" / "bad.mesh").read_text()
    r = run_meshc(command, "-", "--format", "json", input=text)
    assert r.returncode == 1
    [d] = json.loads(r.stdout)["diagnostics"]
    assert d["code"] == "MP101" and d["span"]["file"] == "<stdin>"
    good = (ROOT / "tests" / "fixtures" / "codes" / "MP101" / "good.mesh").read_text()
    assert run_meshc(command, "-", input=good).returncode == 0
    assert run_meshc(command, "-", "examples/shop", input=good).returncode == 2


def test_diff_json_reports_broken_input_as_json(tmp_path: Path):
    import json

    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "a.mesh").write_text("service a { port 80 http }\nallow * -> a\n")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a.mesh").write_text(BROKEN)
    r = run_meshc("diff", str(tmp_path / "old"), str(tmp_path / "new"), "--format", "json")
    assert r.returncode == 2 and [d["code"] for d in json.loads(r.stdout)["diagnostics"]] == ["MP101"]


# ---- messages ---------------------------------------------------------------------------


def test_timeout_inversion_shows_its_arithmetic(tmp_path: Path):
    import json

    (tmp_path / "a.mesh").write_text(
        "service a { port 80 http }\nservice b { port 80 http\n  timeout 300ms }\n"
        "service c { port 80 http\n  retry 1 per_try 200ms on 5xx }\nallow a -> b\nallow b -> c\n")
    doc = json.loads(run_meshc("verify", str(tmp_path), "--format", "json").stdout)
    [d] = [d for d in doc["diagnostics"] if d["code"] == "MP553"]
    # 2 attempts x 200ms + Envoy's default backoff (25ms) = 425ms, as MP301 shows its sum
    assert "2 attempts x 200ms per try + 25ms backoff = 425ms" in d["message"]


QUERY_MESH = ('mesh m { trust_domain "e.org"; default allow }\nservice web { port 80 http }\n'
              'service frontend { port 80 http }\nservice db { port 5432 tcp }\nallow web -> db\n')


@pytest.mark.parametrize("request_text, ok, shown", [
    ("web -> frontend get /x", True, "web -> frontend GET /x"),
    ("web -> frontend GET /x ?x=1", True, "web -> frontend GET /x?x=1"),
    ("web -> frontend ?x=1", True, "web -> frontend GET /?x=1"),
    ("web -> db", True, "web -> db (TCP connection)"),
    ("web -> db GET /x", False, "TCP"),
    ("web -> frontend GET /x (x)=1", False, "header name"),
    ("web -> frontend GETT /x", False, "GET, HEAD"),
    ("fronted -> web", False, "`frontend`"),
])
def test_query_request_text(tmp_path: Path, request_text, ok, shown):
    (tmp_path / "q.mesh").write_text(QUERY_MESH)
    r = run_meshc("query", str(tmp_path), request_text)
    assert (r.returncode == 0) is ok, r.stderr
    assert shown in (r.stdout if ok else r.stderr)
    assert "GET /" not in r.stdout or "TCP" not in shown


def test_query_json_for_tcp_has_no_path(tmp_path: Path):
    import json

    (tmp_path / "q.mesh").write_text(QUERY_MESH)
    d = json.loads(run_meshc("query", str(tmp_path), "web -> db", "--format", "json").stdout)
    assert d["protocol"] == "tcp" and "path" not in d and "GET" not in d["request"]


def test_diff_prints_settings_as_written_not_python(tmp_path: Path):
    for side in ("old", "new"):
        shutil.copytree(ROOT / "examples" / "shop", tmp_path / side)
    f = tmp_path / "new" / "orders.mesh"
    f.write_text(f.read_text().replace("retry 2 per_try 500ms on 5xx, reset, connect-failure",
                                       "retry 3 per_try 400ms on 5xx, reset")
                 .replace("limit frontend -> orders 100/s burst 20", "limit frontend -> orders 50/s burst 10"))
    for fmt in ("text", "markdown"):
        r = run_meshc("diff", str(tmp_path / "old"), str(tmp_path / "new"), "--format", fmt)
        assert r.returncode == 1
        assert "on [5xx, reset]" in r.stdout and "per_try 400ms" in r.stdout and "sources [frontend]" in r.stdout
        assert not re.search(r"\['|\{'|'span'", r.stdout), r.stdout


def test_init_prints_a_command_that_pastes(tmp_path: Path):
    import shlex

    target = tmp_path / "my policy"
    r = run_meshc("init", str(target))
    assert r.returncode == 0
    [next_line] = [line for line in r.stdout.splitlines() if line.startswith("next: ")]
    assert shlex.split(next_line[len("next: "):]) == ["meshc", "check", str(target)]


@pytest.mark.parametrize("toml, code", [
    ("x = " + "[" * 100_000 + "]" * 100_000, "MP001"),  # tomllib itself recurses
    ("x = " + "{a=" * 5000 + "1" + "}" * 5000, "MP001"),
    ("[verify]\nsidecar_ms = " + "[" * 300 + "]" * 300, "MP012"),  # parses, too deep to keep
    ("[compile.istio]\nx = " + "[" * 100 + "]" * 100, "MP012"),
], ids=["arrays", "inline-tables", "verify-value", "compile-table"])
def test_a_deeply_nested_meshc_toml_is_a_diagnostic(tmp_path: Path, toml, code):
    import json

    (tmp_path / "meshc.toml").write_text(toml)
    (tmp_path / "a.mesh").write_text("service a { port 80 http }\nallow * -> a\n")
    for command in (("check",), ("compile", "--target", "istio", "--stdout")):
        r = run_meshc(*command, str(tmp_path), "--format", "json")
        assert r.returncode in (1, 2) and "internal error" not in r.stderr, r.stderr[-500:]
        doc = json.loads(r.stdout or r.stderr)
        assert code in [d["code"] for d in doc["diagnostics"]]
        assert all(len(d["message"]) < 400 for d in doc["diagnostics"])
