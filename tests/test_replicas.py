"""Several instances per version (issue 17 item 2): the [up] replicas
setting, the one instance layout both targets read, the endpoints they
serve, and meshproxy's choice of an instance (balance, ejection, panic).
The same behaviour through real sidecars: tests/test_conformance.py
(the `pool` scenarios)."""

from __future__ import annotations

import json
import random
import tomllib
from collections import Counter
from types import SimpleNamespace

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.config import check_config
from meshpolicy.proxy.metrics import Metrics
from meshpolicy.proxy.server import Upstreams
from meshpolicy.run import up
from meshpolicy.span import SourceFile
from meshpolicy.targets.port_layout import blocks_of, instances, replica_count
from meshpolicy.xds.resources import ENDPOINT, join, snapshots

from .conftest import check_text, codes, run_meshc

POLICY = """mesh m { trust_domain "m.test"; mtls strict }
service web { namespace front; port 8080 http }
service api {
  namespace back; port 8080 http
  version v1 { version: "v1"; balance least_request }
  version v2 { version: "v2"; outlier consecutive_5xx 2 interval 1s eject 5s max 50% }
}
service db { namespace back; port 5432 tcp }
route api {
  GET /two/** -> v2
  GET -> v1 80%, v2 20%
}
allow web -> api GET
allow api -> db
"""

REPLICAS = {"default": 1, "api": 3, "api/v1": 2}


def _config(text: str):
    return check_config(tomllib.loads(text), SourceFile("meshc.toml", text))


# ---- meshc.toml -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    ("[up]\nreplicas = 3\n", {"default": 3}),
    ('[up.replicas]\ndefault = 2\napi = 3\n"api/v1" = 1\n', {"default": 2, "api": 3, "api/v1": 1}),
])
def test_replicas_settings_are_read(text, expect):
    out, diags = _config(text)
    assert diags == [] and out["up"]["replicas"] == expect


@pytest.mark.parametrize("text", [
    "[up]\nreplicas = 0\n", "[up]\nreplicas = 65\n", '[up]\nreplicas = "3"\n', "[up]\nreplicas = true\n",
    "[up.replicas]\napi = 1.5\n", '[up.replicas]\n"a/b/c" = 2\n', '[up.replicas]\n"api@1" = 2\n',
    '[up.replicas]\n"bad name" = 2\n',
])
def test_bad_replicas_are_mp012_and_dropped(text):
    out, diags = _config(text)
    assert codes(diags) == ["MP012"] and out["up"]["replicas"] == {}
    assert diags[0].span is not None  # points at the line in meshc.toml


def test_replica_count_most_specific_wins():
    assert [replica_count(REPLICAS, s, v) for s, v in [("api", "v1"), ("api", "v2"), ("web", None)]] == [2, 3, 1]
    assert replica_count(None, "api", "v1") == 1


def test_names_the_mesh_lacks_are_mp012_at_meshc_up(tmp_path):
    mesh = _mesh()
    for table in ({"apii": 2}, {"api/v3": 2}, {"web/v1": 2}):
        plan, diags = up.prepare(mesh, {"up": {"replicas": table}}, "meshproxy", tmp_path / "w")
        assert plan is None and codes(diags) == ["MP012"], table
    assert not (tmp_path / "w").exists()  # refused before anything is written


def test_meshc_up_refuses_bad_replicas_without_a_traceback(tmp_path):
    (tmp_path / "m.mesh").write_text(POLICY)
    (tmp_path / "meshc.toml").write_text('[up.replicas]\n"nosuch" = 2\n')
    r = run_meshc("up", str(tmp_path), "--proxy", "meshproxy", "--no-verify", "--workdir", str(tmp_path / "w"))
    assert r.returncode == 1 and "MP012" in r.stderr and "Traceback" not in r.stderr
    r = run_meshc("up", str(tmp_path), "--replicas", "0")
    assert r.returncode == 2 and "Traceback" not in r.stderr


# ---- the instance layout and the endpoints both targets serve ---------------------------------

def test_instances_take_consecutive_blocks_and_one_instance_is_the_old_layout():
    keys = [("api", "v1"), ("api", "v2"), ("db", None), ("web", None)]
    assert instances(keys, None) == [(s, v, 0) for s, v in keys]
    assert blocks_of(keys, REPLICAS) == {("api", "v1"): [0, 1], ("api", "v2"): [2, 3, 4], ("db", None): [5],
                                         ("web", None): [6]}


def _mesh():
    checked = check_text(POLICY)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    return checked.mesh


def _compiled(target: str, settings: dict):
    mesh = _mesh()
    outputs, diags = compile_mesh(mesh, target, CompileOptions(settings={"port_base": 24000, **settings}))
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    return outputs


