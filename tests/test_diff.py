"""`meshc diff`: known changes between meshes, exact against brute force."""

from __future__ import annotations

import json
import shutil
import subprocess

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.semantics import evaluate
from meshpolicy.verify.diff import _route_text, diff

from .conftest import EXAMPLES, check_text, run_meshc
from .test_verify_brute import PROBE_PATHS, SERVICES, small_policies

ORDERS_ALLOW = "allow frontend -> orders GET, POST /orders, /orders/**"


def _shop_copy(tmp_path, name, edit=None):
    dst = tmp_path / name
    shutil.copytree(EXAMPLES / "shop", dst)
    if edit:
        f = dst / "orders.mesh"
        text = f.read_text()
        for old, new in edit:
            assert old in text
            text = text.replace(old, new)
        f.write_text(text)
    return dst


def _mesh(path):
    return check_project(load([path])).mesh


def test_one_rule_changed_in_shop(tmp_path):
    old = _shop_copy(tmp_path, "old")
    new = _shop_copy(tmp_path, "new", [(ORDERS_ALLOW, "allow frontend -> orders GET /orders, /orders/**")])
    d = diff(_mesh(old), _mesh(new))
    assert not d.routes and not d.edges_added and not d.edges_removed
    [c] = d.decisions
    assert (c.source, c.destination, c.methods, c.old, c.new) == ("frontend", "orders", ["POST"], "allow", "deny")
    assert "/orders/**" in c.paths and "/orders" in c.paths
    w = c.witness
    from meshpolicy.semantics import Request

    req = Request(w["source"], w["destination"], w["method"], w["path"], tuple(w["headers"].items()))
    assert evaluate(_mesh(old), req).decision.allowed and not evaluate(_mesh(new), req).decision.allowed


def test_weight_change_is_a_route_change_outside_the_canary_header(tmp_path):
    old = _shop_copy(tmp_path, "old")
    new = _shop_copy(tmp_path, "new", [("v1 90%, v2 10%", "v1 50%, v2 50%")])
    d = diff(_mesh(old), _mesh(new))
    assert not d.decisions
    [c] = d.routes
    assert c.source == "any caller" and c.methods == ["GET"] and "x-canary" in c.paths
    assert c.witness["headers"].get("x-canary") != "always"


def test_new_allow_rule_adds_a_call_edge(tmp_path):
    old = _shop_copy(tmp_path, "old")
    new = _shop_copy(tmp_path, "new", [(ORDERS_ALLOW, ORDERS_ALLOW + "\nallow inventory -> orders GET /orders")])
    d = diff(_mesh(old), _mesh(new))
    assert [(u, v) for u, v, _ in d.edges_added] == [("inventory", "orders")]
    assert any(c.source == "inventory" and c.old == "deny" and c.new == "allow" for c in d.decisions)


def test_markdown_shows_witnesses_with_backticks_exactly(tmp_path):
    import re

    from meshpolicy.verify.diff import markdown

    old = _shop_copy(tmp_path, "old")
    new = _shop_copy(tmp_path, "new", [(ORDERS_ALLOW, ORDERS_ALLOW + '\nallow inventory -> orders GET exact "/a`b```c|d"')])
    d = diff(_mesh(old), _mesh(new))
    request = d.edges_added[0][2]["request"]
    assert "/a`b```c|d" in request
    md = markdown(d)
    # a code span fenced with more backticks than any run inside, pipes escaped for the table
    spans = re.findall(r"(`{4}) ?(.*?) ?\1", md)
    assert any(body.replace("\\|", "|") == request for _, body in spans), md


