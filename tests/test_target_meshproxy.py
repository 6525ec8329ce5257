"""The meshproxy target: format, schema, validation, determinism, CLI, codes."""

from __future__ import annotations

import copy
import json
import re
import tomllib

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meshpolicy.compile import CompileOptions, Output, compile_mesh, get_target
from meshpolicy.project import load
from meshpolicy.pipeline import check_project
from meshpolicy.resources import target_dir
from meshpolicy.wire import evaluate as ev
from meshpolicy.wire.config import WorkloadConfig
from meshpolicy.wire.schema import schema_text

from .conftest import EXAMPLES, ROOT, check_text, codes, run_meshc

SCHEMA = json.loads((target_dir("meshproxy") / "schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def http1(mesh) -> dict:
    """Every service's app speaks HTTP/1.1 (meshproxy refuses http2/grpc ports otherwise: MP701)."""
    return {"http1_apps": sorted(mesh.service_map)}


def compiled(path, **settings):
    checked = check_project(load([path]))
    assert checked.ok, codes(checked.diagnostics)
    settings = {**http1(checked.mesh), **settings}
    outputs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings=settings))
    assert codes(diags) == []
    return checked.mesh, {o.path: json.loads(o.content) for o in outputs}, outputs


def compile_text(text, **settings):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    return compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings={**http1(checked.mesh), **settings}))


@pytest.fixture(scope="module")
def shop():
    return compiled(EXAMPLES / "shop")


@pytest.fixture(scope="module")
def shop_unique():
    """The shop in the mesh-unique port layout (`meshc up`'s: every workload on one host)."""
    return compiled(EXAMPLES / "shop", ports="mesh-unique")


@pytest.fixture(scope="module")
def bookinfo():
    return compiled(EXAMPLES / "bookinfo")


# ---- schema -----------------------------------------------------------------

def test_schema_file_is_the_models_schema():
    assert (target_dir("meshproxy") / "schema.json").read_text() == schema_text(), \
        "regenerate: python -m meshpolicy.wire.schema > targets/meshproxy/schema.json"
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_every_output_matches_schema_and_models(example, shop, bookinfo):
    mesh, files, _ = {"shop": shop, "bookinfo": bookinfo}[example]
    n_workloads = sum(max(1, len({v.name for v in s.versions})) for s in mesh.services) + len(mesh.ingresses)
    assert len(files) == n_workloads  # one per version of each service, one per ingress gateway
    for path, cfg in files.items():
        assert list(VALIDATOR.iter_errors(cfg)) == [], path
        WorkloadConfig.model_validate(cfg, strict=True)
        assert cfg["version"] == 3


def _mutations(cfg):
    """(name, document, valid?) samples around one real config."""
    def edit(fn):
        c = copy.deepcopy(cfg)
        fn(c)
        return c
    d0 = lambda c: c["outbound"]["destinations"][0]  # noqa: E731
    yield "as compiled", cfg, True
    yield "extra top-level key", edit(lambda c: c.update(extra=1)), False
    yield "missing identity", edit(lambda c: c.pop("identity")), False
    yield "version 1", edit(lambda c: c.update(version=1)), False
    yield "version 2", edit(lambda c: c.update(version=2)), False
    yield "version 4", edit(lambda c: c.update(version=4)), False
    yield "upstream without endpoints", edit(lambda c: d0(c)["upstreams"][0].update(endpoints=[])), False
    yield "port zero", edit(lambda c: c["listeners"]["admin"].update(port=0)), False
    yield "port too big", edit(lambda c: c["listeners"]["admin"].update(port=70000)), False
    yield "port as string", edit(lambda c: c["listeners"]["admin"].update(port="20000")), False
    yield "bad mtls mode", edit(lambda c: c["inbound"].update(mtls="sometimes")), False
    yield "unknown principal kind", edit(
        lambda c: c["inbound"]["authorization"]["allow"][0]["principals"].append({"kind": "anyone"})), False
    yield "principal id without id", edit(
        lambda c: c["inbound"]["authorization"]["allow"][0]["principals"].append({"kind": "id"})), False
    yield "empty principals", edit(
        lambda c: c["inbound"]["authorization"]["allow"][0].update(principals=[])), False
    yield "bad method", edit(lambda c: c["inbound"]["authorization"]["allow"][0].update(methods=["get"])), False
    yield "weight over 100", edit(lambda c: d0(c)["routes"][-1]["action"]["destinations"][0].update(weight=150)), False
    yield "weight as int", edit(lambda c: d0(c)["routes"][-1]["action"]["destinations"][0].update(weight=100)), True
    yield "redirect status 200", edit(lambda c: d0(c)["routes"][-1].update(
        action={"kind": "redirect", "uri": "/x", "status": 200})), False
    yield "respond action", edit(lambda c: d0(c)["routes"][-1].update(
        action={"kind": "respond", "status": 404, "body": None})), True
    yield "null timeout", edit(lambda c: d0(c)["routes"][-1].update(timeout_ms=None)), True
    yield "zero timeout", edit(lambda c: d0(c)["routes"][-1].update(timeout_ms=0)), False
    yield "bool for int", edit(lambda c: d0(c)["routes"][-1].update(timeout_ms=True)), False
    yield "no destinations", edit(lambda c: c["outbound"].update(destinations=[])), True
    yield "labels not strings", edit(lambda c: c["workload"].update(labels={"a": 1})), False


