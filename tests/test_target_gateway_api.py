"""The gateway-api target: GAMMA routes valid against the real Gateway API
v1.6.1 CRDs (and Istio's or Linkerd's CRDs for a flavour's resources),
meaning preserved against the reference evaluator, rule order never
silently changed, and what the standard channel lacks named (MP701)
unless a mesh flavour carries it."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.semantics.evaluate import evaluate

from . import kube_schema
from .conftest import EXAMPLES, ROOT, check_text, codes, run_meshc
from .route_meaning import linkerd_allowed, routes
from .strategies import request_space, small_policies
from .test_target_linkerd import expressible

ROUTING = """
mesh m {
  trust_domain "example.org"
  mtls permissive
  default allow
}
service web {
  namespace front
  port 8080 http
}
service api {
  namespace back
  port 8080 http
  version v1 { version: "v1" }
  version v2 { version: "v2" }
  timeout 2s
}
service grpcs {
  namespace back
  port 9000 grpc
  version v1
  version v2
}
route api {
  GET exact "/health" -> v1
  POST exact "/old" -> redirect "https://example.org/new" 308
  header "x-canary" = "always" -> v2
  * -> v1 80%, v2 20% mirror v2 12.5%
}
route grpcs {
  POST exact "/pkg.S/M" -> v2
  * -> v1 50%, v2 50%
}
"""

SECURED = ROUTING.replace("mtls permissive", "mtls strict").replace("default allow", "default deny") + """
allow web -> api
allow namespace front -> grpcs
allow authenticated -> web
deny api -> web
"""


def documents(outputs) -> list[dict]:
    return [d for o in outputs if o.path != "kustomization.yaml" for d in yaml.safe_load_all(o.content) if d]


def compiled(text: str, flavour: str | None = None):
    checked = check_text(text)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    outputs, diags = compile_mesh(checked.mesh, "gateway-api", CompileOptions(
        settings={"mesh": flavour} if flavour else {}))
    return checked.mesh, outputs, diags


def _crd_problems(outputs) -> list:
    return [(d["kind"], d["metadata"]["name"], e) for d in documents(outputs) for e in kube_schema.errors(d)]


@pytest.mark.parametrize("text, flavour", [(ROUTING, None), (SECURED, "istio"), (SECURED, "linkerd")],
                         ids=["standard", "istio", "linkerd"])
def test_output_validates_against_the_crds(text, flavour):
    _, outputs, diags = compiled(text, flavour)
    assert [d for d in diags if d.is_error] == []
    kinds = {d["kind"] for d in documents(outputs)}
    assert {"HTTPRoute", "GRPCRoute", "Service"} <= kinds
    if flavour == "istio":
        assert {"AuthorizationPolicy", "PeerAuthentication", "DestinationRule"} <= kinds
    if flavour == "linkerd":
        assert {"Server", "AuthorizationPolicy", "MeshTLSAuthentication"} <= kinds
    from . import istio_schema

    packs = ("gateway-api", "linkerd") if flavour == "linkerd" else ("gateway-api",)
    reason = kube_schema.missing(*packs) or (istio_schema.MISSING if flavour == "istio" else None)
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []


def test_the_crd_check_rejects_what_the_api_server_would():
    reason = kube_schema.missing("gateway-api")
    if reason:
        pytest.skip(reason)
    _, outputs, _ = compiled(ROUTING)
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute")
    rules = route["spec"]["rules"]
    # CEL: a redirect rule may not also forward
    bad = {**route, "spec": {**route["spec"], "rules": [{**rules[1], "backendRefs": rules[0]["backendRefs"]}]}}
    assert kube_schema.errors(bad)
    assert kube_schema.errors({**route, "spec": {**route["spec"], "colour": "red"}})
    # CEL: a backendRef to a Service needs its port
    no_port = [{k: v for k, v in b.items() if k != "port"} for b in rules[0]["backendRefs"]]
    assert kube_schema.errors({**route, "spec": {**route["spec"], "rules": [{**rules[0], "backendRefs": no_port}]}})


def test_standard_channel_names_what_it_cannot_express():
    _, outputs, diags = compiled(SECURED)
    assert outputs == [] and set(codes(diags)) == {"MP701"}
    assert all("mesh =" in (d.help or "") for d in diags)  # each says which flavour would carry it


def test_rule_order_a_route_would_change_is_mp701():
    """Routes prefer the more specific match: `GET /a` after a header rule
    would take GET /a requests with the header, which the policy gives to
    the header rule; it is refused, not reordered."""
    text = ROUTING.replace('''  GET exact "/health" -> v1
  POST exact "/old" -> redirect "https://example.org/new" 308
  header "x-canary" = "always" -> v2''', '''  header "x-canary" = "always" -> v2
  GET exact "/health" -> v1''')
    _, outputs, diags = compiled(text)
    assert codes(diags) == ["MP701"] and outputs == []
    assert diags[0].span.line == text.splitlines().index('  GET exact "/health" -> v1') + 1


def test_hostile_strings_stay_strings():
    text = ROUTING.replace('header "x-canary" = "always"', 'header "x-canary" = "a: b\\\\\\" - [c]# {d}"')
    text = text.replace('"https://example.org/new"', '"/x\'y:z,[a]&b=c"')
    mesh, outputs, diags = compiled(text)
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute")
    hdr = route["spec"]["rules"][2]["matches"][0]["headers"][0]["value"]
    assert hdr == next(h.value for r in mesh.routes for x in r.rules for h in x.match.headers)
    redirect = route["spec"]["rules"][1]["filters"][0]["requestRedirect"]["path"]["replaceFullPath"]
    assert redirect == next(x.action.uri for r in mesh.routes for x in r.rules if x.action.kind == "redirect")


def test_settings_and_name_collisions():
    checked = check_text(ROUTING)
    _, diags = compile_mesh(checked.mesh, "gateway-api", CompileOptions(settings={"mesh": "consul"}))
    assert codes(diags) == ["MP740"]
    _, diags = compile_mesh(checked.mesh, "gateway-api", CompileOptions(settings={"flavour": "istio"}))
    assert codes(diags) == ["MP740"]


@pytest.mark.parametrize("code", ["MP740", "MP741"])
def test_code_fixtures(code, tmp_path):
    fx = ROOT / "tests" / "fixtures" / "codes" / code
    args = (fx / "command").read_text().split()
    for name, want in (("bad", 1), ("good", 0)):
        work = tmp_path / name
        work.mkdir()
        (work / "p.mesh").write_text((fx / f"{name}.mesh").read_text())
        toml = (fx / "meshc.toml").read_text() if (fx / "meshc.toml").exists() else ""
        if name == "good":
            toml = toml.replace('mesh = "consul"', 'mesh = "istio"')
        (work / "meshc.toml").write_text(toml)
        r = run_meshc(*args[:1], str(work), *args[1:], "--format", "json")
        assert r.returncode == want, (name, r.stdout, r.stderr)
        found = r.stderr if "--stdout" in args else r.stdout  # files go to stdout, findings to stderr
        report = json.loads(found) if found.strip() else {"diagnostics": []}  # nothing to say: nothing printed
        errors = {d["code"] for d in report["diagnostics"] if d["severity"] == "error"}
        assert errors == ({code} if name == "bad" else set()), (name, errors)


def _shop_with(tmp_path, gateway_table: str):
    """A copy of examples/shop whose [compile.gateway-api] table is gateway_table."""
    import re

    mesh_dir = tmp_path / "shop"
    shutil.copytree(EXAMPLES / "shop", mesh_dir)
    toml = (EXAMPLES / "shop" / "meshc.toml").read_text()
    toml = re.sub(r"(?ms)^\[compile\.gateway-api\]\n.*?(?=^\[|\Z)", "", toml)
    (mesh_dir / "meshc.toml").write_text(toml + "\n" + gateway_table)
    return mesh_dir


def _compile_json(mesh_dir, out):
    r = run_meshc("compile", str(mesh_dir), "--target", "gateway-api", "-o", str(out), "--format", "json")
    return r, json.loads(r.stdout)["diagnostics"]


def test_shop_without_its_waivers_names_what_it_cannot_express_and_writes_nothing(tmp_path):
    for flavour in (None, "istio", "linkerd"):
        work = tmp_path / (flavour or "standard")
        cfg = f'[compile.gateway-api]\nmesh = "{flavour}"\n' if flavour else ""
        out = work / "out"
        r, diags = _compile_json(_shop_with(work, cfg), out)
        assert r.returncode == 1, r.stdout
        errors = [d for d in diags if d["severity"] == "error"]
        assert errors and {d["code"] for d in errors} == {"MP701"}, flavour
        assert not any(d["code"] == "MP706" for d in diags)
        assert not out.exists()


def test_shop_with_its_waivers_compiles(tmp_path):
    """examples/shop/meshc.toml waives resilience tuning for gateway-api (mesh
    = "istio"); everything else is written, its ingress included (`from
    frontend` is a consumer route in namespace `web`, the first-match order
    is laid out for Istio's order of matches, the ingress's glob rewrite is
    a PathPrefix with ReplacePrefixMatch)."""
    import tomllib

    out = tmp_path / "out"
    r, diags = _compile_json(EXAMPLES / "shop", out)
    errors = [d for d in diags if d["severity"] == "error"]
    assert r.returncode == 0 and errors == [] and out.exists(), errors
    waive = set(tomllib.loads((EXAMPLES / "shop" / "meshc.toml").read_text())["compile"]["gateway-api"]["waive"])
    waived = {d["message"].rsplit("`", 2)[-2] for d in diags if d["code"] == "MP706"}
    assert waived and waived <= waive
    assert not [d for d in diags if d["code"] == "MP709"]


def shop_mesh():
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    return check_project(load([EXAMPLES / "shop"]))


def test_shop_rules_compile_to_istio_flavour_valid_and_with_the_policys_meaning(tmp_path):
    from . import istio_schema
    from .test_target_istio_meaning import Cluster

    checked = shop_mesh()
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    import tomllib

    settings = tomllib.loads((EXAMPLES / "shop" / "meshc.toml").read_text())["compile"]["gateway-api"]
    outputs, diags = compile_mesh(checked.mesh, "gateway-api", CompileOptions(settings=settings))
    assert [d for d in diags if d.is_error] == []
    assert {d.code for d in diags} <= {"MP706", "MP710"}
    kust = next(o.content for o in outputs if o.path == "kustomization.yaml")
    assert "fault-abort: " in kust and "retry-budget: " in kust  # the output records the waivers
    docs = documents(outputs)
    kinds = {d["kind"] for d in docs}
    assert {"HTTPRoute", "GRPCRoute", "AuthorizationPolicy", "PeerAuthentication", "DestinationRule",
            "EnvoyFilter", "ReferenceGrant"} <= kinds
    # `from frontend` is catalog's consumer route in frontend's namespace, granted its backends
    consumer = [d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["namespace"] == "web"
                and d["spec"]["parentRefs"][0].get("namespace") == "shop"]
    assert [(d["metadata"]["name"], [r["name"] for r in d["spec"]["rules"]]) for d in consumer] == \
        [("catalog", ["rule-1", "rule-2", "rule-3", "rule-4", "rule-5"])]
    producer = next(d for d in docs if d["kind"] == "HTTPRoute" and d["metadata"]["namespace"] == "shop"
                    and d["metadata"]["name"] == "catalog")
    assert [r["name"] for r in producer["spec"]["rules"]] == ["rule-1", "rule-3", "rule-4", "rule-5"]
    # laid out for Istio: the canary also matches /search exactly; the catch-all GET is a short regex
    canary = producer["spec"]["rules"][0]["matches"]
    assert {"path": {"type": "Exact", "value": "/search"}, "method": "GET",
            "headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]} in canary
    assert producer["spec"]["rules"][3]["matches"] == [
        {"method": "GET", "path": {"type": "RegularExpression", "value": "^(?s:.*)$"}}]
    grant = next(d for d in docs if d["kind"] == "ReferenceGrant")
    assert grant["metadata"]["namespace"] == "shop" and grant["spec"]["from"][0]["namespace"] == "web"
    # the rate limits are enforced at their callers, as the istio target writes them
    limited = {d["metadata"]["name"] for d in docs if d["kind"] == "EnvoyFilter"}
    assert limited == {"frontend-ratelimit", "gateway-ratelimit", "orders-ratelimit"}
    # nothing waived is written: no retries, faults or GRPCRoute timeouts
    # (the externals' VirtualServices are the istio target's: retries off unless the external sets them)
    text = yaml.safe_dump_all([d for d in docs if d["kind"] != "VirtualService"])
    assert "retries:" not in text and "fixedDelay" not in text and "abort:" not in text
    # meaning: authorization and routing as the reference evaluator says
    mesh = checked.mesh
    for req in request_space(mesh):
        want = evaluate(mesh, req)
        if want.decision.refused is None:
            assert Cluster(mesh, docs).allowed(req) == want.decision.allowed, req
        r = want.route
        if r.kind == "rejected":
            continue
        got = routes(docs, mesh, req, regex_rank=True)
        kind = "forward" if r.kind == "default" and got[0] == "forward" else r.kind
        assert got[0] == kind, (req, got, r.kind)
        if kind == "forward":
            assert {k: round(v, 6) for k, v in got[2].items() if v} == \
                {k: round(v, 6) for k, v in (r.weights or {None: 100.0}).items() if v}, req
            assert got[3] == r.mirror, req
    reason = kube_schema.missing("gateway-api") or istio_schema.MISSING
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []


# ---- meaning ------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(mtls_modes=("strict", "permissive"), actions=("forward", "split", "redirect", "mirror"),
                      header_kinds=("exact", "prefix", "regex", "present"), assertions=False))
def test_istio_flavour_meaning_agrees_with_the_reference(text):
    from .test_target_istio_meaning import Cluster

    _agree(expressible(text), "istio", lambda docs, mesh, req: Cluster(mesh, docs).allowed(req))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(mtls_modes=("strict", "permissive"), actions=("forward", "split", "redirect", "mirror"),
                      header_kinds=("exact", "prefix", "regex", "present"), assertions=False))
def test_linkerd_flavour_meaning_agrees_with_the_reference(text):
    _agree(expressible(text), "linkerd", linkerd_allowed)


def _agree(text: str, flavour: str, allowed) -> None:
    checked = check_text(text)
    assume(checked.ok)
    mesh = checked.mesh
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": flavour}))
    assert all(d.code == "MP701" for d in diags if d.is_error), [(d.code, d.message) for d in diags]
    assume(not any(d.is_error for d in diags))
    docs = documents(outputs)
    for req in request_space(mesh):
        want = evaluate(mesh, req)
        if want.decision.refused is None or flavour == "linkerd":
            assert allowed(docs, mesh, req) == want.decision.allowed, f"authorization disagrees on {req}"
        r = want.route
        if r.kind == "rejected":
            continue
        got = routes(docs, mesh, req, regex_rank=flavour == "istio")
        kind = "forward" if r.kind == "default" and got[0] == "forward" else r.kind
        assert got[0] == kind, f"route kind disagrees on {req}: {got} vs {r.kind}"
        if kind == "forward":
            want_w = r.weights or {None: 100.0}
            assert {k: round(v, 6) for k, v in got[2].items() if v} == \
                {k: round(v, 6) for k, v in want_w.items() if v}, req
            assert got[3] == r.mirror, req
        if kind == "redirect":
            assert got[4] == r.status, req
        if r.rule is not None:
            assert got[1] == r.rule.index, f"route rule disagrees on {req}"


# ---- rule order: regex paths with distinct literal starts never overlap ------------------

LEAD_PATTERNS = [("prefix", "/adm"), ("prefix", "/a.b"), ("glob", "/orders/*"), ("glob", "/orders/**"),
                 ("glob", "/a+b/*"), ("regex", "/items/[0-9]+"), ("regex", "/admin(/.*)?"), ("regex", "/ab*c"),
                 ("regex", "/x+y"), ("regex", "(/a)?/b"), ("regex", "/a{2}b"), ("regex", "/x?"),
                 ("regex", "/a|/b"), ("regex", "^/s/[a-z]+$"), ("regex", "/a\\.b/c")]


@pytest.mark.parametrize("kind, value", LEAD_PATTERNS)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_regex_paths_lead_starts_every_path_it_matches(kind, value, data):
    """_lead is what the order check's disjointness rests on: every path a
    generated RegularExpression matches starts with it."""
    import re

    from meshpolicy.model.types import PathPattern
    from meshpolicy.targets.http_routes import Dialect, _lead, path_match
    from meshpolicy.span import Span

    span = Span("t.mesh", 1, 1, 1, 1, 0, 0)
    rx = path_match(PathPattern(span=span, kind=kind, value=value), Dialect("gateway-api", True, True, ()), "")["value"]
    path = data.draw(st.from_regex(re.compile(rx), fullmatch=True))
    assert path.startswith(_lead(rx)), (rx, path, _lead(rx))


def test_regex_rules_with_distinct_starts_keep_their_order():
    """`GET /items/* -> ...` then `GET /legacy/** -> redirect`: both are
    RegularExpressions, which rank as the mesh likes, but no path matches
    both, so their order cannot matter (it was MP701)."""
    text = ROUTING.split("route api {")[0] + '''route api {
  GET /items/* -> v2
  GET /legacy/** -> redirect "/items" 301
}
'''
    _, outputs, diags = compiled(text, "istio")
    assert [d for d in diags if d.is_error] == []
    # these overlap, and Istio ranks the longer expression first: /items/* before /items/**
    _, outputs, diags = compiled(text.replace("GET /legacy/**", "GET /items/**"), "istio")
    assert [d for d in diags if d.is_error] == []
    swapped = text.replace("  GET /items/* -> v2\n  GET /legacy/** -> redirect \"/items\" 301\n",
                           "  GET /items/** -> redirect \"/items\" 301\n  GET /items/* -> v2\n")
    _, outputs, diags = compiled(swapped, "istio")
    assert [d.code for d in diags if d.is_error] == ["MP701"]  # a request to /items/1 would take rule 2
    _, outputs, diags = compiled(swapped, "linkerd")
    assert [d.code for d in diags if d.is_error] == ["MP701"]  # regexes rank as Linkerd likes


# ---- `from`: GAMMA consumer routes (mesh = "istio") ----------------------------------------

CONSUMERS = """
mesh m {
  trust_domain "example.org"
  mtls strict
  default allow
}
service web {
  namespace front
  port 8080 http
}
service admin {
  namespace ops
  port 8080 http
}
service api {
  namespace back
  port 8080 http
  version v1
  version v2
}
route api {
  from web GET /items/* -> v2
  from admin, web /admin/** -> v1 mirror v2 10%
  exact "/health" -> v1
}
"""


def test_from_is_a_consumer_route_per_calling_namespace():
    mesh, outputs, diags = compiled(CONSUMERS, "istio")
    assert [d for d in diags if d.is_error] == []
    docs = documents(outputs)
    routes_ = {(d["metadata"]["namespace"], d["metadata"]["name"]): [r["name"] for r in d["spec"]["rules"]]
               for d in docs if d["kind"] == "HTTPRoute"}
    assert routes_ == {("back", "api"): ["rule-3"], ("front", "api"): ["rule-1", "rule-2", "rule-3"],
                       ("ops", "api"): ["rule-2", "rule-3"]}
    grants = {d["spec"]["from"][0]["namespace"]: sorted(t["name"] for t in d["spec"]["to"])
              for d in docs if d["kind"] == "ReferenceGrant"}
    assert grants == {"front": ["api-v1", "api-v2"], "ops": ["api-v1", "api-v2"]}
    assert all(d["metadata"]["namespace"] == "back" for d in docs if d["kind"] == "ReferenceGrant")
    for req in request_space(mesh):
        want = evaluate(mesh, req).route
        if want.kind == "rejected":
            continue
        got = routes(docs, mesh, req, regex_rank=True)
        assert (got[0], got[1]) == (want.kind if want.kind != "default" else got[0],
                                    want.rule.index if want.rule else None), req
        if got[0] == "forward":
            assert {k: round(v, 6) for k, v in got[2].items() if v} == \
                {k: round(v, 6) for k, v in (want.weights or {None: 100.0}).items() if v}, req
            assert got[3] == want.mirror, req
    reason = kube_schema.missing("gateway-api")
    if reason:
        pytest.skip(reason)
    assert [p for p in _crd_problems(outputs) if p[0] in ("HTTPRoute", "ReferenceGrant")] == []


@pytest.mark.parametrize("change, why", [
    ("service admin {\n  namespace ops", "service admin {\n  namespace front"),  # front: web but not admin
    ("from web GET /items/*", "from api GET /items/*"),  # the service's own namespace
])
def test_from_that_no_consumer_route_holds_is_mp701(change, why):
    _, outputs, diags = compiled(CONSUMERS.replace(change, why), "istio")
    assert [d.code for d in diags if d.is_error] == ["MP701"] and outputs == []


def test_from_without_the_istio_flavour_is_mp701():
    for flavour in (None, "linkerd"):
        _, outputs, diags = compiled(CONSUMERS, flavour)
        assert "MP701" in [d.code for d in diags if d.is_error] and outputs == []


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(mtls_modes=("strict", "permissive"), actions=("forward", "split", "redirect", "mirror"),
                      header_kinds=("exact", "prefix", "regex", "present"), assertions=False))
def test_istio_flavour_routes_with_from_agree_with_the_reference(text):
    """Generated policies with their `from` rules (auth rules as written):
    wherever the istio flavour compiles them, each caller's route (its
    namespace's consumer route, else the service's own) picks what the
    reference evaluator picks."""
    from .test_target_istio_meaning import Cluster

    _agree(text, "istio", lambda docs, mesh, req: Cluster(mesh, docs).allowed(req))


LAYOUT = ROUTING.split("route api {")[0] + """route api {
  header "x-canary" = "always" GET -> v2
  GET exact "/health" -> v1
  GET /items/** -> v1 80%, v2 20%
  GET -> v1
}
"""


def test_istio_layout_keeps_first_match_order_in_istios_order():
    """The canary gets `/health` as a match of its own (it would lose it to
    the exact path); the catch-all GET becomes a short regex (it would
    outrank the glob). Without the flavour's known order both are MP701."""
    mesh, outputs, diags = compiled(LAYOUT, "istio")
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "api")
    rules = route["spec"]["rules"]
    assert {"path": {"type": "Exact", "value": "/health"}, "method": "GET",
            "headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]} in rules[0]["matches"]
    assert rules[3]["matches"] == [{"method": "GET", "path": {"type": "RegularExpression", "value": "^(?s:.*)$"}}]
    docs = documents(outputs)
    for req in request_space(mesh):
        want = evaluate(mesh, req).route
        if want.kind == "rejected" or req.destination != "api":
            continue
        got = routes(docs, mesh, req, regex_rank=True)
        assert got[1] == (want.rule.index if want.rule else None), (req, got, want)
    _, _, diags = compiled(LAYOUT, "linkerd")
    assert {d.code for d in diags if d.is_error} == {"MP701"}  # Linkerd's order of regexes is not known


def test_istio_layout_leaves_what_it_cannot_fix_to_mp701():
    """A later expression longer than the earlier one it overlaps: no
    rewrite keeps both rules' requests and the order."""
    text = LAYOUT.replace("  GET /items/** -> v1 80%, v2 20%\n  GET -> v1\n",
                          "  GET /items/** -> v1 80%, v2 20%\n  GET /items/*/lines -> v2\n")
    _, outputs, diags = compiled(text, "istio")
    assert [d.code for d in diags if d.is_error] == ["MP701"] and outputs == []


# ---- north-south (issue 15): ingress, tokens, externals, L7 options -----------------

NS_TEXT = """mesh m {
  trust_domain "example.org"
  mtls strict
  default deny
  egress registry_only
}
jwt auth {
  issuer "https://auth.example/"
  audience "api"
  jwks "auth.jwks.json"
}
ingress web {
  namespace edge
  account web-gateway
  listen 8080 http
  listen 8443 https cert "web.crt" key "web.key"
  hosts "shop.example.com", "*.shop.example.com"
  jwt auth
  exact "/api/orders" -> orders rewrite "/orders" set request header "x-from" "edge"
  GET /** -> front
}
external stripe {
  namespace pay
  host "api.stripe.com"
  port 443 tls
  timeout 3s
}
service front {
  namespace web
  port 8080 http
  cors origins "https://shop.example.com" methods GET, POST credentials max_age 10s
}
service orders {
  namespace shop
  port 8080 http
  version v1
  version v2
}
route orders {
  GET /orders query "view" = "full" -> v2
  POST /orders -> v1 remove response header "server"
  * -> v1 80%, v2 20%
}
allow internet -> front GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt -> orders GET
allow orders -> stripe POST /v1/charges
"""


def _ns_project(tmp_path, text: str = NS_TEXT):
    """The mesh in a folder with its JWKS and the https listener's cert and key."""
    import base64
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load

    (tmp_path / "ns.mesh").write_text(text)
    n = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_numbers()

    def b64(i):
        return base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    (tmp_path / "auth.jwks.json").write_text(json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256",
                                                                   "n": b64(n.n), "e": b64(n.e)}]}))
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "web.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "web.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    checked = check_project(load([tmp_path]))
    assert checked.ok, [(x.code, x.message) for x in checked.diagnostics if x.is_error]
    return checked.mesh, (tmp_path / "web.key").read_text()