def test_both_targets_list_every_instance_as_an_endpoint_on_the_same_ports():
    envoy = _compiled("envoy", {"replicas": REPLICAS})
    proxy = {o.path: json.loads(o.content) for o in _compiled("meshproxy", {"replicas": REPLICAS})}
    assert sorted(o.path.removesuffix(".yaml") for o in envoy) == sorted(p.removesuffix(".json") for p in proxy)
    assert "back/api/v2@2.json" in proxy and proxy["back/api/v2@2.json"]["workload"]["instance"] == 2
    snaps = snapshots(envoy)
    served = {name: [e["endpoint"]["address"]["socket_address"]["port_value"] for e in cla["endpoints"][0]["lb_endpoints"]]
              for name, cla in snaps["front/web"][1].resources[ENDPOINT].items() if name.startswith("api|")}
    web = proxy["front/web.json"]
    [api] = [d for d in web["outbound"]["destinations"] if d["service"] == "api"]
    written = {f"api|{u['version']}": [e["ports"][0]["port"] for e in u["endpoints"]] for u in api["upstreams"]}
    assert served == written == {"api|v1": [24000, 24010], "api|v2": [24020, 24030, 24040]}
    # each instance listens where the callers' endpoints say, and shares its version's identity
    for k, port in enumerate(written["api|v2"]):
        cfg = proxy[f"back/api/v2{'@%d' % k if k else ''}.json"]
        assert cfg["listeners"]["inbound"][0]["port"] == port
        assert cfg["identity"]["spiffe_id"] == "spiffe://m.test/ns/back/sa/api"


def test_served_endpoints_are_the_static_target_with_replicas():
    """Under the control plane, EDS is cut from the static load_assignment:
    joining what is served gives back every instance's bootstrap."""
    for node, (static, snap) in snapshots(_compiled("envoy", {"replicas": REPLICAS})).items():
        assert json.dumps(join(snap), sort_keys=True) == json.dumps(static["static_resources"], sort_keys=True), node


@pytest.mark.parametrize("target,code", [("envoy", "MP720"), ("meshproxy", "MP730")])
def test_replicas_belong_to_the_mesh_unique_layout(target, code):
    mesh = _mesh()
    _, diags = compile_mesh(mesh, target, CompileOptions(settings={"ports": "per-workload", "replicas": {"api": 2}}))
    assert code in codes(diags)
    _, diags = compile_mesh(mesh, target, CompileOptions(settings={"replicas": {"api": 0}}))
    assert code in codes(diags)


def test_meshc_up_workloads_name_each_instance(tmp_path):
    mesh = _mesh()
    for proxy in ("meshproxy", "envoy"):
        plan, diags = up.prepare(mesh, {"up": {"replicas": {"api/v2": 2}}}, proxy, tmp_path / proxy, replicas_flag=1)
        assert plan is not None, [d.message for d in diags]
        keys = [w.key for w in plan.workloads]
        assert keys == ["api/v1", "api/v2", "api/v2@1", "db", "web"], proxy
        w = plan.workloads[2]
        assert w.instance == 1 and w.version == "v2"
        argv = up.app_argv(w, {}, "t")
        assert argv[argv.index("--instance") + 1] == "1"
        assert up.app_argv(w, {"api": {"command": "app --i {instance} --p {port}"}}) == ["app", "--i", "1", "--p",
                                                                                          str(w.app_port)]


# ---- meshproxy: which instance -----------------------------------------------------------------

def _dest(policy: str | None, n: int = 3, outlier: dict | None = None) -> tuple[dict, dict]:
    up_ = {"version": "v1", "endpoints": [{"address": "127.0.0.1", "ports": [{"service_port": 80, "port": 30000 + i}]}
                                          for i in range(n)],
           "circuit_breaker": None, "outlier_detection": outlier,
           "load_balancer": {"policy": policy, "header": "x-user"} if policy else None}
    return {"service": "api", "upstreams": [up_]}, up_


def _request(user: str | None = None, remote: str = "127.0.0.1"):
    return SimpleNamespace(headers={"x-user": user} if user else {}, remote=remote)


def _metrics() -> Metrics:
    return Metrics({"metrics": {"enabled": True}})


def test_round_robin_takes_each_instance_in_turn():
    dest, u = _dest(None)
    state = Upstreams()
    got = [state.choose(dest, u, 0.0).port for _ in range(9)]
    assert got == [30000, 30001, 30002] * 3


def test_least_request_prefers_the_idle_instances():
    random.seed(7)
    dest, u = _dest("least_request")
    state = Upstreams()
    state.hosts_of(dest, u)[1].active = 5  # busy
    got = Counter(state.choose(dest, u, 0.0).port for _ in range(900))
    # picked only when both random picks land on it: 1/9 of the time
    assert got[30001] < 900 / 9 + 4.5 * (900 * (1 / 9) * (8 / 9)) ** 0.5
    assert got[30000] > 300 and got[30002] > 300