def test_models_and_schema_agree(shop):
    _, files, _ = shop
    cfg = files["web/frontend/v1.json"]
    assert cfg["inbound"]["authorization"]["allow"] and cfg["outbound"]["destinations"]
    for name, doc, valid in _mutations(cfg):
        by_schema = VALIDATOR.is_valid(doc)
        try:  # as TARGET.validate does: from the JSON text
            WorkloadConfig.model_validate_json(json.dumps(doc), strict=True)
            by_models = True
        except ValidationError:
            by_models = False
        assert (by_schema, by_models) == (valid, valid), name


def test_validate_reports_broken_output(shop):
    _, files, outputs = shop
    target = get_target("meshproxy")
    assert target.validate(outputs) == []
    cfg = copy.deepcopy(files["web/frontend/v1.json"])
    dest = next(d for d in cfg["outbound"]["destinations"] if d["service"] == "orders")
    dest["routes"][2]["action"]["destinations"][0]["weight"] = 50.0  # 50 + 10
    dest["routes"][0]["match"]["headers"][0]["regex"] = "^(?:(unclosed)$"
    bad = [Output("web/frontend/v1.json", json.dumps(cfg)), Output("x.json", "{not json")]
    # A second workload on the same ports is a collision when both run on one host (mesh-unique).
    one_host = compiled(EXAMPLES / "shop", ports="mesh-unique")[2][-1]
    diags = target.validate(bad + [Output("copy.json", one_host.content), one_host])
    assert set(codes(diags)) == {"MP702"}
    text = " ".join(d.message for d in diags)
    assert "weights total" in text and "x.json" in text and "also used by" in text and "header" in text
    assert all(re.match(r"meshproxy output `[^`]+`(: | does not match the format: )", d.message) for d in diags)


def test_validate_on_every_core_says_the_same(shop_unique, monkeypatch):
    from meshpolicy.compile import parallel

    _, files, outputs = shop_unique
    broken = [Output("x.json", "{not json"), Output("copy.json", outputs[-1].content)]
    items = outputs + broken + outputs  # every workload twice: port collisions across workers too
    target = get_target("meshproxy")
    one = [(d.code, d.message) for d in target.validate(items)]
    monkeypatch.setattr(parallel, "MIN_ITEMS", 2)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    every = [(d.code, d.message) for d in target.validate(items)]
    assert every == one and len(one) > len(outputs)


# ---- content ------------------------------------------------------------------

def test_identity_and_port_convention(shop_unique):
    mesh, files, _ = shop_unique
    cfg = files["shop/catalog/v2.json"]
    assert cfg["identity"] == {
        "spiffe_id": "spiffe://shop.example/ns/shop/sa/catalog", "trust_domain": "shop.example",
        "cert_file": "/etc/meshpolicy/certs/shop/catalog/cert.pem",
        "key_file": "/etc/meshpolicy/certs/shop/catalog/key.pem", "ca_file": "/etc/meshpolicy/certs/ca.pem"}
    assert cfg["workload"]["labels"] == {"version": "v2", "track": "canary"}
    # Workload order: edge/gateway, pay/payments-db, pay/payments/v1, shop/catalog/v1, v2, ...
    order = sorted(files, key=lambda p: files[p]["listeners"]["admin"]["port"])
    assert [files[p]["workload"]["service"] for p in order] == sorted(
        files[p]["workload"]["service"] for p in files)
    i = order.index("shop/catalog/v2.json")
    ls = cfg["listeners"]
    assert (ls["inbound"][0]["port"], ls["outbound"]["port"], ls["admin"]["port"], ls["inbound"][0]["app"]["port"]) \
        == tuple(20000 + 10 * i + k for k in range(4))
    ports = [(f["listeners"]["admin"]["address"], f["listeners"]["admin"]["port"]) for f in files.values()]
    assert len(set(ports)) == len(ports)