def test_north_south_compiles_to_a_gateway_and_istio_resources_valid_against_the_crds(tmp_path):
    from . import istio_schema

    mesh, private_key = _ns_project(tmp_path)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    assert [d for d in diags if d.is_error] == [], [(d.code, d.message) for d in diags]
    docs = documents(outputs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("Gateway", "web"), ("HTTPRoute", "web"), ("RequestAuthentication", "web-jwt"),
            ("RequestAuthentication", "orders-jwt"), ("ServiceEntry", "stripe"), ("DestinationRule", "stripe"),
            ("VirtualService", "stripe"), ("Sidecar", "default"), ("ReferenceGrant", "web-ingress")} <= kinds
    gw = next(d for d in docs if d["kind"] == "Gateway")
    https = next(x for x in gw["spec"]["listeners"] if x["port"] == 8443)
    assert https["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "web-tls-8443"}]
    # the key stays with the user: no Secret, no key material in the output
    assert not any(d["kind"] == "Secret" for d in docs)
    assert all(private_key.splitlines()[1] not in o.content for o in outputs)
    sidecar = next(d for d in docs if d["kind"] == "Sidecar")
    assert sidecar["spec"]["outboundTrafficPolicy"] == {"mode": "REGISTRY_ONLY"}
    # the internet rules name the gateway's own identity (its account)
    ap = next(d for d in docs if d["kind"] == "AuthorizationPolicy" and d["metadata"]["name"] == "orders-allow")
    assert "example.org/ns/edge/sa/web-gateway" in json.dumps(ap)
    reason = kube_schema.missing("gateway-api") or istio_schema.MISSING
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []
    # and the check sees a Gateway the API server would refuse
    bad = {**gw, "spec": {**gw["spec"], "listeners": [{**https, "protocol": "HTTP"}]}}
    assert kube_schema.errors(bad)


def _gateway_route(docs, req):
    """The HTTPRoute rule the Gateway takes for req (Gateway API precedence,
    Istio's order of regular expressions), or None (404)."""
    from .route_meaning import _holds, _rank

    route = next(d for d in docs if d["kind"] == "HTTPRoute" and d["spec"]["parentRefs"][0].get("kind") is None)
    params = req.query_params
    best = None
    for i, rule in enumerate(route["spec"]["rules"]):
        for m in rule.get("matches") or [{}]:
            if not _holds(m, req):
                continue
            if any(params.get(q["name"], [None])[0] != q["value"] for q in m.get("queryParams", [])):
                continue
            key = (_rank(m, True), len(m.get("queryParams", [])), -i)
            if best is None or key > best[0]:
                best = (key, rule, m)
    return None if best is None else best[1:]


def _delivered_path(rule: dict, path: str, m: dict) -> str:
    """Gateway API's URLRewrite: ReplacePrefixMatch replaces the matched
    path elements and keeps the rest from its `/`."""
    for f in rule.get("filters", []):
        if f["type"] == "URLRewrite" and "path" in f["urlRewrite"]:
            p = f["urlRewrite"]["path"]
            if p["type"] == "ReplaceFullPath":
                return p["replaceFullPath"]
            pre = m["path"]["value"].rstrip("/")
            return p["replacePrefixMatch"].rstrip("/") + (path[len(pre):] or "/")
    return path


# The shop's ingress shape: a glob rewrite (a PathPrefix with
# ReplacePrefixMatch, the bare path copied ahead for the later rule).
NS_GLOB = NS_TEXT.replace('  exact "/api/orders" -> orders rewrite "/orders" set request header "x-from" "edge"\n',
                          '  POST exact "/api/orders" -> orders rewrite "/orders" set request header "x-from" "edge"\n'
                          '  GET /api/orders/** -> orders rewrite "/orders/" set request header "x-from" "edge"\n')


@pytest.fixture(scope="module", params=["exact", "glob"])
def ns_compiled(request, tmp_path_factory):
    mesh, _ = _ns_project(tmp_path_factory.mktemp("ns"), NS_TEXT if request.param == "exact" else NS_GLOB)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    assert [d for d in diags if d.is_error] == [], [(d.code, d.message) for d in diags]
    return mesh, outputs


def test_a_glob_rewrite_is_a_prefix_rewrite_with_the_bare_path_sent_on(tmp_path):
    from . import istio_schema

    mesh, _ = _ns_project(tmp_path, NS_GLOB)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    assert [d for d in diags if d.is_error] == []
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "web")
    prefix = [r for r in route["spec"]["rules"] if r["matches"][0]["path"]["type"] == "PathPrefix"]
    assert prefix and all(r["matches"][0]["path"]["value"] == "/api/orders/" for r in prefix)
    bare = [r for r in route["spec"]["rules"] if r["matches"][0]["path"] == {"type": "Exact", "value": "/api/orders"}
            and r["matches"][0].get("method") == "GET"]
    assert bare and all(b["backendRefs"][0]["name"] == "front" for b in bare)
    reason = kube_schema.missing("gateway-api") or istio_schema.MISSING
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []


