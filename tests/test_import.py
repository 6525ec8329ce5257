"""Reading Istio and Gateway API YAML: meaning, places, round trips, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from meshpolicy.compile import compile_mesh
from meshpolicy.importers import import_sources
from meshpolicy.importers.emit import files_for
from meshpolicy.semantics.evaluate import Request, evaluate
from meshpolicy.span import SourceFile

from .conftest import ROOT, check_text, check_texts, run_meshc
from .strategies import request_space, small_policies

BOOKINFO = ROOT / "tests" / "fixtures" / "istio" / "bookinfo"


def imported(texts: dict[str, str], **kw):
    return import_sources({name: SourceFile(name, text) for name, text in texts.items()}, **kw)


def from_dir(d: Path, **kw):
    return import_sources({str(p): SourceFile(str(p), p.read_text()) for p in sorted(d.glob("*.yaml"))}, **kw)


def codes_at(result) -> list[tuple[str, int]]:
    return sorted((d.code, d.span.line if d.span else 0) for d in result.diagnostics)


# ---- a realistic Istio application --------------------------------------------------------------
def test_bookinfo_means_what_istio_does():
    r = from_dir(BOOKINFO)
    assert not [d for d in r.diagnostics if d.is_error], [(d.code, d.message) for d in r.diagnostics]
    mesh = r.mesh
    assert mesh.settings.mtls == "strict" and mesh.service("reviews").account == "bookinfo-reviews"
    assert [v.name for v in mesh.service("reviews").versions] == ["v1", "v2", "v3"]

    def outcome(src, dst, path="/", method="GET", headers=()):
        return evaluate(mesh, Request(src, dst, method, path, headers))

    assert outcome("productpage", "reviews", "/reviews/1").decision.allowed
    assert not outcome("productpage", "ratings", "/ratings/1").decision.allowed  # only reviews may
    assert outcome("reviews", "ratings", "/ratings/1").decision.allowed
    assert not outcome("reviews", "ratings", "/ratings/1", "POST").decision.allowed
    assert outcome("productpage", "details", "/details/0").decision.allowed
    assert not outcome("productpage", "details", "/other").decision.allowed
    assert not outcome("productpage", "reviews", "/admin/x").decision.allowed  # the DENY policy
    jason = outcome("productpage", "reviews", "/reviews/1", headers=(("end-user", "jason"),))
    assert jason.route.weights == {"v2": 100.0}
    assert outcome("productpage", "reviews", "/reviews/1").route.weights == {"v1": 50.0, "v3": 50.0}


def test_istio_defaults_are_imported():
    """No VirtualService retries: Istio's default policy (2 retries); a route with a
    fault: none (Istio switches them off); PeerAuthentication absent: PERMISSIVE."""
    text = SERVICE.format(name="api", ns="shop") + VS_FAULT
    mesh = imported({"a.yaml": text}).mesh
    svc = mesh.service("api")
    assert svc.retry.attempts == 2 and "connect-failure" in svc.retry.on
    assert mesh.route_map["api"].rules[0].retry.attempts == 0
    assert mesh.settings.mtls == "permissive"


SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{port: 8080, name: http}}]
---
"""
VS_FAULT = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /v1}}]
    fault: {abort: {httpStatus: 503, percentage: {value: 10}}}
    route: [{destination: {host: api}}]
"""


# ---- findings at the right YAML line ------------------------------------------------------------
def test_undefined_subset_points_at_the_subset_line():
    text = SERVICE.format(name="api", ns="shop") + """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.shop.svc.cluster.local]
  http:
  - route:
    - destination:
        host: api
        subset: v9
"""
    r = imported({"vs.yaml": text})
    assert ("MP907", 17) in codes_at(r)


def test_conflicting_virtual_services_oldest_wins():
    vs = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop, creationTimestamp: "{ts}"}}
spec:
  hosts: [api]
  http:
  - directResponse: {{status: {status}}}
---
"""
    text = SERVICE.format(name="api", ns="shop") + vs.format(name="newer", ts="2024-05-01T00:00:00Z", status=503) \
        + vs.format(name="older", ts="2023-01-01T00:00:00Z", status=200)
    r = imported({"vs.yaml": text})
    assert [d.code for d in r.diagnostics if d.code == "MP909"] == ["MP909"]
    out = evaluate(r.mesh, Request("api", "api"))
    assert out.route.kind == "respond" and out.route.status == 200


