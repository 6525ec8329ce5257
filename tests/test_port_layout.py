"""The port layouts of the Envoy and meshproxy targets (targets/port_layout.py):
per-workload by default (fixed ports, destinations by host name; the mesh's
size does not matter), mesh-unique for `meshc up` and whenever a block setting
asks for it (every workload on one host)."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.gen import generate
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts, load

from .conftest import EXAMPLES, check_text, codes

SHOP = EXAMPLES / "shop"


def shop():
    checked = check_project(load([SHOP]))
    assert checked.ok
    return checked.mesh


def compiled(mesh, target: str, **settings) -> dict[str, dict]:
    if target == "meshproxy":
        settings.setdefault("http1_apps", sorted(mesh.service_map))
    outputs, diags = compile_mesh(mesh, target, CompileOptions(settings=settings))
    assert codes(diags) == [], [(d.code, d.message) for d in diags]
    load_one = json.loads if target == "meshproxy" else yaml.safe_load
    gateways = _gateway_paths(mesh)
    return {o.path: load_one(o.content) for o in outputs if o.path not in gateways}


def _gateway_paths(mesh) -> set[str]:
    """The ingress gateways' files: their listeners are the written `listen`
    ports (test_ingress_gateways_listen_where_written), not a workload's."""
    return {f"{g.namespace}/{g.name}.{ext}" for g in mesh.ingresses for ext in ("yaml", "json")}


def test_ingress_gateways_listen_where_written():
    """Per-workload layout: a gateway's front listeners are its `listen` ports
    on every address, its admin and the hop into the mesh the fixed loopback ports."""
    mesh = shop()
    web = mesh.ingress_map["web"]
    outputs, diags = compile_mesh(mesh, "envoy", CompileOptions(settings={}))
    cfg = yaml.safe_load(next(o.content for o in outputs if o.path == "edge/web.yaml"))
    listeners = {li["name"]: _addr(li["address"]) for li in cfg["static_resources"]["listeners"]}
    assert {v for k, v in listeners.items() if k != "ingress|mesh"} == {("0.0.0.0", ls.port) for ls in web.listeners}
    assert _addr(cfg["admin"]["address"]) == ("127.0.0.1", 15000)
    outputs, _ = compile_mesh(mesh, "meshproxy", CompileOptions(settings={"http1_apps": sorted(mesh.service_map)}))
    mp = json.loads(next(o.content for o in outputs if o.path == "edge/web.json"))
    assert mp["listeners"]["layout"] == "per-workload" and mp["listeners"]["admin"]["port"] == 15000


def _addr(sock: dict) -> tuple[str, int]:
    a = sock["socket_address"]
    return a["address"], a["port_value"]


