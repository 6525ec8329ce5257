"""The Istio target: CRD-valid output, unsupported constructs, determinism,
atomic writes, escaping and the command line. Meaning is checked in
test_target_istio_meaning.py."""

from __future__ import annotations

import copy
import os
import shutil

import pytest
import re2
import yaml
from hypothesis import HealthCheck, given, settings

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.pipeline import check_project
from meshpolicy.project import load
from meshpolicy.targets.istio.output_check import check_document, check_outputs

from . import istio_schema
from .conftest import EXAMPLES, check_text, codes, run_meshc
from .strategies import mesh_programs

pytestmark = pytest.mark.skipif(istio_schema.MISSING is not None, reason=istio_schema.MISSING or "")

# A retry budget and circuit max_retries together cannot be honoured by Envoy
# (a budget replaces max_retries): MP701 for Istio. catalog.mesh has a budget.
SHOP_BREAK = ("catalog.mesh", "max_requests 1000", "max_requests 1000 max_retries 10")


def documents(outputs) -> list[dict]:
    return [d for o in outputs if o.path != "kustomization.yaml" for d in yaml.safe_load_all(o.content) if d]


def compile_text(text: str, **settings):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    return compile_mesh(checked.mesh, "istio", CompileOptions(settings=settings))


def compile_dir(path):
    checked = check_project(load([path]))
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    return compile_mesh(checked.mesh, "istio")


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("shop") / "shop"
    shutil.copytree(EXAMPLES / "shop", d)
    return d


@pytest.fixture(scope="module")
def broken_shop_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken-shop") / "shop"
    shutil.copytree(EXAMPLES / "shop", d)
    f = d / SHOP_BREAK[0]
    text = f.read_text()
    assert SHOP_BREAK[1] in text
    f.write_text(text.replace(SHOP_BREAK[1], SHOP_BREAK[2]))
    return d


def assert_crd_valid(docs):
    assert docs
    for d in docs:
        problems = istio_schema.errors(d)
        assert problems == [], (d["kind"], d["metadata"]["name"], problems)
        assert check_document(d) == [], (d["kind"], d["metadata"]["name"])


# ---- examples -------------------------------------------------------------------

def test_budget_with_max_retries_is_unsupported(broken_shop_dir):
    outputs, diags = compile_dir(broken_shop_dir)
    errs = [d for d in diags if d.is_error]
    assert codes(errs) == ["MP701"]
    assert errs[0].span.file.endswith("catalog.mesh") and "istio" in errs[0].message


def test_shop_compiles_to_valid_resources(shop_dir):
    outputs, diags = compile_dir(shop_dir)
    assert codes(diags) == ["MP710"]  # w3c tracing depends on the MeshConfig provider
    assert [o.path for o in outputs] == ["edge.yaml", "istio-system.yaml", "kustomization.yaml", "pay.yaml",
                                         "shop.yaml", "web.yaml"]
    docs = documents(outputs)
    assert_crd_valid(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("AuthorizationPolicy", "allow-nothing") in kinds  # default deny
    assert ("EnvoyFilter", "gateway-ratelimit") in kinds and ("EnvoyFilter", "frontend-ratelimit") in kinds
    # (an ingress, tokens and externals in the example add Gateway, RequestAuthentication and ServiceEntry)
    assert {k for k, _ in kinds} - {"Gateway", "RequestAuthentication", "ServiceEntry"} == {
        "AuthorizationPolicy", "DestinationRule", "EnvoyFilter", "PeerAuthentication", "Sidecar", "Telemetry",
        "VirtualService"}
    assert ("Sidecar", "default") in kinds  # the mesh-wide egress stance


def test_bookinfo_compiles_to_valid_resources():
    outputs, diags = compile_dir(EXAMPLES / "bookinfo")
    assert codes(diags) == []
    docs = documents(outputs)
    assert_crd_valid(docs)
    vs = next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["name"] == "reviews")
    rules = vs["spec"]["http"]
    assert rules[0]["match"] == [{"headers": {"end-user": {"exact": "jason"}}}]
    assert [r["weight"] for r in rules[1]["route"]] == [50, 50]
    ratings = next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["name"] == "ratings")
    assert ratings["spec"]["http"][0]["fault"]["delay"] == {"fixedDelay": "7s", "percentage": {"value": 100.0}}
    assert ratings["spec"]["http"][1]["fault"]["abort"]["httpStatus"] == 500


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mesh_programs())
def test_generated_meshes_compile_to_crd_valid_resources(text):
    checked = check_text(text)
    if not checked.ok:
        return
    outputs, diags = compile_mesh(checked.mesh, "istio")
    # Errors may only be MP701 (constructs Istio cannot express); never invalid output.
    assert set(codes([d for d in diags if d.is_error])) <= {"MP701"}, [(d.code, d.message) for d in diags]
    if not any(d.is_error for d in diags):
        assert_crd_valid(documents(outputs))