def test_cli_exit_codes_and_formats(tmp_path):
    old = _shop_copy(tmp_path, "old")
    same = _shop_copy(tmp_path, "same")
    new = _shop_copy(tmp_path, "new", [(ORDERS_ALLOW, "allow frontend -> orders GET /orders, /orders/**")])
    r = run_meshc("diff", str(old), str(same))
    assert r.returncode == 0, r.stderr
    r = run_meshc("diff", str(old), str(new), "--format", "json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["changed"] and out["decisions"][0]["witness"]["method"] == "POST"
    r = run_meshc("diff", str(old), str(new), "--format", "markdown")
    assert r.returncode == 1 and "| caller |" in r.stdout and "**deny**" in r.stdout
    edge = _shop_copy(tmp_path, "edge", [(ORDERS_ALLOW, ORDERS_ALLOW + "\nallow inventory -> orders")])
    r = run_meshc("diff", str(old), str(edge), "--format", "markdown")
    assert "```mermaid" in r.stdout and "inventory" in r.stdout
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mesh").write_text("service {\n")
    assert run_meshc("diff", str(old), str(tmp_path / "bad")).returncode == 2


def test_cli_diff_against_git_revision(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "shop", repo)
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@example.org", "-c", "user.name=t", "commit", "-q", "-m", "base")
    assert run_meshc("diff", "--git", "HEAD", str(repo)).returncode == 0
    f = repo / "orders.mesh"
    f.write_text(f.read_text().replace(ORDERS_ALLOW, "allow frontend -> orders GET /orders, /orders/**"))
    r = run_meshc("diff", "--git", "HEAD", ".", cwd=repo)
    assert r.returncode == 1 and "allow → deny" in r.stdout, r.stdout + r.stderr
    assert run_meshc("diff", "--git", "no-such-rev", str(repo)).returncode == 2


def _repo_with_base_commit(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    ident = ("-c", "user.email=t@example.org", "-c", "user.name=t")
    git = lambda *a: subprocess.run(["git", *ident, *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (repo / "README.md").write_text("policies live here\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "base without a policy")
    return repo, git


def test_git_diff_of_a_mesh_the_base_revision_does_not_have(tmp_path):
    """The first pull request that adds a policy: at REV the mesh is empty, so everything is added."""
    repo, _ = _repo_with_base_commit(tmp_path)
    shutil.copytree(EXAMPLES / "shop", repo / "shop")
    r = run_meshc("diff", "--git", "HEAD", "shop", "--format", "json", cwd=repo)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert {"frontend", "orders", "payments"} <= set(out["services_added"])
    assert ("frontend", "orders") in {(e["source"], e["destination"]) for e in out["edges_added"]}
    r = run_meshc("diff", "--git", "HEAD", "shop/orders.mesh", cwd=repo)  # a file stands for its mesh
    assert r.returncode == 1 and "orders" in r.stdout, r.stderr


def test_git_diff_names_the_old_side_by_revision_never_by_a_temporary_path(tmp_path):
    repo, git = _repo_with_base_commit(tmp_path)
    shutil.copytree(EXAMPLES / "shop", repo / "shop")
    f = repo / "shop" / "orders.mesh"
    good = f.read_text()
    f.write_text(good.replace(ORDERS_ALLOW, ORDERS_ALLOW.replace("frontend", "frontnd")))
    git("add", "shop")
    git("commit", "-q", "-m", "a broken policy")
    f.write_text(good)
    r = run_meshc("diff", "--git", "HEAD", "shop", cwd=repo)
    assert r.returncode == 2
    assert "MP101" in r.stderr and "HEAD:shop/orders.mesh:" in r.stderr, r.stderr
    assert "meshc-diff-" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    r = run_meshc("diff", "--git", "no-such-rev", "shop", cwd=repo)
    assert r.returncode == 2 and "no-such-rev" in r.stderr and "Traceback" not in r.stderr
    planted = tmp_path / "planted"
    r = run_meshc("diff", f"--git=--output={planted}", "shop", cwd=repo)  # a REV is never an option to git
    assert r.returncode == 2 and not planted.exists()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=small_policies(), data=st.data())
def test_diff_agrees_with_brute_force(text, data):
    """Drop one rule or assertion line: diff reports a change exactly when some
    request in a space covering both meshes' atoms is decided or routed
    differently (every witness is re-checked inside diff itself)."""
    lines = text.splitlines()
    droppable = [i for i, line in enumerate(lines) if line.startswith(("allow", "deny", "  "))
                 and "->" in line and not line.startswith("  version")]
    assume(droppable)
    i = data.draw(st.sampled_from(droppable))
    new_text = "\n".join(lines[:i] + lines[i + 1:]) + "\n"
    old, new = check_text(text), check_text(new_text)
    assume(old.ok and new.ok)
    d = diff(old.mesh, new.mesh)
    from meshpolicy.semantics import Request

    from meshpolicy.verify.diff import _keys
    from meshpolicy.verify.atoms import split

    changed = False
    for dest in SERVICES:
        paths = set(PROBE_PATHS)
        values = {"1", "12", "y", ""}
        for m in (old.mesh, new.mesh):
            paths |= {a.witness for a in split(_keys(m, dest)[0])}
            # each header value class of either mesh (e.g. "1x": prefix "1", not digits)
            values |= {a.witness for ks in _keys(m, dest)[1].values() for a in split(ks, "value")}
        for src in [*SERVICES, None]:
            for method in ("GET", "POST", "DELETE"):
                for path in sorted(paths):
                    for hs in ((), *((("x-h", v),) for v in sorted(values))):
                        req = Request(src, dest, method, path, hs)
                        a, b = evaluate(old.mesh, req), evaluate(new.mesh, req)
                        if a.decision.effect != b.decision.effect or _route_text(a) != _route_text(b):
                            changed = True
    assert bool(d.decisions or d.routes) == changed, (text, new_text, d.as_json())


def test_settings_changes_are_reported(tmp_path):
    """Adding retries or a timeout changes no decision or route, but a reviewer must see it."""
    from .conftest import run_meshc

    base = ('mesh m { trust_domain "t.example"; default deny }\nservice c { port 80 http }\n'
            'service s { port 80 http; version v1 }\nallow c -> s GET\n')
    (tmp_path / "o").mkdir()
    (tmp_path / "n").mkdir()
    (tmp_path / "o" / "a.mesh").write_text(base)
    (tmp_path / "n" / "a.mesh").write_text(base.replace("version v1 }", "version v1; timeout 1s; retry 2 per_try 100ms }"))
    r = run_meshc("diff", str(tmp_path / "o"), str(tmp_path / "n"), "--format", "json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert {(x["service"], x["setting"]) for x in doc["settings"]} == {("s", "timeout"), ("s", "retry")}
    assert doc["decisions"] == [] and doc["routes"] == []