@pytest.mark.parametrize("method", ["GET", "POST", "PUT"])
@pytest.mark.parametrize("path", ["/api/orders", "/api/orders/", "/orders", "/", "/api/orders/x", "/a/b"])
@pytest.mark.parametrize("query", ["", "view=full", "view=lite"])
def test_ingress_route_means_what_the_reference_says(ns_compiled, method, path, query):
    from meshpolicy.semantics.evaluate import Request, evaluate_at_ingress

    mesh, outputs = ns_compiled
    docs = documents(outputs)
    req = Request(None, "web", method, path, query=query, host="shop.example.com")
    want = evaluate_at_ingress(mesh, req)
    picked = _gateway_route(docs, req)
    if want.route.kind == "no_route":
        assert picked is None, req
        return
    assert want.route.kind == "forward" and picked is not None, (req, want.route.kind)
    rule, match = picked
    (svc, out), = want.forwarded.items()
    got: dict = {}
    for ref in rule["backendRefs"]:
        name, _, version = ref["name"].partition("-")
        assert name == svc
        got[version or None] = ref.get("weight", 1)
    total = sum(got.values())
    shares = {v: 100.0 * w / total for v, w in got.items()}
    r = out.route
    if r.kind == "no_route":
        raise AssertionError(f"the policy answers 404 for {req}, the gateway forwards")
    want_shares = r.weights if r.kind == "forward" else {None: 100.0}
    assert {k: round(v, 6) for k, v in shares.items()} == {k: round(v, 6) for k, v in want_shares.items()}, req
    delivered = (out.delivered or out.request).path
    assert _delivered_path(rule, path, match) == delivered, req
    ops = [f for f in rule.get("filters", []) if f["type"] == "RequestHeaderModifier"]
    assert bool(ops) == (svc == "orders")  # the ingress rule's header op travels with orders' requests


