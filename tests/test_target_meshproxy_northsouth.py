"""The meshproxy target's side of north-south (issue 15): what the compiler
writes for ingress gateways, JWT providers, internet principals, externals
and the L7 rule options, and what it refuses (by code)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh, get_target
from meshpolicy.compile import Output
from meshpolicy.wire.config import WorkloadConfig

from .conftest import check_text, codes

NS = (Path(__file__).parent / "fixtures" / "northsouth").as_posix()

MESH = f"""
mesh shop {{ trust_domain "shop.test"; default deny; egress registry_only }}
jwt auth {{ issuer "https://auth.shop.test/"; audience "shop-api"; jwks "{NS}/auth.jwks.json" }}
jwt partner {{ issuer "https://partner.test/"; jwks "{NS}/auth.jwks.json"; token cookie "session" }}
ingress web {{
  namespace edge
  account gateway
  listen 8080 http
  listen 8443 https cert "{NS}/web.crt" key "{NS}/web.key"
  hosts "shop.example.com"
  jwt auth
  /api/** -> orders 80%, frontend 20% rewrite "/" set request header "x-from" "web"
  GET /** -> frontend cors origins "https://shop.example.com"
}}
external stripe {{ namespace pay; host "api.stripe.com"; port 443 tls; timeout 2s }}
service frontend {{ namespace web; port 8080 http }}
service orders {{ namespace shop; port 8080 http; version v1; version v2 }}
service payments {{ namespace pay; port 8080 http }}
route orders {{
  GET /orders/** query "view" = "full" -> v2 retry 2 on 503, connect-failure
  * -> v1 remove response header "server"
}}
allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders/**
allow internet with jwt partner -> orders GET
limit internet with jwt auth -> orders 10/s per claim "sub"
limit frontend -> orders 100/s per header "x-api-key"
allow payments -> stripe POST /v1/charges
deny namespace pay -> stripe /v1/admin/**
"""


def compiled(text: str = MESH, **settings):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    outputs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings=settings))
    return checked.mesh, outputs, diags


@pytest.fixture(scope="module")
def files():
    _, outputs, diags = compiled()
    assert codes(diags) == []
    assert get_target("meshproxy").validate(outputs) == []
    return {o.path: json.loads(o.content) for o in outputs}


def test_ingress_workload(files):
    g = files["edge/web.json"]
    WorkloadConfig.model_validate(g, strict=True)
    assert g["version"] == 3 and g["workload"]["kind"] == "ingress" and g["workload"]["account"] == "gateway"
    assert g["identity"]["spiffe_id"] == "spiffe://shop.test/ns/edge/sa/gateway"
    assert g["listeners"]["inbound"] == []
    ing = g["ingress"]
    https = next(li for li in ing["listeners"] if li["protocol"] == "https")
    assert https["cert_file"] == f"{NS}/web.crt" and Path(https["cert_file"]).is_absolute()
    assert ing["providers"] == ["auth"] and [p["name"] for p in g["jwt"]] == ["auth"]
    first = ing["rules"][0]
    assert first["action"]["destinations"] == [{"service": "orders", "weight": 80.0},
                                               {"service": "frontend", "weight": 20.0}]
    assert first["rewrite"] == {"path": "/", "host": None}
    assert first["headers"] == [{"side": "request", "op": "set", "name": "x-from", "value": "web"}]
    assert ing["rules"][1]["cors"]["origins"] == ["https://shop.example.com"]
    # the ingress calls the services its rules name, each routed by its own route
    assert sorted(d["service"] for d in g["outbound"]["destinations"]) == ["frontend", "orders"]


def test_jwks_is_inline_and_compact(files):
    g = files["edge/web.json"]
    jwks = json.loads(g["jwt"][0]["jwks"])
    assert jwks == json.loads(Path(NS, "auth.jwks.json").read_text())
    assert "\n" not in g["jwt"][0]["jwks"]
    assert g["jwt"][0]["tokens"] == [{"kind": "header", "name": "authorization", "prefix": "Bearer "}]


def test_internet_principals_and_validating_providers(files):
    o = files["shop/orders/v1.json"]
    allow = o["inbound"]["authorization"]["allow"]
    p = allow[0]["principals"][0]
    assert p["kind"] == "internet" and p["jwt"] and p["provider"] is None
    assert p["ingresses"] == [{"spiffe_id": "spiffe://shop.test/ns/edge/sa/gateway", "providers": ["auth"]}]
    assert p["claims"] == [{"claim": "scope", "op": "has", "value": "orders:write"}]
    assert allow[1]["principals"][0]["provider"] == "partner"
    # the callee validates tokens of the ingress's providers and of those its rules name
    assert sorted(x["name"] for x in o["jwt"]) == ["auth", "partner"]
    partner = next(x for x in o["jwt"] if x["name"] == "partner")
    assert partner["tokens"] == [{"kind": "cookie", "name": "session", "prefix": None}] and partner["audiences"] == []
    # frontend: `allow internet` without a token, and nothing forwards a token it must check
    f = files["web/frontend.json"]
    assert f["inbound"]["authorization"]["allow"][0]["principals"][0]["jwt"] is False
    assert [x["name"] for x in f["jwt"]] == ["auth"]  # the ingress that forwards to it accepts auth


def test_keyed_limits(files):
    lims = files["shop/orders/v1.json"]["inbound"]["rate_limits"]
    assert [lim["key"] for lim in lims] == [{"kind": "claim", "name": "sub"}, {"kind": "header", "name": "x-api-key"}]


def test_route_options(files):
    orders = next(d for d in files["edge/web.json"]["outbound"]["destinations"] if d["service"] == "orders")
    r0, r1 = orders["routes"]
    assert r0["match"]["queries"] == [{"name": "view", "kind": "exact", "value": "full"}]
    assert r0["retry"]["on_status"] == [503] and r0["retry"]["retry_on"] == ["connect-failure"]
    assert r1["headers"] == [{"side": "response", "op": "remove", "name": "server", "value": None}]


def test_externals_per_caller(files):
    pay = files["pay/payments.json"]
    ext = pay["outbound"]["externals"][0]
    assert ext["name"] == "stripe" and ext["hosts"] == ["api.stripe.com"] and ext["timeout_ms"] == 2000
    assert ext["ports"] == [{"port": 443, "protocol": "tls", "dial": None, "listener": None}]
    assert [e["methods"] for e in ext["allow"]] == [["POST"]] and len(ext["deny"]) == 1
    assert pay["egress"] == {"stance": "registry_only", "ca_file": None}
    # frontend: no rule names it, the default (deny) decides at its sidecar
    fe = files["web/frontend.json"]["outbound"]["externals"][0]
    assert fe["allow"] == [] and fe["deny"] == [] and fe["default"] == "deny"


def test_local_stand_in_settings():
    _, outputs, diags = compiled(egress_ca="/tmp/ca.pem", external_endpoints={"stripe:443": "127.0.0.1:9443"})
    assert codes(diags) == []
    pay = json.loads(next(o.content for o in outputs if o.path == "pay/payments.json"))
    assert pay["egress"]["ca_file"] == "/tmp/ca.pem"
    assert pay["outbound"]["externals"][0]["ports"][0]["dial"] == {"address": "127.0.0.1", "port": 9443}
    for bad in ({"external_endpoints": {"stripe": "127.0.0.1:9443"}},
                {"external_endpoints": {"stripe:443": "127.0.0.1"}},
                {"external_endpoints": {"stripe:443": "127.0.0.1:99999"}},
                {"egress_ca": ""}):
        _, outs, diags = compiled(**bad)
        assert codes(diags) == ["MP730"] and outs == [], bad


@pytest.mark.parametrize("extra, construct", [
    ('external db { namespace pay; host "db.example.com", "db2.example.com"; port 5432 tcp }', "tcp, two hosts"),
    ('external db { namespace pay; host "db.example.com"; port 5432 tcp; timeout 2s }', "tcp with a timeout"),
])
def test_refused_constructs(extra, construct):
    _, _, diags = compiled(MESH + extra + "\n")
    assert "MP701" in codes(diags)  # compile writes nothing with an error (the CLI's rule)


@pytest.mark.parametrize("option", ["retry 2", "fault abort 503 10%", "mirror frontend"])
def test_ingress_rule_retry_fault_mirror_are_refused(option):
    text = MESH.replace('GET /** -> frontend cors origins "https://shop.example.com"', f"GET /** -> frontend {option}")
    checked = check_text(text)
    if not checked.ok:
        pytest.skip(f"the checker refuses `{option}` on an ingress rule itself")
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []


def test_jwks_changed_after_check_is_refused(tmp_path):
    jwks = tmp_path / "k.json"
    jwks.write_text(Path(NS, "auth.jwks.json").read_text())
    text = MESH.replace(f"{NS}/auth.jwks.json", jwks.as_posix())
    checked = check_text(text)
    assert checked.ok
    jwks.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
    outputs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions())
    assert "MP223" in codes(diags) and outputs == []


def test_output_rules_catch_broken_north_south_files(files):
    target = get_target("meshproxy")

    def broken(path, fn):
        cfg = copy.deepcopy(files[path])
        fn(cfg)
        return {d.code for d in target.validate([Output(path, json.dumps(cfg))])}

    assert broken("edge/web.json", lambda c: c["ingress"]["rules"][0]["action"]["destinations"][0].update(
        service="payments")) == {"MP702"}
    assert broken("edge/web.json", lambda c: c["ingress"]["listeners"][1].update(cert_file=None)) == {"MP702"}
    assert broken("edge/web.json", lambda c: c.update(ingress=None)) == {"MP702"}
    assert broken("shop/orders/v1.json", lambda c: c.update(jwt=[])) == {"MP702"}
    assert broken("edge/web.json", lambda c: c["outbound"]["destinations"][0]["routes"][0]["match"].update(
        queries=[{"name": "q", "kind": "regex", "value": "(unclosed"}])) == {"MP702"}


def test_keyed_buckets(files):
    """One bucket per key value (semantics.limit_keys): per header, per
    claim; requests without a value share one bucket."""
    from meshpolicy.wire import evaluate as ev

    cfg = copy.deepcopy(files["shop/orders/v1.json"])
    for lim in cfg["inbound"]["rate_limits"]:
        lim.update(max_tokens=1, tokens_per_fill=1, fill_interval_ms=60_000)
    front = files["web/frontend.json"]["identity"]["spiffe_id"]
    gw = files["edge/web.json"]["identity"]["spiffe_id"]
    b = ev.TokenBuckets(cfg)
    # per header: frontend's calls, one bucket per x-api-key value
    assert b.admit(front, "10.0.0.1", 0.0, {"x-api-key": "k1"})
    assert not b.admit(front, "10.0.0.1", 0.1, {"x-api-key": "k1"})
    assert b.admit(front, "10.0.0.1", 0.2, {"x-api-key": "k2"})
    assert b.admit(front, "10.0.0.1", 0.3, {}) and not b.admit(front, "10.0.0.2", 0.4, {})  # shared, no key

    class T:
        def __init__(self, claims):
            self.claims = claims

        def claims_for(self, p):
            return self.claims if p == "auth" else None

    # per claim: through the ingress with a token of auth
    assert b.admit(gw, "10.0.0.9", 1.0, {}, T({"sub": "alice"}))
    assert not b.admit(gw, "10.0.0.9", 1.1, {}, T({"sub": "alice"}))
    assert b.admit(gw, "10.0.0.9", 1.2, {}, T({"sub": "bob"}))
    assert b.admit(gw, "10.0.0.9", 1.3, {}, T({"sub": 7}))  # a non-string claim by its JSON text


def test_source_ip_key_reads_the_client_address(files):
    from meshpolicy.wire import evaluate as ev

    cfg = copy.deepcopy(files["shop/orders/v1.json"])
    lim = cfg["inbound"]["rate_limits"][1]
    lim.update(key={"kind": "source_ip", "name": None}, max_tokens=1, tokens_per_fill=1, fill_interval_ms=60_000)
    cfg["inbound"]["rate_limits"] = [lim]
    front = files["web/frontend.json"]["identity"]["spiffe_id"]
    b = ev.TokenBuckets(cfg)
    assert b.admit(front, "10.0.0.1", 0.0, {}, None, "203.0.113.5")
    assert not b.admit(front, "10.0.0.1", 0.1, {}, None, "203.0.113.5")
    assert b.admit(front, "10.0.0.1", 0.2, {}, None, "203.0.113.6")


def test_ingress_ports_follow_the_envoy_layout():
    """Mesh-unique: gateways by name after the services, listener i at
    block offset 4 + i (what the Envoy target does, so `meshc up` maps a
    written port the same way for both); per-workload: the written port."""
    text = MESH + 'ingress api { namespace edge; listen 9000 http; * -> orders }\n'
    _, outputs, diags = compiled(text, ports="mesh-unique", port_base=30000, ports_per_workload=10)
    assert codes(diags) == []
    files = {o.path: json.loads(o.content) for o in outputs}
    services = 4  # frontend, orders v1 and v2, payments
    api, web = files["edge/api.json"], files["edge/web.json"]
    assert api["listeners"]["admin"]["port"] == 30000 + services * 10 + 2
    assert [li["port"] for li in api["ingress"]["listeners"]] == [30000 + services * 10 + 4]
    assert [li["port"] for li in web["ingress"]["listeners"]] == [30000 + (services + 1) * 10 + 4,
                                                                   30000 + (services + 1) * 10 + 5]
    _, _, diags = compiled(text, ports="mesh-unique", port_base=30000, ports_per_workload=5)
    assert "MP730" in codes(diags)  # web needs 4 + 2 ports
    _, outputs, diags = compiled(text)
    assert codes(diags) == []
    assert [li["port"] for li in json.loads(next(o.content for o in outputs if o.path == "edge/web.json"))
            ["ingress"]["listeners"]] == [8080, 8443]
    _, _, diags = compiled(text.replace("listen 9000 http", "listen 15000 http"))
    assert codes(diags) == ["MP730"]


def test_tcp_external_listener_only_where_the_plan_lets_the_caller_out():
    text = MESH + 'external db { namespace pay; host "db.example.com"; port 5432 tcp }\nallow payments -> db\n'
    _, outputs, diags = compiled(text)
    assert codes(diags) == []
    files = {o.path: json.loads(o.content) for o in outputs}
    db = next(e for e in files["pay/payments.json"]["outbound"]["externals"] if e["name"] == "db")
    assert db["ports"][0]["listener"] == {"address": "127.0.0.1", "port": 15100}  # the first outbound tcp listener
    fe = next(e for e in files["web/frontend.json"]["outbound"]["externals"] if e["name"] == "db")
    assert fe["ports"][0]["listener"] is None