def test_policies_that_select_nothing_and_unknown_principals():
    text = SERVICE.format(name="api", ns="shop") + """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  selector: {matchLabels: {app: apii}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: q, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/nobody]}
"""
    lines = codes_at(imported({"p.yaml": text}))
    assert ("MP910", 12) in lines and ("MP911", 22) in lines


def test_fields_that_cannot_be_expressed_are_named():
    text = SERVICE.format(name="api", ns="shop") + """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p, namespace: shop}
spec:
  action: DENY
  rules:
  - to: [{operation: {notPaths: [/healthz]}}]
  - when: [{key: "request.headers[x-env]", values: [dev]}]
---
apiVersion: networking.istio.io/v1
kind: EnvoyFilter
metadata: {name: lua, namespace: shop}
spec: {}
"""
    r = imported({"p.yaml": text})
    got = codes_at(r)
    assert ("MP904", 14) in got and ("MP904", 15) in got and ("MP903", 17) in got
    messages = " ".join(d.message for d in r.diagnostics)
    assert "notPaths" in messages and "when" in messages and "EnvoyFilter" in messages
    refused = {f for (kind, f), c in r.coverage.fields.items() if c["refused"]}
    assert any("notPaths" in f for f in refused) and any("when" in f for f in refused)


def test_peer_authentication_precedence():
    """workload > namespace > mesh; UNSET inherits; DISABLE is off."""
    text = (SERVICE.format(name="a", ns="one") + SERVICE.format(name="b", ns="one") + SERVICE.format(name="c", ns="two")
            + """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: one}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b, namespace: one}
spec: {selector: {matchLabels: {app: b}}, mtls: {mode: DISABLE}}
""")
    mesh = imported({"pa.yaml": text}).mesh
    assert [mesh.mtls_of(mesh.service(n)) for n in "abc"] == ["permissive", "off", "strict"]


def test_plaintext_to_a_strict_destination_is_an_error():
    text = SERVICE.format(name="api", ns="shop") + """apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: shop}
spec:
  host: api
  trafficPolicy:
    tls: {mode: DISABLE}
"""
    assert ("MP913", 19) in codes_at(imported({"dr.yaml": text}))


def test_unreadable_yaml_is_a_diagnostic():
    r = imported({"bad.yaml": "kind: Service\n  bad: [\n"})
    assert [d.code for d in r.diagnostics] == ["MP901"] and r.diagnostics[0].span.file == "bad.yaml"


def test_line_endings_do_not_change_the_import():
    texts = {p.name: p.read_text() for p in sorted(BOOKINFO.glob("*.yaml"))}
    plain = files_for(imported(texts).mesh)
    for ending in ("\r\n", "\r"):
        assert files_for(imported({k: v.replace("\n", ending) for k, v in texts.items()}).mesh) == plain


# ---- Gateway API (GAMMA) --------------------------------------------------------------------------
def test_http_route_precedence_and_element_wise_prefix():
    text = (SERVICE.format(name="api", ns="shop") + """apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec:
  selector: {app: api, version: v2}
  ports: [{port: 8080, name: http}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: api, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /beta}}]
    backendRefs: [{name: api-v2, port: 8080}]
""")
    r = imported({"r.yaml": text})
    assert not [d for d in r.diagnostics if d.is_error]
    mesh = r.mesh

    def weights(path):
        return evaluate(mesh, Request("api", "api", "GET", path)).route.weights

    assert weights("/beta/x") == {"v2": 100.0}  # the longer prefix wins, though written second
    assert weights("/beta") == {"v2": 100.0}
    assert "v2" not in weights("/betamax")  # element-wise: /betamax is not under /beta


# ---- round trips -----------------------------------------------------------------------------------
def workloads_yaml(mesh) -> str:
    """What a cluster would hold for each service: a Service and one Deployment per version."""
    docs = []
    for s in mesh.services:
        ports = [{"port": p.number, "name": f"{p.protocol}-{p.number}"} for p in s.ports]
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": s.name, "namespace": s.namespace},
                     "spec": {"selector": {"app": s.name}, "ports": ports}})
        for v in s.versions or []:
            labels = {"app": s.name, **v.labels} if v.labels else {"app": s.name, "version": v.name}
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": f"{s.name}-{v.name}", "namespace": s.namespace},
                         "spec": {"template": {"metadata": {"labels": labels},
                                               "spec": {"serviceAccountName": s.account}}}})
    for g in mesh.ingresses:  # the gateway Deployment the Istio output selects (docs/targets/istio.md)
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": g.name, "namespace": g.namespace},
                     "spec": {"template": {"metadata": {"labels": {"app": g.name}},
                                           "spec": {"serviceAccountName": g.account}}}})
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def compiled_and_imported(text: str):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    if any(d.is_error for d in diags):
        return checked.mesh, None
    texts = {o.path: o.content for o in outputs if o.path != "kustomization.yaml"}
    texts["workloads.yaml"] = workloads_yaml(checked.mesh)
    return checked.mesh, imported(texts)