@pytest.mark.parametrize("rule, why", [
    ("/api/orders/** -> orders rewrite \"/orders\"", "rewrite"),
    ("* -> respond 404 \"no\"", "respond"),
    ("/x/** -> orders mirror front 10%", "mirror"),
])
def test_what_a_gateway_route_cannot_hold_is_mp701(tmp_path, rule, why):
    from meshpolicy.pipeline import check_project  # noqa: F401  (the project loader below checks)

    text = NS_TEXT.replace('  GET /** -> front\n', f'  GET /** -> front\n  {rule}\n')
    mesh, _ = _ns_project(tmp_path, text)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    errs = [d for d in diags if d.is_error]
    assert errs and {d.code for d in errs} == {"MP701"} and not outputs
    assert any(why in d.message for d in errs)


def test_a_404_of_the_routed_services_route_that_a_later_rule_could_take_is_mp701(tmp_path):
    """orders' route has no catch-all: PUT /api/orders is 404 in the policy;
    left out of the HTTPRoute, `* -> front` would take it."""
    text = NS_TEXT.replace("  * -> v1 80%, v2 20%\n", "  GET -> v1\n").replace("  GET /** -> front\n", "  * -> front\n")
    mesh, _ = _ns_project(tmp_path, text)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    assert codes([d for d in diags if d.is_error]) == ["MP701"] and not outputs
    # without the later catch-all the 404 is the HTTPRoute's own: written
    text = text.replace("  * -> front\n", "  GET /front/** -> front\n")
    mesh, _ = _ns_project(tmp_path, text)
    outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(settings={"mesh": "istio"}))
    assert [d for d in diags if d.is_error] == [], [(d.code, d.message) for d in diags]