# ---- the validators cannot pass vacuously ------------------------------------------

def _a_virtual_service():
    outputs, _ = compile_dir(EXAMPLES / "bookinfo")
    return copy.deepcopy(next(d for d in documents(outputs) if d["kind"] == "VirtualService"
                              and d["metadata"]["name"] == "reviews"))


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"]["http"][0].__setitem__("retrys", {"attempts": 1}),           # unknown field
    lambda d: d["spec"]["http"][0]["route"][0]["destination"].__setitem__("hots", "x"),
    lambda d: d["spec"]["http"][0].__setitem__("timeout", "0.5ms"),                    # CEL: >= 1ms
    lambda d: d["spec"]["http"][0].__setitem__("timeout", "ten seconds"),              # CEL: duration()
    lambda d: d["spec"]["http"][1]["route"][0].__setitem__("weight", "fifty"),         # type
    lambda d: d["spec"]["http"][0]["match"][0]["headers"]["end-user"].update(prefix="j"),  # oneOf
])
def test_validators_reject_broken_documents(break_it):
    doc = _a_virtual_service()
    assert istio_schema.errors(doc) == [] and check_document(doc) == []
    break_it(doc)
    assert istio_schema.errors(doc), "the CRD validator accepted a broken document"
    assert check_document(doc), "the runtime validator accepted a broken document"


def test_runtime_validation_checks_weights_and_reports_mp702():
    doc = _a_virtual_service()
    doc["spec"]["http"][1]["route"][0]["weight"] = 60  # 60 + 50
    assert check_document(doc)
    from meshpolicy.compile import Output

    bad = Output("bookinfo.yaml", yaml.safe_dump(doc))
    assert codes(check_outputs([bad, Output("kustomization.yaml", "resources: [bookinfo.yaml]\n")])) == ["MP702"]


def test_output_check_on_every_core_says_the_same(shop_dir, monkeypatch):
    from meshpolicy.compile import Output, parallel
    from meshpolicy.targets.istio import output_check

    outputs, _ = compile_dir(shop_dir)
    doc = _a_virtual_service()
    doc["spec"]["http"][1]["route"][0]["weight"] = 60  # 60 + 50
    broken = [Output("z-weights.yaml", yaml.safe_dump(doc)), Output("a-not-yaml.yaml", "a: [\n")]
    items = outputs + broken
    one = [(d.code, d.message) for d in check_outputs(items)]
    monkeypatch.setattr(parallel, "MIN_ITEMS", 2)
    monkeypatch.setattr(output_check, "PARALLEL_BYTES", 0)
    every = [(d.code, d.message) for d in check_outputs(items)]
    assert every == one and len(one) >= 3  # both broken files, and kustomization.yaml no longer lists all


def test_untranslated_cel_rule_is_reported():
    schema = {"type": "object", "x-kubernetes-validations": [{"rule": "self.foo == 1", "message": "m"}]}
    assert istio_schema.cel_errors({}, schema)


# ---- unsupported constructs: MP701 naming construct, location, target ---------------

BASE = """
mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http; version v1; version v2 }
service b { namespace ns; port 8080 http; version v1 }
"""