def test_envoy_default_is_per_workload_fixed_ports_and_host_names():
    mesh = shop()
    files = compiled(mesh, "envoy")
    for path, cfg in files.items():
        listeners = {li["name"]: _addr(li["address"]) for li in cfg["static_resources"]["listeners"]}
        assert listeners["inbound"] == ("0.0.0.0", 15006), path
        assert listeners["outbound"] == ("127.0.0.1", 15001), path  # only the pod's own app may use it
        assert _addr(cfg["admin"]["address"]) == ("127.0.0.1", 15000)
        tcp = sorted(p for name, (_, p) in listeners.items() if name.startswith("outbound|tcp|"))
        assert tcp == list(range(15100, 15100 + len(tcp)))
    cfg = files["shop/orders/v1.yaml"]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    app = clusters["inbound|app"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert app["socket_address"]["port_value"] == mesh.service("orders").ports[0].number
    ep = lambda c: _addr(c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"])  # noqa: E731
    assert clusters["catalog|v2"]["type"] == "STRICT_DNS"
    assert ep(clusters["catalog|v2"]) == ("catalog-v2.shop.svc.cluster.local", 15006)
    assert ep(clusters["payments|v1"]) == ("payments-v1.pay.svc.cluster.local", 15006)


def test_envoy_mesh_unique_keeps_loopback_and_unique_ports():
    files = compiled(shop(), "envoy", ports="mesh-unique")
    seen = set()
    for cfg in files.values():
        for li in cfg["static_resources"]["listeners"]:
            a = _addr(li["address"])
            assert a[0] == "127.0.0.1" and a not in seen
            seen.add(a)
        for c in cfg["static_resources"]["clusters"]:
            # an external is reached by its host name; every mesh destination by a fixed local port
            if "|" in c["name"] and not c["name"].startswith(("inbound", "tracing", "external|")):
                assert c["type"] == "STATIC"


def test_meshproxy_default_is_per_workload():
    mesh = shop()
    files = compiled(mesh, "meshproxy")
    for cfg in files.values():
        ls = cfg["listeners"]
        assert ls["layout"] == "per-workload"
        assert (ls["admin"]["address"], ls["admin"]["port"]) == ("127.0.0.1", 15000)
        assert (ls["outbound"]["address"], ls["outbound"]["port"]) == ("127.0.0.1", 15001)
        assert [(i["address"], i["port"]) for i in ls["inbound"]] == [("0.0.0.0", 15006)]
        svc = mesh.service(cfg["workload"]["service"])
        assert ls["inbound"][0]["app"]["port"] == svc.ports[0].number
    front = files["web/frontend/v1.json"]
    catalog = next(d for d in front["outbound"]["destinations"] if d["service"] == "catalog")
    assert {(u["version"], e["address"], e["ports"][0]["port"]) for u in catalog["upstreams"]
            for e in u["endpoints"]} == {
        ("v1", "catalog-v1.shop.svc.cluster.local", 15006), ("v2", "catalog-v2.shop.svc.cluster.local", 15006)}
    pay = files["pay/payments/v1.json"]
    db = next(d for d in pay["outbound"]["destinations"] if d["service"] == "payments-db")
    assert db["tcp_listener"] == {"address": "127.0.0.1", "port": 15100}
    assert db["upstreams"][0]["endpoints"] == [{"address": "payments-db.pay.svc.cluster.local",
                                                "ports": [{"service_port": 5432, "port": 15006}]}]


def test_block_settings_select_mesh_unique():
    files = compiled(shop(), "meshproxy", port_base=30000)
    assert {cfg["listeners"]["layout"] for cfg in files.values()} == {"mesh-unique"}
    assert min(cfg["listeners"]["inbound"][0]["port"] for cfg in files.values()) == 30000


@pytest.mark.parametrize("target, code", [("envoy", "MP720"), ("meshproxy", "MP730")])
@pytest.mark.parametrize("settings", [{"ports": "per-pod"}, {"ports": 1},
                                      {"ports": "per-workload", "port_base": 30000},
                                      {"ports": "per-workload", "ports_per_workload": 12}])
def test_bad_layout_settings(target, code, settings):
    checked = check_text("service a { port 8080 http }\nallow * -> a\n")
    outputs, diags = compile_mesh(checked.mesh, target, CompileOptions(settings=settings))
    assert code in codes(diags)


@pytest.mark.parametrize("target, code", [("envoy", "MP720"), ("meshproxy", "MP730")])
@pytest.mark.parametrize("port", [15000, 15001, 15006])
def test_app_on_a_sidecar_port_is_refused_per_workload(target, code, port):
    checked = check_text(f"service a {{ port {port} http }}\nallow * -> a\n")
    _, diags = compile_mesh(checked.mesh, target, CompileOptions(settings={"http1_apps": ["a"]}))
    assert code in codes(diags)
    _, diags = compile_mesh(checked.mesh, target, CompileOptions(settings={"http1_apps": ["a"],
                                                                           "ports": "mesh-unique"}))
    assert codes(diags) == []


@pytest.mark.parametrize("target, code", [("envoy", "MP720"), ("meshproxy", "MP730")])
def test_size_does_not_cap_per_workload(target, code):
    """Blocks of 10 ports from 64000 hold 153 workloads: a 200-service mesh
    cannot be placed mesh-unique, and compiles per-workload."""
    checked = check_project(from_texts({k: v for k, v in generate(200, seed=3).items() if k.endswith(".mesh")}))
    assert checked.ok
    mesh = checked.mesh
    settings = {"http1_apps": sorted(mesh.service_map)}
    _, diags = compile_mesh(mesh, target, CompileOptions(settings={**settings, "port_base": 64000}))
    assert code in codes(diags)
    outputs, diags = compile_mesh(mesh, target, CompileOptions(settings={**settings, "ports": "per-workload"}))
    assert [d for d in diags if d.is_error] == [] and len(outputs) >= 200


def test_up_asks_for_mesh_unique(tmp_path):
    """`meshc up` runs every workload on this host, whatever meshc.toml's `ports` says."""
    from meshpolicy.run.up import prepare

    mesh = shop()
    for proxy in ("meshproxy", "envoy"):
        config = {"compile": {proxy: {"ports": "per-workload"}}, "up": {"xds": False}}
        plan, diags = prepare(mesh, config, proxy, tmp_path / proxy)
        assert plan is not None, [(d.code, d.message) for d in diags]
        # 0: a port the workload does not have (an ingress gateway has no app and no inbound listener)
        ports = [p for w in plan.workloads for p in (w.admin_port, w.inbound_port, w.outbound_port, w.app_port) if p]
        assert len(ports) == len(set(ports)) and len(plan.workloads) > 5