def route_meaning(outcome):
    """Where a request goes; a service without a route block sends it to every
    version evenly, as a one-rule route to the same versions does."""
    r = outcome.route
    # and a route's own final `respond 404` is what "no rule matched" answers anyway
    kind = {"default": "forward", "no_route": "respond"}.get(r.kind, r.kind)
    return kind, {k: round(v, 6) for k, v in r.weights.items()}, r.mirror, r.status


def same_meaning(original, mesh2, headers=True):
    for req in request_space(original, headers=headers):
        want, got = evaluate(original, req), evaluate(mesh2, req)
        assert got.decision.allowed == want.decision.allowed, f"authorization differs for {req}"
        if original.service(req.destination).http and want.decision.allowed:
            assert route_meaning(got) == route_meaning(want), f"routing differs for {req}"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_policies(assertions=False, max_services=3))
def test_import_of_compiled_istio_means_the_policy(text):
    original, result = compiled_and_imported(text)
    if result is None:
        return  # a construct Istio cannot express (MP701): nothing to read back
    assert not [d for d in result.diagnostics if d.is_error], [(d.code, d.message) for d in result.diagnostics]
    same_meaning(original, result.mesh, headers=len(original.services) < 3)


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_import_of_the_compiled_examples(example):
    texts = {p.name: p.read_text() for p in sorted((ROOT / "examples" / example).glob("*.mesh"))}
    checked = check_texts(texts)
    outputs, _ = compile_mesh(checked.mesh, "istio")
    yaml_texts = {o.path: o.content for o in outputs if o.path != "kustomization.yaml"}
    yaml_texts["workloads.yaml"] = workloads_yaml(checked.mesh)
    result = imported(yaml_texts)
    assert not [d for d in result.diagnostics if d.is_error]
    # what Istio resources carry that the import leaves out is named, never silent; a gateway route
    # to a subset (MP930) and an inline JWKS (MP923) are said too, and the meaning below still holds
    assert {d.code for d in result.diagnostics} <= {"MP903", "MP904", "MP905", "MP923", "MP930"}
    same_meaning(checked.mesh, result.mesh)


def test_emitted_files_read_back_as_the_same_mesh():
    r = from_dir(BOOKINFO)
    files = files_for(r.mesh)
    back = check_texts(files)
    assert back.ok, [(d.code, d.message) for d in back.diagnostics]
    for req in request_space(r.mesh, headers=True):
        a, b = evaluate(r.mesh, req), evaluate(back.mesh, req)
        assert (a.decision.allowed, a.route.kind, a.route.weights) == (b.decision.allowed, b.route.kind, b.route.weights)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_policies())
def test_printing_a_mesh_is_the_inverse_of_reading_it(text):
    checked = check_text(text)
    back = check_texts(files_for(checked.mesh))

    def dump(mesh):
        def strip(v):
            if isinstance(v, dict):
                return {k: strip(x) for k, x in v.items() if k not in ("span", "spans", "index", "files")}
            if isinstance(v, list):
                return [strip(x) for x in v]
            return v
        data = strip(mesh.model_dump())
        for key in ("auth_rules", "services", "routes", "rate_limits"):  # files group them by namespace
            data[key] = sorted(json.dumps(x, sort_keys=True) for x in data[key])
        data.pop("mesh_blocks")
        return data

    assert dump(back.mesh) == dump(checked.mesh)