@pytest.mark.parametrize("extra, line_has", [
    ("allow b -> a /x/**/y", "/x/**/y"),                                     # ** not at the end
    ('allow b -> a regex "/x/[0-9]+"', "regex"),                              # regex in authorization
    ('allow b -> a exact "/a*b"', '"/a*b"'),                                  # `*` is an Istio operator
    ("allow b -> a /x/*/y/**", "/x/*/y/**"),                                  # * and ** together
    ('route a { header "x-a" present header "x-a" prefix "p" -> v1 }', 'header "x-a" prefix'),
    ("route a { * -> v1 50.5%, v2 49.5% }", "50.5%"),                        # whole-percent weights
    ("service c { namespace ns; port 8080 http; retry 2 backoff 10ms max 50ms }", "max 50ms"),
    ("service c { namespace ns; port 8080 http; outlier consecutive_5xx 3 max 12.5% }", "12.5%"),
    ("service c { namespace ns; port 8080 http; retry 2 budget 20%; circuit max_retries 5 }", "budget"),
    ("service c { namespace ns; port 8080 http; retry 2; circuit max_retries 0 }", "max_retries 0"),
    ("route a { * -> v1 retry 2 budget 10% }", "budget"),
    ("limit * -> a 10/s", "*"),
    ("limit b -> a 1000/s burst 10", "burst 10"),                            # 50ms refill needs 50
    ("limit b -> a 10/s\nlimit namespace ns -> a 5/s", "namespace ns"),       # two limits, one pair
    ("service c { namespace ns; port 8080 http; port 9090 http }\nlimit b -> c 10/s", "limit b -> c"),
])
def test_unsupported_constructs_are_mp701(extra, line_has):
    text = BASE + extra + "\n"
    outputs, diags = compile_text(text)
    errs = [d for d in diags if d.is_error]
    assert codes(errs) and set(codes(errs)) == {"MP701"}, [(d.code, d.message) for d in diags]
    for d in errs:
        assert "istio" in d.message and d.span is not None
    lines = text.splitlines()
    assert any(line_has in lines[d.span.line - 1] for d in errs), [(d.span, d.message) for d in errs]


def test_max_retries_zero_without_retries_is_exact():
    outputs, diags = compile_text(BASE + "service c { namespace ns; port 8080 http; circuit max_retries 0 }\n")
    assert codes(diags) == []
    dr = next(d for d in documents(outputs) if d["kind"] == "DestinationRule" and d["metadata"]["name"] == "c")
    assert "connectionPool" not in dr["spec"]["trafficPolicy"]


def test_trace_formats_other_than_b3_warn_unless_a_provider_is_named():
    text = 'mesh m { trust_domain "example.org"; tracing w3c sample 5% }\nservice a { namespace ns; port 80 http }\n'
    _, diags = compile_text(text)
    assert codes(diags) == ["MP710"]
    outputs, diags = compile_text(text, tracing_provider="otel")
    assert codes(diags) == []
    tel = next(d for d in documents(outputs) if d["kind"] == "Telemetry")
    assert tel["spec"]["tracing"] == [{"providers": [{"name": "otel"}], "randomSamplingPercentage": 5.0}]


# ---- lowering details ---------------------------------------------------------------

def test_match_lists_become_the_cartesian_product():
    text = BASE + "route a { GET, POST /x /y/* from b -> v1 }\n"
    outputs, diags = compile_text(text)
    vs = next(d for d in documents(outputs) if d["kind"] == "VirtualService" and d["metadata"]["name"] == "a")
    m = vs["spec"]["http"][0]["match"]
    assert len(m) == 4
    assert {(x["method"]["exact"], next(iter(x["uri"]))) for x in m} == {
        ("GET", "exact"), ("GET", "regex"), ("POST", "exact"), ("POST", "regex")}
    regex = re2.compile(next(x["uri"]["regex"] for x in m if "regex" in x["uri"]))
    assert regex.fullmatch("/y/abc") and not regex.fullmatch("/y/a/b") and not regex.fullmatch("/y/")
    assert all(x["sourceLabels"] == {"app": "b"} and x["sourceNamespace"] == "ns" for x in m)
    assert vs["spec"]["http"][-1] == {"name": "no-route", "directResponse": {"status": 404}}


def test_default_allow_emits_no_allow_policies_and_no_scoping():
    text = BASE.replace('"example.org"', '"example.org"; default allow') + "allow b -> a GET\ndeny * -> a /admin\n"
    outputs, _ = compile_text(text)
    docs = documents(outputs)
    aps = [d for d in docs if d["kind"] == "AuthorizationPolicy"]
    assert [d["spec"]["action"] for d in aps] == ["DENY"]
    # no scoping: only the mesh-wide Sidecar carrying the egress stance, importing everything
    sidecars = [d for d in docs if d["kind"] == "Sidecar"]
    assert [(d["metadata"]["namespace"], d["spec"]["egress"]) for d in sidecars] == [
        ("istio-system", [{"hosts": ["*/*"]}])]