def test_settings_move_ports_and_certs():
    checked = check_project(load([EXAMPLES / "bookinfo"]))
    outs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(
        certs_dir="/run/certs/", settings={"port_base": 30000, "ports_per_workload": 6, "listen_address": "::1"}))
    assert diags == []
    cfg = json.loads(outs[0].content)
    assert cfg["listeners"]["inbound"][0]["port"] == 30000 and cfg["listeners"]["admin"]["address"] == "::1"
    assert cfg["identity"]["ca_file"] == "/run/certs/ca.pem"


@pytest.mark.parametrize("settings", [{"port_bass": 1}, {"port_base": "20000"}, {"port_base": 0},
                                      {"ports_per_workload": 3}, {"listen_address": ""},
                                      {"port_base": 65000, "ports_per_workload": 100}])
def test_bad_settings_are_mp730(settings):
    checked = check_project(load([EXAMPLES / "shop"]))
    outs, diags = compile_mesh(checked.mesh, "meshproxy", CompileOptions(settings={**http1(checked.mesh),
                                                                                  **settings}))
    assert codes(diags) == ["MP730"] and outs == []


def test_mp730_fixture():
    fx = ROOT / "tests/fixtures/codes/MP730"
    settings = tomllib.loads((fx / "meshc.toml").read_text())["compile"]["meshproxy"]
    _, bad = compile_text((fx / "bad.mesh").read_text(), **settings)
    outs, good = compile_text((fx / "good.mesh").read_text(), **settings)
    assert "MP730" in codes(bad)
    assert codes(good) == [] and len(outs) == 3


def test_shared_identity_is_refused_by_check_mp108_once_for_every_target(tmp_path):
    text = """
mesh m { trust_domain "example.org" }
service a { account shared
  port 80 http }
service b { account shared
  port 80 http }
service c { port 80 http }
allow a -> c
"""
    from .conftest import check_text

    errs = [d for d in check_text(text).diagnostics if d.is_error]
    assert codes(errs) == ["MP108"] and errs[0].span.line == 5 and errs[0].labels[0].span.line == 8
    (tmp_path / "m.mesh").write_text(text)
    for target in ("meshproxy", "envoy", "istio"):
        r = run_meshc("compile", str(tmp_path), "--target", target, "-o", str(tmp_path / "out"))
        assert r.returncode == 1 and "MP108" in r.stdout + r.stderr, (target, r.stdout, r.stderr)
        assert "MP701" not in r.stdout + r.stderr and not (tmp_path / "out").exists()
    ok = check_text(text.replace("allow a -> c", "allow namespace default -> c"))
    assert "MP108" not in codes(ok.diagnostics)


def test_tcp_destination_gets_its_own_listener(shop_unique):
    _, files, _ = shop_unique
    cfg = files["pay/payments/v1.json"]
    db = next(d for d in cfg["outbound"]["destinations"] if d["service"] == "payments-db")
    base = cfg["listeners"]["inbound"][0]["port"]
    assert db["tcp_listener"]["port"] == base + 4
    assert all(d["tcp_listener"] is None for d in cfg["outbound"]["destinations"] if d["service"] != "payments-db")


def test_extra_declared_ports_get_listener_pairs():
    outs, diags = compile_text("""
service a { port 8080 http
  port 9090 grpc }
allow * -> a
""", ports="mesh-unique")
    assert diags == []
    cfg = json.loads(outs[0].content)
    inbound = cfg["listeners"]["inbound"]
    assert [(i["service_port"], i["port"], i["app"]["port"], i["app"]["protocol"]) for i in inbound] == [
        (8080, 20000, 20003, "http"), (9090, 20004, 20005, "grpc")]


def test_scoping_only_callable_destinations(shop):
    _, files, _ = shop
    dests = lambda p: [d["service"] for d in files[p]["outbound"]["destinations"]]  # noqa: E731
    # frontend is in namespace web: `deny namespace web -> payments-db` but no allow: not callable.
    assert dests("web/frontend/v1.json") == ["catalog", "orders"]
    assert dests("shop/orders/v1.json") == ["catalog", "inventory", "payments"]
    assert dests("pay/payments-db.json") == []