# ---- the command line ---------------------------------------------------------------------------------
def test_import_command_writes_a_mesh_that_checks(tmp_path):
    out = tmp_path / "policy"
    proc = run_meshc("import", "istio", str(BOOKINFO), "-o", str(out), "--report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| VirtualService | 3 | 3 |" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [".meshc-output", "default.mesh", "mesh.mesh", "meshc.toml"]
    check = run_meshc("check", str(out))
    assert check.returncode == 0, check.stdout


def test_import_with_errors_writes_nothing(tmp_path):
    bad = tmp_path / "in.yaml"
    bad.write_text(SERVICE.format(name="api", ns="shop") + """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: shop}
spec:
  hosts: [api]
  http: [{route: [{destination: {host: api, subset: nope}}]}]
""")
    out = tmp_path / "out"
    proc = run_meshc("import", "istio", str(bad), "-o", str(out))
    assert proc.returncode == 1 and "MP907" in proc.stdout and not out.exists()
    assert "Traceback" not in proc.stderr


def test_verify_reads_yaml_directly_with_yaml_places(tmp_path):
    proc = run_meshc("verify", str(BOOKINFO), "--format", "sarif")
    assert proc.returncode == 0, proc.stdout
    sarif = json.loads(proc.stdout)
    results = sarif["runs"][0]["results"]
    assert results and all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith(".yaml")
                           for r in results if r.get("locations"))
    query = run_meshc("query", str(BOOKINFO), "productpage -> ratings GET /ratings/1")
    assert query.returncode == 0 and "deny" in query.stdout.lower()


# ---- every import code: its fixture reports it, the fixed one does not ---------------------------
IMPORT_CODES = sorted(c for c, i in __import__("meshpolicy.codes", fromlist=["catalogue"]).catalogue().items()
                      if i.stage == "import")


@pytest.mark.parametrize("code", IMPORT_CODES)
def test_import_code_fixtures(code, tmp_path):
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    folder = ROOT / "tests" / "fixtures" / "codes" / code
    for name, expected in (("bad.yaml", True), ("good.yaml", False)):
        d = tmp_path / name
        d.mkdir()
        (d / "in.yaml").write_text((folder / name).read_text())
        found = {x.code for x in check_project(load([d])).diagnostics}
        assert (code in found) == expected, (name, found)


def test_drift_between_live_yaml_and_the_policy(tmp_path):
    out = tmp_path / "policy"
    assert run_meshc("import", "istio", str(BOOKINFO), "-o", str(out)).returncode == 0
    same = run_meshc("diff", "--against", str(BOOKINFO), str(out))
    assert same.returncode == 0, same.stdout + same.stderr
    mesh_file = out / "default.mesh"
    mesh_file.write_text(mesh_file.read_text().replace("allow productpage -> reviews GET",
                                                       "allow productpage -> reviews GET, POST"))
    drift = run_meshc("diff", "--against", str(BOOKINFO), str(out))
    assert drift.returncode == 1 and "productpage -> reviews POST" in drift.stdout


def test_policy_scope_counts_workloads_without_a_service():
    """IST0127 is about workloads: a Pod no Service fronts still makes a selector
    valid, while a namespace-wide policy in a namespace without workloads, or a
    root-namespace selector no pod carries, reaches nothing."""
    text = SERVICE.format(name="api", ns="shop") + """apiVersion: v1
kind: Pod
metadata: {name: job-1, namespace: batch, labels: {app: job}}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: job-only, namespace: batch}
spec:
  selector: {matchLabels: {app: job}}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing-here, namespace: empty}
spec:
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bogus, namespace: istio-system}
spec:
  selector: {matchLabels: {version: bogus}}
"""
    r = imported({"p.yaml": text})
    flagged = sorted(d.message.split(":")[0] for d in r.diagnostics if d.code == "MP910")
    assert flagged == ["AuthorizationPolicy empty/nothing-here", "AuthorizationPolicy istio-system/bogus"]


def test_namespace_patterns_expand_to_known_namespaces():
    text = (SERVICE.format(name="a", ns="prod-eu") + SERVICE.format(name="b", ns="prod-us")
            + SERVICE.format(name="c", ns="dev") + """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-prod, namespace: dev}
spec:
  rules:
  - from:
    - source: {namespaces: ["prod-*", "*-bogus"]}
""")
    r = imported({"p.yaml": text})
    assert [d.code for d in r.diagnostics if d.code in ("MP911", "MP904")] == ["MP911"]  # *-bogus matches nothing
    mesh = r.mesh
    assert evaluate(mesh, Request("a", "c")).decision.allowed and evaluate(mesh, Request("b", "c")).decision.allowed
    assert not evaluate(mesh, Request("c", "c")).decision.allowed


def test_ports_without_a_protocol_name_are_said_to_be_sniffed():
    text = """apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports:
  - {port: 8080, name: web}
  - {port: 9090, name: grpc-api}
  - {port: 7070, appProtocol: http}
"""
    r = imported({"s.yaml": text})
    assert [(d.code, d.span.line) for d in r.diagnostics] == [("MP905", 7)]
    assert [p.protocol for p in r.mesh.service("api").ports] == ["http", "grpc", "http"]