def test_authorization_sources_and_paths():
    text = BASE + "allow b, namespace ns, authenticated -> a GET /p/*, /q/**, /r, prefix \"/s\"\n"
    outputs, _ = compile_text(text)
    ap = next(d for d in documents(outputs) if d["metadata"]["name"] == "a-allow")
    rule = ap["spec"]["rules"][0]
    assert rule["from"] == [{"source": {"principals": ["*", "example.org/ns/ns/sa/b"]}},
                            {"source": {"namespaces": ["ns"]}}]
    assert rule["to"] == [{"operation": {"methods": ["GET"], "paths": ["/p/{*}", "/q/*", "/r", "/s*"]}}]
    outputs, _ = compile_text(BASE + "allow * -> a\n")
    ap = next(d for d in documents(outputs) if d["metadata"]["name"] == "a-allow")
    assert ap["spec"]["rules"] == [{}]


# ---- determinism, escaping, atomic output, CLI ----------------------------------------

def test_two_compiles_are_byte_identical(shop_dir):
    a, _ = compile_dir(shop_dir)
    b, _ = compile_dir(shop_dir)
    assert a == b


def test_output_does_not_depend_on_hash_seed(shop_dir):
    runs = [run_meshc("compile", str(shop_dir), "--target", "istio", "--stdout", "-q",
                      env={"PYTHONHASHSEED": seed}) for seed in ("1", "4242")]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout


HOSTILE = 'x": 1\n---\nkind: Secret\n- [a] # {b}'  # a response body may hold newlines
HOSTILE_HEADER = 'x": 1 --- kind: Secret - [a] # {b}'  # a header value may not (MP213)
REDIRECT = "/x:y?a=&b=*!'#z"  # YAML punctuation, but a valid URL


def test_hostile_strings_cannot_inject_yaml():
    import json

    text = BASE + (f'route a {{ header "x-h" = {json.dumps(HOSTILE_HEADER)} -> respond 200 {json.dumps(HOSTILE)}\n'
                   f'  header "x-r" ~ "a: b" -> redirect {json.dumps(REDIRECT)} }}\n')
    checked = check_text(text)
    assert checked.ok, codes(checked.diagnostics)
    outputs, diags = compile_mesh(checked.mesh, "istio")
    assert not any(d.is_error for d in diags)
    docs = documents(outputs)
    assert all(d["kind"] != "Secret" for d in docs)
    vs = next(d for d in docs if d["kind"] == "VirtualService" and d["metadata"]["name"] == "a")
    r0, r1 = vs["spec"]["http"][:2]
    assert r0["match"][0]["headers"]["x-h"] == {"exact": HOSTILE_HEADER}
    assert r0["directResponse"]["body"] == {"string": HOSTILE}
    assert r1["redirect"]["uri"] == REDIRECT


def test_yaml_words_as_label_keys_stay_strings():
    text = BASE.replace("version v2", 'version v2 { on: "yes", "null": "true" }')
    outputs, _ = compile_text(text)
    dr = next(d for d in documents(outputs) if d["kind"] == "DestinationRule" and d["metadata"]["name"] == "a")
    assert dr["spec"]["subsets"][1]["labels"] == {"null": "true", "on": "yes"}