def test_resolved_overrides(shop):
    mesh, files, _ = shop
    cfg = files["web/frontend/v1.json"]
    orders = next(d for d in cfg["outbound"]["destinations"] if d["service"] == "orders")
    svc, rules = mesh.service("orders"), mesh.route_map["orders"].rules
    post = next(r for r in rules if r.retry is not None)
    plain = next(r for r in rules if r.retry is None and r.timeout_ms is None)
    got = orders["routes"][post.index]
    assert got["rule"] == post.index and got["match"]["methods"] == post.match.methods
    assert (got["retry"]["retries"], got["retry"]["retry_on"]) == (post.retry.attempts, post.retry.on)
    assert got["timeout_ms"] == svc.timeout_ms  # the service's timeout, resolved into the rule
    assert orders["routes"][plain.index]["retry"]["retries"] == svc.retry.attempts  # the service's retry
    catalog = next(d for d in cfg["outbound"]["destinations"] if d["service"] == "catalog")
    v2 = next(u for u in catalog["upstreams"] if u["version"] == "v2")
    assert v2["load_balancer"] == {"policy": "hash_header", "header": "x-user-id"}
    assert v2["outlier_detection"]["base_ejection_ms"] == 30000
    assert catalog["routes"][2]["action"]["mirror"] == {"version": "v2", "percent": 5.0}


def test_rate_limit_bucket(shop):
    _, files, _ = shop
    cfg = files["web/frontend/v1.json"]
    [lim] = cfg["inbound"]["rate_limits"]
    assert lim["principals"] == [{"kind": "id", "spiffe_id": "spiffe://shop.example/ns/edge/sa/gateway"}]
    assert (lim["max_tokens"], lim["tokens_per_fill"], lim["fill_interval_ms"]) == (100, 500, 1000)
    buckets = ev.TokenBuckets(cfg)
    gw = lim["principals"][0]["spiffe_id"]
    assert sum(buckets.admit(gw, "10.0.0.1", 0.0) for _ in range(150)) == 100
    assert all(buckets.admit(None, "10.0.0.2", 0.0) for _ in range(150))  # the limit names gateway only
    assert buckets.admit(gw, "10.0.0.1", 1.0)  # refilled a second later
    assert sum(buckets.admit(gw, "10.0.0.1", 1.0) for _ in range(150)) == 99


# ---- the evaluator on the examples --------------------------------------------

def test_evaluator_on_shop(shop):
    mesh, files, _ = shop
    fe = files["web/frontend/v1.json"]
    fe_id = fe["identity"]["spiffe_id"]
    ch = ev.route(fe, "catalog.shop:8080", "GET", "/items/42")
    assert (ch.kind, ch.rule, ch.weights) == ("forward", 1, {"v1": 90.0, "v2": 10.0})
    assert ev.route(fe, "catalog", "GET", "/x", {"X-Canary": "always"}).weights == {"v2": 100.0}
    assert ev.route(fe, "catalog", "GET", "/search/abc").mirror == ("v2", 5.0)
    assert (ev.route(fe, "catalog", "GET", "/legacy/a/b").kind, ev.route(fe, "catalog", "GET", "/legacy/a").status) \
        == ("redirect", 301)
    assert (ev.route(fe, "orders", "DELETE", "/orders/7").kind, ev.route(fe, "orders", "DELETE", "/o").status) \
        == ("no_route", 404)  # no rule of orders' route takes a DELETE
    assert ev.route(fe, "payments", "GET", "/").kind == "unknown_destination"
    cat = files["shop/catalog/v1.json"]
    assert ev.inbound_decision(cat, fe_id, "GET", "/items/42") == ev.InboundDecision(True, 0)
    assert not ev.inbound_decision(cat, fe_id, "GET", "/items/42/x").allowed
    assert not ev.inbound_decision(cat, None, "GET", "/items/42").allowed
    pay = files["pay/payments/v1.json"]
    orders_id = files["shop/orders/v1.json"]["identity"]["spiffe_id"]
    assert ev.inbound_decision(pay, orders_id, "POST", "/charge").allowed
    deny = next(r.index for r in mesh.auth_rules if r.effect == "deny" and r.target.name == "payments")
    assert ev.inbound_decision(pay, orders_id, "POST", "/admin/x") == ev.InboundDecision(False, deny)
    assert not ev.transport_accepts(pay, None)
    assert ev.upstream_address(next(d for d in fe["outbound"]["destinations"] if d["service"] == "catalog"),
                               "v2")[1] == files["shop/catalog/v2.json"]["listeners"]["inbound"][0]["port"]