def test_hostile_yaml_is_refused_quickly_not_crashing():
    """An alias bomb expands exponentially; a deeply nested document overflowed
    libyaml's C stack (a segfault). Both are MP901 in well under a second of work."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    flow = "a: " + "[" * 100_000 + "]" * 100_000 + "\n"
    block = "".join("  " * i + f"k{i}:\n" for i in range(3000)) + "  " * 3000 + "v: 1\n"
    for text in (bomb, flow, block):
        r = imported({"h.yaml": text})
        assert [d.code for d in r.diagnostics] == ["MP901"]


def test_verify_exits_cleanly_on_hostile_yaml(tmp_path):
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    proc = run_meshc("verify", str(tmp_path))
    assert proc.returncode == 1 and "MP901" in proc.stdout and "Traceback" not in proc.stderr


def test_grpc_route_matches_service_and_method():
    text = (SERVICE.format(name="api", ns="shop").replace("name: http", "name: grpc") + """apiVersion: v1
kind: Service
metadata: {name: api-v2, namespace: shop}
spec:
  selector: {app: api, version: v2}
  ports: [{port: 8080, name: grpc}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - matches: [{method: {service: shop.Orders}}]
    backendRefs: [{name: api, port: 8080}]
  - matches: [{method: {service: shop.Orders, method: Create}}]
    backendRefs: [{name: api-v2, port: 8080}]
""")
    r = imported({"g.yaml": text})
    assert not [d for d in r.diagnostics if d.code in ("MP903", "MP904") or d.is_error], r.diagnostics

    def weights(path):
        return evaluate(r.mesh, Request("api", "api", "POST", path)).route.weights

    assert weights("/shop.Orders/Create") == {"v2": 100.0}  # service and method beat service alone
    assert "v2" not in weights("/shop.Orders/List")


CANARY = ROOT / "tests" / "fixtures" / "istio" / "canary"


def test_canary_and_mtls_migration_mean_what_istio_does():
    r = from_dir(CANARY)
    assert not [d for d in r.diagnostics if d.is_error]
    mesh = r.mesh

    def out(src, dst, path="/", method="GET", headers=()):
        return evaluate(mesh, Request(src, dst, method, path, headers))

    # mTLS: mesh PERMISSIVE, prod STRICT, the legacy ledger DISABLE
    assert [mesh.mtls_of(mesh.service(n)) for n in ("frontend", "debug", "ledger")] == ["strict", "permissive", "off"]
    assert not out(None, "checkout").decision.allowed  # strict: refused before any rule
    # the canary: 90/10, and every beta tester to v2 ("canary")
    assert out("frontend", "checkout").route.weights == {"stable": 90.0, "canary": 10.0}
    assert out("frontend", "checkout", headers=(("x-beta", "1"),)).route.weights == {"canary": 100.0}
    # deny first: the admin API only from prod (tools is outside), internal paths from nobody
    assert not out("debug", "payments", "/admin/keys").decision.allowed
    assert out("debug", "payments", "/v1/charges").decision.allowed  # tools may GET
    assert not out("checkout", "payments", "/internal/x/y", "POST").decision.allowed
    assert out("checkout", "payments", "/v1/charges", "POST").decision.allowed
    assert not out("frontend", "payments", "/v1/charges", "POST").decision.allowed
    # the older VirtualService of payments is the one sidecars use: refunds answer 503, no injected 500s
    assert out("checkout", "payments", "/v1/refunds").route.status == 503
    assert out("checkout", "payments", "/v1/charges").route.kind in ("forward", "default")


@pytest.mark.parametrize("fixture", ["bookinfo", "canary"])
def test_compiling_an_import_back_to_istio_keeps_its_meaning(fixture):
    """y -> import -> compile --target istio -> import means what import(y) means."""
    folder = ROOT / "tests" / "fixtures" / "istio" / fixture
    first = from_dir(folder)
    outputs, diags = compile_mesh(first.mesh, "istio")
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    texts = {o.path: o.content for o in outputs if o.path != "kustomization.yaml"}
    core = [p for p in sorted(folder.glob("*.yaml")) if "kind: Service" in p.read_text()]
    texts.update({f"core-{p.name}": p.read_text() for p in core})
    second = imported(texts)
    assert not [d for d in second.diagnostics if d.is_error]
    same_meaning(first.mesh, second.mesh)