def test_hash_sticks_and_an_ejected_instance_moves_only_its_keys():
    dest, u = _dest("hash_header")
    state = Upstreams()
    users = [f"u{i}" for i in range(60)]
    first = {x: state.choose(dest, u, 0.0, _request(x)).port for x in users}
    assert all(state.choose(dest, u, 0.0, _request(x)).port == first[x] for x in users)
    assert len(set(first.values())) == 3
    gone = state.hosts_of(dest, u)[0]
    gone.ejected_until = 100.0
    moved = {x: state.choose(dest, u, 1.0, _request(x)).port for x in users}
    assert all(moved[x] == first[x] for x in users if first[x] != gone.port)  # the others' keys stay
    assert gone.port not in moved.values()


def test_a_failing_instance_is_ejected_and_its_traffic_moves():
    dest, u = _dest(None, outlier={"consecutive_5xx": 2, "consecutive_gateway": None, "interval_ms": 1000,
                                   "base_ejection_ms": 5000, "max_ejection_percent": 50.0})
    state, metrics = Upstreams(), _metrics()
    bad = state.hosts_of(dest, u)[2]
    for _ in range(2):
        state.record(dest, "v1", 503, 1.0, metrics, bad)
    assert bad.ejected_until == 6.0
    assert {state.choose(dest, u, 2.0).port for _ in range(10)} == {30000, 30001}
    assert state.ejected_now(2.0) == {("api", "v1"): 1}
    # the cap: a second of three would be 67% > 50%
    other = state.hosts_of(dest, u)[0]
    for _ in range(2):
        state.record(dest, "v1", 503, 2.0, metrics, other)
    assert other.ejected_until == 0.0
    # back after the ejection time
    assert {state.choose(dest, u, 7.0).port for _ in range(6)} == {30000, 30001, 30002}


def test_panic_routing_when_too_few_instances_are_left():
    dest, u = _dest(None, n=3)
    state = Upstreams()
    hosts = state.hosts_of(dest, u)
    hosts[0].ejected_until = hosts[1].ejected_until = 10.0  # 1 of 3 healthy: below Envoy's 50%
    assert {state.choose(dest, u, 1.0).port for _ in range(6)} == {30000, 30001, 30002}


def test_instance_state_survives_a_reload_of_the_same_endpoints():
    dest, u = _dest(None)
    state = Upstreams()
    state.hosts_of(dest, u)[1].ejected_until = 50.0
    dest2, u2 = _dest(None)  # a new config document (SIGHUP), same endpoints
    assert state.hosts_of(dest2, u2)[1].ejected_until == 50.0


def test_each_instance_has_a_key_pair_of_its_own_with_the_version_identity(tmp_path):
    from cryptography import x509

    mesh = _mesh()
    for proxy in ("meshproxy", "envoy"):
        work = tmp_path / proxy
        plan, diags = up.prepare(mesh, {"up": {"replicas": {"api/v2": 3}}}, proxy, work)
        assert plan is not None, [d.message for d in diags]
        certs = work / "certs" / "back"
        pairs = [certs / d for d in ("api", "api@1", "api@2")]
        assert not (certs / "api@3").exists() and not (work / "certs" / "front" / "web@1").exists()
        keys = {(p / "key.pem").read_bytes() for p in pairs}
        assert len(keys) == 3  # three key pairs
        for p in pairs:
            cert = x509.load_pem_x509_certificate((p / "cert.pem").read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://m.test/ns/back/sa/api"]
            assert (p / "key.pem").stat().st_mode & 0o777 == 0o600
        if proxy == "meshproxy":
            cfg = json.loads((work / "config" / "back" / "api" / "v2@2.json").read_text())
            assert cfg["identity"]["cert_file"].endswith("/back/api@2/cert.pem")
        else:  # each instance's Envoy reads its own pair through its own SDS document
            assert (work / "sds" / "back" / "api@2.json").is_file()
            assert "back/api@2/cert.pem" in (work / "sds" / "back" / "api@2.json").read_text()
            assert "api@2.json" in (work / "config" / "back" / "api" / "v2@2.yaml").read_text()
        renewed = up.renew_certificates(mesh, {"up": {"replicas": {"api/v2": 3}}}, work)
        assert "back/api@2/cert.pem" in renewed


def test_stat_scrapes_every_instance_and_counts_it_under_its_version(tmp_path):
    """meshc stat / top read the run's sidecars from its configs: every
    instance is one, named apart, with its real version, so figures add up
    per service pair and per version."""
    from meshpolicy.run.telemetry import sidecars

    mesh = _mesh()
    for proxy in ("meshproxy", "envoy"):
        plan, diags = up.prepare(mesh, {"up": {"replicas": {"api/v2": 2}}}, proxy, tmp_path / proxy)
        assert plan is not None, [d.message for d in diags]
        cars = {c.workload: (c.service, c.version) for c in sidecars(tmp_path / proxy)
                if c.proxy != "meshc"}  # not the collector's own counters
        assert cars["api/v2@1"] == cars["api/v2"] == ("api", "v2"), proxy
        assert len(cars) == len(plan.workloads)