# ---- determinism and hostile input --------------------------------------------

def test_output_is_sorted_and_byte_identical(shop):
    mesh, files, outputs = shop
    again, _ = compile_mesh(mesh, "meshproxy", CompileOptions(settings=http1(mesh)))
    assert [(o.path, o.content) for o in again] == [(o.path, o.content) for o in outputs]
    for o in outputs:
        assert o.content == json.dumps(json.loads(o.content), sort_keys=True, ensure_ascii=False,
                                       separators=(",", ":")) + "\n"


def test_cli_stdout_is_identical_across_hash_seeds(tmp_path, shop):
    import shutil

    shutil.copytree(EXAMPLES / "shop", tmp_path / "shop")
    with open(tmp_path / "shop" / "meshc.toml", "a") as fh:
        fh.write(f"\n[compile.meshproxy]\nhttp1_apps = {json.dumps(http1(shop[0])['http1_apps'])}\n")
    runs = [run_meshc("compile", str(tmp_path / "shop"), "--target", "meshproxy", "--stdout",
                      env={"PYTHONHASHSEED": s}) for s in ("1", "2")]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout.count("# ---- ") == 11  # 10 workloads and the ingress


def test_hostile_strings_survive():
    # Quotes, backslashes, newlines, non-ASCII and template syntax in strings.
    text = r"""
mesh m { trust_domain "example.org" }
service a { port 80 http
  version v1 { version: "v1" } }
service b { port 80 http }
route a {
  header "x-evil" = "a\"b\\c é </script> ${x} {{ y }}" -> respond 418 "q\"\nz"
  header "x-re" ~ "a.*\\$"                          -> redirect "/r?q=%22%7D&x=%C3%A9" 302
  *                                                 -> v1
}
allow b -> a
allow * -> b
"""
    outs, diags = compile_text(text)
    assert diags == []
    cfg = json.loads(next(o.content for o in outs if o.path == "default/b.json"))
    routes = cfg["outbound"]["destinations"][0]["routes"]
    assert routes[0]["match"]["headers"][0]["value"] == 'a"b\\c é </script> ${x} {{ y }}'
    assert routes[0]["action"]["body"] == 'q"\nz'
    assert routes[1]["action"]["uri"] == "/r?q=%22%7D&x=%C3%A9"
    assert ev.route(cfg, "a", "GET", "/", {"x-evil": 'a"b\\c é </script> ${x} {{ y }}'}).status == 418
    assert ev.route(cfg, "a", "GET", "/", {"x-re": "abc$"}).kind == "redirect"
    assert ev.route(cfg, "a", "GET", "/", {"x-re": "abc"}).kind == "forward"


def test_cli_writes_directory(tmp_path, bookinfo):
    out = tmp_path / "mp"
    r = run_meshc("compile", "examples/bookinfo", "--target", "meshproxy", "-o", str(out))
    assert r.returncode == 0, r.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert written == sorted(bookinfo[1]) and "bookinfo/reviews/v3.json" in written
    for p in out.rglob("*.json"):
        assert VALIDATOR.is_valid(json.loads(p.read_text()))


def test_cli_bad_settings_no_traceback(tmp_path):
    (tmp_path / "meshc.toml").write_text("[compile.meshproxy]\nport_base = -1\n")
    (tmp_path / "m.mesh").write_text("service a { port 80 http }\nallow * -> a\n")
    r = run_meshc("compile", str(tmp_path), "--target", "meshproxy", "-o", str(tmp_path / "out"),
                  "--format", "json")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "MP730" in r.stdout and not (tmp_path / "out").exists()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=20), other=st.text(max_size=20))
def test_literal_regex_matches_exactly_that_text(text, other):
    import re

    import re2

    from meshpolicy.targets.meshproxy.lower import literal

    rx = "^" + literal(text) + "$"
    assert re2.search(rx, text) and re.fullmatch(rx, text)
    # RE2's `$` is the end of the text (Python re's also matches before a final newline).
    assert bool(re2.search(rx, other)) == bool(re.fullmatch(rx, other)) == (other == text)