def test_north_south_without_the_istio_flavour_is_mp701_by_name(tmp_path):
    mesh, _ = _ns_project(tmp_path)
    for flavour in (None, "linkerd"):
        outputs, diags = compile_mesh(mesh, "gateway-api", CompileOptions(
            settings={"mesh": flavour} if flavour else {}))
        errs = [d for d in diags if d.is_error]
        assert not outputs and {d.code for d in errs} == {"MP701"}
        text = " ".join(d.message for d in errs)
        assert "ingress `web`" in text and "jwt provider" in text.lower() or "`jwt" in text


L7_TEXT = """
mesh m { trust_domain "example.org"; default allow; mtls permissive }
service api {
  namespace back
  port 8080 http
  version v1
  version v2
  cors origins "https://a.example" expose "x-total" max_age 2s
}
route api {
  GET exact "/items" query "view" = "full" -> v2 set request header "x-a" "1" add response header "x-b" "2"
  GET exact "/old" -> v1 rewrite "/new" host "api.internal"
  * -> v1 set request header "x-a" "1" remove request header "x-a" add request header "x-a" "3"
}
"""


@pytest.mark.parametrize("flavour", [None, "istio"])
def test_l7_options_on_gamma_routes_are_valid_filters(flavour):
    from . import istio_schema

    _, outputs, diags = compiled(L7_TEXT, flavour)
    assert [d for d in diags if d.is_error] == [], [(d.code, d.message) for d in diags]
    route = next(d for d in documents(outputs) if d["kind"] == "HTTPRoute")
    r1, r2, r3 = route["spec"]["rules"]
    assert r1["matches"][0]["queryParams"] == [{"type": "Exact", "name": "view", "value": "full"}]
    by_type = {f["type"]: f for f in r1["filters"]}
    assert by_type["RequestHeaderModifier"]["requestHeaderModifier"] == {"set": [{"name": "x-a", "value": "1"}]}
    assert by_type["ResponseHeaderModifier"]["responseHeaderModifier"] == {"add": [{"name": "x-b", "value": "2"}]}
    assert by_type["CORS"]["cors"] == {"allowOrigins": ["https://a.example"], "exposeHeaders": ["x-total"],
                                       "maxAge": 2}
    rw = next(f for f in r2["filters"] if f["type"] == "URLRewrite")["urlRewrite"]
    assert rw == {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}, "hostname": "api.internal"}
    # set, remove, add in written order leave the original dropped and "3": a set
    mod = next(f for f in r3["filters"] if f["type"] == "RequestHeaderModifier")["requestHeaderModifier"]
    assert mod == {"set": [{"name": "x-a", "value": "3"}]}
    reason = kube_schema.missing("gateway-api") or (istio_schema.MISSING if flavour else None)
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []


@pytest.mark.parametrize("change, code_why", [
    ('remove request header "x-a" add', 'add request header "x-a" "2" add'),
    ('GET exact "/old" -> v1 rewrite "/new"', 'GET /old/** -> v1 rewrite "/new/"'),
    ("max_age 2s", "max_age 1500ms"),
    ('  GET exact "/items" query', '  GET exact "/items" -> v1\n  GET exact "/items" query'),
])
def test_l7_options_a_route_cannot_hold_are_mp701(change, code_why):
    text = L7_TEXT.replace(change, code_why)
    assert text != L7_TEXT
    _, outputs, diags = compiled(text, "istio")
    assert codes([d for d in diags if d.is_error]) == ["MP701"] and not outputs


EGRESS_TEXT = """
mesh m {
  trust_domain "example.org"
  mtls strict
  default allow
  egress STANCE
}
external stripe {
  namespace pay
  host "api.stripe.com"
  port 80 http
  timeout 3s
}
service orders {
  namespace shop
  port 8080 http
}
"""


@pytest.mark.parametrize("stance, policy", [("registry_only", "Deny"), ("allow_any", "Allow")])
def test_linkerd_flavour_egress_is_the_linkerd_targets_egress_network(stance, policy):
    _, outputs, diags = compiled(EGRESS_TEXT.replace("STANCE", stance), "linkerd")
    assert [d for d in diags if d.is_error] == [], [(d.code, d.message) for d in diags]
    docs = documents(outputs)
    nets = [d for d in docs if d["kind"] == "EgressNetwork"]
    assert [(n["metadata"]["namespace"], n["spec"]["trafficPolicy"]) for n in nets] == [("shop", policy)]
    route = next(d for d in docs if d["kind"] == "HTTPRoute" and d["spec"]["parentRefs"][0]["kind"] == "EgressNetwork")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["spec"]["hostnames"] == ["api.stripe.com"]
    assert route["spec"]["rules"][0]["timeouts"] == {"request": "3s"}
    reason = kube_schema.missing("gateway-api", "linkerd")
    if reason:
        pytest.skip(reason)
    assert _crd_problems(outputs) == []


def test_linkerd_flavour_refuses_tls_externals_by_name():
    _, outputs, diags = compiled(EGRESS_TEXT.replace("STANCE", "registry_only").replace("port 80 http",
                                                                                        "port 443 tls"), "linkerd")
    errs = [d for d in diags if d.is_error]
    assert not outputs and set(codes(errs)) == {"MP701"} and any("tls" in d.message for d in errs)