def test_cli_writes_atomically_and_keeps_old_output_on_failure(tmp_path, shop_dir, broken_shop_dir):
    out = tmp_path / "out"
    r = run_meshc("compile", str(shop_dir), "--target", "istio", "-o", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "kustomization.yaml" in before and "shop.yaml" in before
    r = run_meshc("compile", str(broken_shop_dir), "--target", "istio", "-o", str(out), "--format", "json")
    assert r.returncode == 1 and "MP701" in r.stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary directories left behind


def test_cli_output_through_a_symlink_updates_its_target(tmp_path, shop_dir):
    real = tmp_path / "volume" / "istio"
    real.mkdir(parents=True)
    (real / "stale.yaml").write_text("old output\n")
    link = tmp_path / "out"
    link.symlink_to(real, target_is_directory=True)
    # twice: nothing accumulates; stale.yaml is not meshc's, so the first run needs --force (MP704)
    for force in (["--force"], []):
        r = run_meshc("compile", str(shop_dir), "--target", "istio", "-o", str(link), *force)
        assert r.returncode == 0, r.stdout + r.stderr
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert "kustomization.yaml" in os.listdir(real) and "stale.yaml" not in os.listdir(real)
    assert sorted(os.listdir(tmp_path)) == ["out", "volume"] and os.listdir(tmp_path / "volume") == ["istio"]


# ---- Sidecar scoping and rate limits ------------------------------------------------

def _sidecar_hosts(outputs, name):
    sc = next(d for d in documents(outputs) if d["kind"] == "Sidecar" and d["metadata"]["name"] == name)
    return sc["spec"]["egress"][0]["hosts"]


def test_sidecar_egress_is_what_allow_rules_permit():
    text = BASE + """service c { namespace other; port 8080 http; mtls off }
service d { namespace other; port 8080 http }
allow * -> c
deny b -> c
allow authenticated -> d
deny b -> d
"""
    outputs, diags = compile_text(text)
    assert not any(d.is_error for d in diags)
    # c has mTLS off: `deny b` can never match there, so b may still call c.
    assert _sidecar_hosts(outputs, "b") == ["other/c.other.svc.cluster.local", "istio-system/*"]
    assert _sidecar_hosts(outputs, "a") == ["other/c.other.svc.cluster.local", "other/d.other.svc.cluster.local",
                                            "istio-system/*"]
    assert _sidecar_hosts(outputs, "c") == ["other/d.other.svc.cluster.local", "istio-system/*"]
    assert _sidecar_hosts(outputs, "d") == ["other/c.other.svc.cluster.local", "istio-system/*"]


def test_sidecar_leaves_out_a_service_whose_mtls_hides_every_allowed_identity():
    """With mTLS off no caller identity is visible, so `allow namespace ns`
    matches no one (docs/semantics.md) and no sidecar is scoped to c."""
    outputs, diags = compile_text(BASE + """service c { namespace other; port 8080 http; mtls off }
allow namespace ns -> c
""")
    assert not any(d.is_error for d in diags)
    assert _sidecar_hosts(outputs, "a") == _sidecar_hosts(outputs, "b") == ["istio-system/*"]


@pytest.mark.parametrize("limit, bucket", [
    ("500/s burst 100", {"max_tokens": 100, "tokens_per_fill": 25, "fill_interval": "0.05s"}),
    ("6000/m", {"max_tokens": 6000, "tokens_per_fill": 5, "fill_interval": "0.05s"}),
    # 1/7 s is not a whole number of nanoseconds: 7 tokens every second instead.
    ("7/s", {"max_tokens": 7, "tokens_per_fill": 7, "fill_interval": "1s"}),
    ("3/h", {"max_tokens": 3, "tokens_per_fill": 1, "fill_interval": "1200s"}),
])
def test_rate_limit_token_buckets_keep_the_rate(limit, bucket):
    outputs, diags = compile_text(BASE + f"limit b -> a {limit}\n")
    assert codes(diags) == []
    ef = next(d for d in documents(outputs) if d["kind"] == "EnvoyFilter")
    assert ef["metadata"] == {"name": "b-ratelimit", "namespace": "ns"}
    assert ef["spec"]["workloadSelector"] == {"labels": {"app": "b"}}
    vhost = ef["spec"]["configPatches"][1]
    assert vhost["match"]["routeConfiguration"]["vhost"]["name"] == "a.ns.svc.cluster.local:8080"
    cfg = vhost["patch"]["value"]["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]["value"]
    assert cfg["token_bucket"] == bucket
    from meshpolicy.targets.istio.crd_models import duration_ns

    tb = cfg["token_bucket"]
    n, per = limit.split()[0].split("/")
    period = {"s": 1, "m": 60, "h": 3600}[per] * 10**9
    assert tb["tokens_per_fill"] * period == int(n) * duration_ns(tb["fill_interval"])  # the exact rate


def test_runtime_validation_parses_the_envoy_config():
    outputs, _ = compile_text(BASE + "limit b -> a 10/s\n")
    ef = next(d for d in documents(outputs) if d["kind"] == "EnvoyFilter")
    assert check_document(ef) == []
    cfg = ef["spec"]["configPatches"][1]["patch"]["value"]["typed_per_filter_config"][
        "envoy.filters.http.local_ratelimit"]["value"]
    cfg["token_bucket"]["fill_interval"] = "0.01s"  # under Envoy's 50ms minimum
    assert check_document(ef)
    cfg["token_bucket"]["fill_interval"] = "1s"
    cfg["token_buckets"] = {}  # not a LocalRateLimit field
    assert check_document(ef)
