"""The resolved plan (meshpolicy/plan) against the reference evaluator.

- scopes: every request the evaluator allows comes from a caller the plan
  admits to its destination (nothing allowed is ever out of scope), and every
  admission names an allow rule whose source matches the caller (or the
  default stance), on generated small policies and on the examples, where the
  verifier's exact `may_call` is the comparison;
- weights and settings: for every request the evaluator routes, the plan's
  rule (or default) carries the same weights, mirror and action kind, and
  the timeout/retry/fault `Service.settings_for` gives;
- hosts, identities, workloads and the certificate layout, each one list.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from meshpolicy.plan import CertLayout, build_plan, hosts, plan_of
from meshpolicy.semantics.evaluate import evaluate

from .conftest import EXAMPLES, check_text
from .strategies import request_space, small_policies


def _mesh(text, ok=True):
    """The checked model; ok=False for a policy the checks refuse (the plan must still be right)."""
    checked = check_text(text)
    assert checked.ok or not ok, [d.code for d in checked.diagnostics]
    return checked.mesh


def _assert_scope_sound(mesh, requests):
    plan = build_plan(mesh)
    for req in requests:
        if evaluate(mesh, req).decision.allowed:
            callers = plan.callers(req.destination)
            assert req.source in callers, f"{req} is allowed, but its caller is not in the plan's scope"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(assertions=False))
def test_scope_admits_every_allowed_request(text):
    mesh = _mesh(text)
    _assert_scope_sound(mesh, request_space(mesh, headers=False))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(small_policies(assertions=False))
def test_routes_agree_with_the_evaluator(text):
    mesh = _mesh(text)
    plan = build_plan(mesh)
    for req in request_space(mesh):
        got = evaluate(mesh, req).route
        sp = plan.service(req.destination)
        if got.kind == "default":
            assert not sp.routed and sp.default.weights == got.weights
            assert (sp.default.timeout_ms, sp.default.retry, sp.default.fault) == tuple(
                sp.service.settings_for(None))
            continue
        if got.kind == "no_route":
            continue
        rp = sp.rules[got.rule.index]
        assert rp.rule is got.rule and rp.kind == got.kind
        assert rp.weights == got.weights and rp.mirror == got.mirror
        assert (rp.timeout_ms, rp.retry, rp.fault) == tuple(sp.service.settings_for(got.rule))


def test_scope_reasons_name_a_matching_rule():
    mesh = _mesh("""
mesh m {
  default deny
}
service a {
  namespace x
  port 80 http
}
service b {
  namespace x
  port 80 http
}
service c {
  namespace y
  port 80 http
}
service d {
  namespace y
  port 80 http
  mtls off
}
allow namespace x -> c
allow b -> c GET /
deny b -> c
allow authenticated -> d
allow * -> a
""")
    plan = build_plan(mesh)
    c = plan.callers("c")
    assert set(c) == {"a"}  # b is shut out by a deny for everything it asks
    assert c["a"].rule.index == 0 and c["a"].source.kind == "namespace"
    # mTLS off: no caller identity is visible, so `authenticated` admits no one.
    assert plan.callers("d") == {}
    # strict mTLS (the default) refuses callers without identity before any rule
    assert set(plan.callers("a")) == {"a", "b", "c", "d"}
    assert "allow rule #5" in plan.callers("a")["b"].reason
    assert plan.callees("b") == ["a"]


def test_default_allow_admits_everyone_but_blanket_denies():
    mesh = _mesh("""
mesh m {
  default allow
  mtls permissive
}
service a {
  namespace x
  port 80 http
}
service b {
  namespace x
  port 80 http
}
deny a -> b
""")
    plan = build_plan(mesh)
    assert set(plan.callers("b")) == {None, "b"}
    assert plan.callers("b")["b"].rule is None and "default" in plan.callers("b")["b"].reason


@pytest.mark.parametrize("example", ["shop", "bookinfo"])
def test_examples_scope_covers_the_verifiers_call_graph(example):
    from meshpolicy.pipeline import check_project
    from meshpolicy.project import load
    from meshpolicy.verify.callgraph import OUTSIDE, build_graph

    mesh = check_project(load([EXAMPLES / example])).mesh
    plan = plan_of(mesh)
    graph = build_graph(mesh)
    for caller, dest in graph.edges:
        if dest in mesh.ingress_map:  # the internet reaches an ingress's listeners; no sidecar decides
            continue
        assert (None if caller == OUTSIDE else caller) in plan.callers(dest), (caller, dest)


def test_hosts_identities_workloads_and_cert_layout():
    mesh = _mesh("""
mesh m {
  trust_domain "t.example"
}
service a {
  namespace x
  account shared
  port 80 http
  version v2
  version v1 { track: "c" }
  circuit max_connections 5
}
service b {
  namespace x
  account shared
  port 80 http
}
""")
    plan = plan_of(mesh)
    assert plan_of(mesh) is plan
    a = plan.service("a")
    assert a.hosts == ["a", "a.x", "a.x.svc", "a.x.svc.cluster.local"] == hosts(a.service)
    assert a.fqdn == a.hosts[-1]
    assert a.identity is plan.service("b").identity
    assert a.identity.services == ("a", "b")
    assert a.identity.spiffe_id == "spiffe://t.example/ns/x/sa/shared"
    assert [w.version for w in a.workloads] == ["v1", "v2"]
    assert a.workload("v1").labels == {"track": "c"} and a.workload("v1").circuit.max_connections == 5
    assert [w.version for w in plan.service("b").workloads] == [None]
    layout = CertLayout("/etc/certs/")
    assert layout.ca_file == "/etc/certs/ca.pem"
    assert layout.cert_file("x", "shared") == "/etc/certs/x/shared/cert.pem"
    assert layout.key_file("x", "shared") == "/etc/certs/x/shared/key.pem"
    assert CertLayout("/").ca_file == "/ca.pem"


def test_a_rule_naming_a_service_admits_every_service_sharing_its_identity():
    # MP108 makes this a check error; the plan still follows the certificate semantics
    mesh = _mesh("""
mesh m {
  default deny
}
service a {
  namespace x
  account shared
  port 80 http
}
service b {
  namespace x
  account shared
  port 80 http
}
service c {
  namespace x
  port 80 http
}
allow a -> c
""", ok=False)
    assert set(build_plan(mesh).callers("c")) == {"a", "b"}


def _http1(mesh):
    """meshproxy takes the shop's http2/grpc apps to speak HTTP/1.1 too, as its meshc.toml says."""
    from meshpolicy.compile import CompileOptions

    return CompileOptions(settings={"http1_apps": sorted(mesh.service_map)})


def test_envoy_and_meshproxy_answer_to_the_plans_hosts(shop_mesh):
    """One host list: `orders.shop.svc` reaches orders through either sidecar
    (Envoy's virtual hosts lacked it while meshproxy had it)."""
    import json

    import yaml

    from meshpolicy.compile import compile_mesh

    plan = plan_of(shop_mesh)
    outputs, diags = compile_mesh(shop_mesh, "envoy")
    assert not [d for d in diags if d.severity == "error"]
    boot = yaml.safe_load(next(o.content for o in outputs if o.path == "web/frontend/v1.yaml"))
    outbound = next(li for li in boot["static_resources"]["listeners"] if li["name"] == "outbound")
    vhosts = outbound["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    domains = {d for vh in vhosts if "orders" in vh["domains"] for d in vh["domains"]}
    assert "orders.shop.svc" in domains
    assert set(plan.service("orders").hosts) <= domains
    outputs, _ = compile_mesh(shop_mesh, "meshproxy", _http1(shop_mesh))
    cfg = json.loads(next(o.content for o in outputs if o.path == "web/frontend/v1.json"))
    dest = next(d for d in cfg["outbound"]["destinations"] if d["service"] == "orders")
    assert dest["hosts"] == plan.service("orders").hosts


def test_sidecar_scope_is_the_plans(shop_mesh):
    """Envoy and meshproxy scope each workload to the plan's callees: shop's
    `deny search -> catalog` denies everything search could send, so neither
    sidecar of search carries catalog."""
    import json

    from meshpolicy.compile import compile_mesh
    from meshpolicy.targets.envoy.scope import callable_services

    plan = plan_of(shop_mesh)
    assert "catalog" not in plan.callees("search")
    for caller in shop_mesh.services:
        assert [s.name for s in callable_services(shop_mesh, caller)] == plan.callees(caller.name)
    outputs, _ = compile_mesh(shop_mesh, "meshproxy", _http1(shop_mesh))
    for o in outputs:
        cfg = json.loads(o.content)
        me = cfg["workload"]["service"]
        got = [d["service"] for d in cfg["outbound"]["destinations"]]
        if me in shop_mesh.ingress_map:  # an ingress lists its destinations in rule order
            got = sorted(got)
        assert got == [n for n in plan.callees(me) if n != me]
    assert outputs


def test_hover_lists_the_plans_callees_with_reasons(shop_mesh):
    """The language server's 'may call' is the plan's scope: search is in
    namespace shop, which an allow rule admits to catalog, but
    `deny search -> catalog` denies it everything."""
    from meshpolicy.lsp.hover import service_hover

    text = service_hover(shop_mesh, shop_mesh.service("search"))
    assert "`catalog`" not in text.split("**may call**")[1]
    text = service_hover(shop_mesh, shop_mesh.service("frontend")).split("**may call**")[1]
    assert "`catalog`" in text and "`orders`" in text and "admits `frontend`" in text
    # rules from the internet are listed as written (the hover crashed on them)
    orders = service_hover(shop_mesh, shop_mesh.service("orders"))
    assert 'internet with jwt scope has "orders:write"' in orders


def test_certificates_are_where_the_targets_point(shop_mesh, tmp_path):
    """One layout: the files `meshc certs` writes are the ones Envoy and
    meshproxy configs name."""
    import json

    import yaml

    from meshpolicy.certs import issue
    from meshpolicy.compile import CompileOptions, compile_mesh

    issue(shop_mesh, tmp_path)
    layout = CertLayout(str(tmp_path))
    named = set()
    outputs, _ = compile_mesh(shop_mesh, "meshproxy", CompileOptions(
        certs_dir=str(tmp_path), settings={"http1_apps": sorted(shop_mesh.service_map)}))
    assert outputs
    for o in outputs:
        ident = json.loads(o.content)["identity"]
        named |= {ident["cert_file"], ident["key_file"], ident["ca_file"]}
    outputs, _ = compile_mesh(shop_mesh, "envoy", CompileOptions(certs_dir=str(tmp_path)))

    def filenames(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "filename":
                    yield v
                else:
                    yield from filenames(v)
        elif isinstance(node, list):
            for v in node:
                yield from filenames(v)

    for o in outputs:
        named |= {f for f in filenames(yaml.safe_load(o.content)) if f.endswith(".pem")}
    assert layout.ca_file in named
    for path in named:
        assert Path(path).is_file(), path


# ---- north-south (issue 15) ---------------------------------------------------

def _ns_mesh(extra: str = ""):
    from .test_semantics_northsouth import SHOP

    return _mesh(SHOP.replace("EGRESS", "") + extra)


def test_ingress_gateways_are_planned_as_workloads():
    mesh = _ns_mesh()
    plan = build_plan(mesh)
    web = plan.ingress("web")
    assert (web.namespace, web.account, web.spiffe_id) == ("edge", "web", "spiffe://cluster.local/ns/edge/sa/web")
    assert web.identity.ingresses == ("web",) and web.identity.services == ()
    assert plan.ingress("partners").account == "partner-gw"
    assert web.providers == ("auth",) and plan.ingress("partners").providers == ("partner",)
    assert web.hosts == ["shop.example.com", "*.shop.example.com"] and [x.port for x in web.listeners] == [8080]
    assert web.callees == ("orders", "frontend", "billing")
    assert [r.kind for r in web.rules] == ["forward", "redirect", "forward", "forward", "respond"]
    assert web.rules[2].weights == {"frontend": 80.0, "billing": 20.0}
    assert plan.callees("web") == ["billing", "frontend", "orders"]
    assert plan.identities[("edge", "partner-gw")].ingresses == ("partners",)
    assert plan.providers["auth"].issuer == "https://auth.shop.example/"


def test_services_admit_ingresses_by_their_internet_sources():
    plan = build_plan(_ns_mesh())
    orders = plan.callers("orders")
    assert orders["web"].source.kind == "internet" and orders["web"].providers == ("auth",)
    assert orders["partners"].providers == ("partner",)
    assert "`internet` with a token" in orders["web"].reason
    assert plan.callers("frontend")["web"].providers == ()  # `allow internet -> frontend GET`: no token needed
    assert plan.callers("billing")["web"].source.kind == "namespace"
    assert plan.service("orders").jwt_providers == ("auth", "partner")
    assert plan.service("frontend").jwt_providers == ("auth",)
    assert plan.service("payments").jwt_providers == ()
    sources = plan.service("orders").internet
    assert [(s.rule.index, s.ingresses, s.providers) for s in sources] == [
        (4, {"web": ("auth",), "partners": ("partner",)}, ("auth", "partner")),
        (5, {"web": ("auth",)}, ("auth",)),  # `with jwt auth`: partners does not accept auth
        (6, {"partners": ("partner",)}, ("partner",)),
    ]


def test_a_deny_asking_for_a_token_does_not_shut_the_ingress_out():
    plan = build_plan(_ns_mesh('deny internet with jwt role = "banned" -> frontend\n'))
    assert "web" in plan.callers("frontend")
    plan = build_plan(_ns_mesh("deny internet -> frontend\n"))
    assert "web" not in plan.callers("frontend")


def test_externals_and_their_callers():
    plan = build_plan(_ns_mesh())
    stripe = plan.external("stripe")
    assert stripe.hosts == ["api.stripe.com"] and stripe.tls_ports == [443] and stripe.l7
    assert set(stripe.callers) == {"payments"}  # namespace shop is denied everything
    assert plan.external_callees("payments") == ["stripe"] and plan.external_callees("orders") == []
    assert plan.egress == "registry_only"
    assert "stripe" not in plan.callees("payments")  # services only there
    loose = build_plan(_ns_mesh().model_copy(update={"settings": _ns_mesh().settings.model_copy(
        update={"default": "allow"})}))
    assert None not in loose.external("stripe").callers and "billing" in loose.external("stripe").callers


def test_effective_cors_per_rule_and_ingress_settings():
    from meshpolicy.plan import ingress_settings

    mesh = _ns_mesh()
    plan = build_plan(mesh)
    rules = plan.service("orders").rules
    assert rules[0].cors is None and rules[2].cors.origins == ["https://shop.example.com"]
    mesh2 = _ns_mesh('route payments {\n  /r -> respond 204\n  * -> v1 timeout 2s\n}\n')
    svc = mesh2.service("payments")
    sp = build_plan(mesh2).service("payments")
    assert sp.rules[0].cors is None and sp.rules[1].cors is None
    ing_rule = mesh.ingress_map["web"].rules[0]
    assert ingress_settings(ing_rule, svc, mesh2.route_map["payments"].rules[1]).timeout_ms == 2000


def test_ingress_scope_admits_every_request_an_ingress_gets_allowed():
    """Soundness, as for services: every request an ingress forwards that the
    destination allows comes from a caller the plan admits there; every
    allowed egress request from a caller the external's plan admits."""
    from meshpolicy.semantics import Request
    from meshpolicy.semantics.evaluate import INVALID_TOKEN, Token

    for extra in ("", "deny internet -> frontend\n", 'deny internet with jwt role = "x" -> orders\n'):
        mesh = _ns_mesh(extra)
        plan = build_plan(mesh)
        tokens = [None, INVALID_TOKEN, Token("auth", {"scope": "orders:write admin", "role": "admin"}),
                  Token("partner", {"role": "x"}), Token("auth", {"role": "x"})]
        seen = 0
        for g in ("web", "partners"):
            for method in ("GET", "POST", "DELETE"):
                for path in ("/", "/api/orders/7", "/orders/1", "/admin/x", "/split", "/api/orders/../admin/x"):
                    for tok in tokens:
                        out = evaluate(mesh, Request(None, g, method, path, token=tok))
                        for svc, o in out.forwarded.items():
                            if o.decision.allowed:
                                seen += 1
                                assert g in plan.callers(svc), (extra, g, svc, o.request)
        assert seen
        for caller in [s.name for s in mesh.services]:
            for method in ("GET", "POST"):
                if evaluate(mesh, Request(caller, "stripe", method, "/v1/charges")).decision.allowed:
                    assert caller in plan.external("stripe").callers


def test_token_providers_without_an_ingress_are_the_evaluators():
    """A sidecar checks tokens for `internet with jwt P` rules even when no
    ingress forwards there yet: the plan and the evaluator say the same."""
    from meshpolicy.semantics import Request
    from meshpolicy.semantics.evaluate import INVALID_TOKEN
    from meshpolicy.semantics.ingress import validating_providers

    mesh = _mesh("""
jwt idp { issuer "https://idp.example/"; jwks_uri "https://idp.example/jwks" }
service a { namespace ns; port 80 http }
service b { namespace ns; port 80 http }
allow internet with jwt idp scope has "a:read" -> a GET
allow b -> a
""")
    plan = build_plan(mesh)
    assert plan.service("a").jwt_providers == ("idp",) == tuple(validating_providers(mesh, "a"))
    assert plan.service("b").jwt_providers == ()
    assert [s.ingresses for s in plan.service("a").internet] == [{}]
    assert "401" in evaluate(mesh, Request("b", "a", "GET", "/", token=INVALID_TOKEN)).decision.refused


# ---- north-south scopes on generated policies -----------------------------------

from hypothesis import strategies as st  # noqa: E402

_NS_SOURCES = ("*", "authenticated", "namespace edge", "namespace shop", "a", "internet",
               "internet with jwt p1", "internet with jwt p2", 'internet with jwt role = "admin"',
               'internet with jwt p1 scope has "w"')
_NS_PATHS = ("/", "/a/1", "/b/x/y", "/admin/z")


@st.composite
def _ns_policies(draw):
    """Small north-south policies: three services, one or two ingresses with
    their providers, rules whose sources include `internet` with and without
    token requirements, in a random mTLS mode and default stance."""
    out = ["mesh m {", f"  mtls {draw(st.sampled_from(('strict', 'permissive', 'off')))}",
           f"  default {draw(st.sampled_from(('allow', 'deny')))}", "}"]
    out += [f'jwt {p} {{ issuer "https://{p}.example/"; jwks_uri "https://{p}.example/jwks" }}' for p in ("p1", "p2")]
    for name, ns in (("a", "shop"), ("b", "shop"), ("c", "edge")):
        out.append(f"service {name} {{ namespace {ns}; port 80 http }}")
    for g in ("g1", "g2")[: draw(st.integers(1, 2))]:
        accepts = draw(st.sampled_from(("", "  jwt p1", "  jwt p2", "  jwt p1, p2")))
        rules = []
        for _ in range(draw(st.integers(1, 3))):
            path = draw(st.sampled_from(("/**", "/a/**", "/b/**", "/admin/**")))
            dest = draw(st.sampled_from(("a", "b", "c", "a 50%, c 50%")))
            rules.append(f"  {path} -> {dest}")
        ns = draw(st.sampled_from(("edge", "gw")))
        out += [f"ingress {g} {{", f"  namespace {ns}", "  listen 8080 http", accepts, *rules, "}"]
    for _ in range(draw(st.integers(1, 6))):
        effect = draw(st.sampled_from(("allow", "allow", "deny")))
        src = draw(st.sampled_from(_NS_SOURCES))
        dest = draw(st.sampled_from(("a", "b", "c")))
        what = draw(st.sampled_from(("", " GET", " /admin/**", " POST /a/**")))
        out.append(f"{effect} {src} -> {dest}{what}")
    return "\n".join(out) + "\n"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(_ns_policies())
def test_ingress_scopes_and_internet_sources_agree_with_the_evaluator(text):
    from meshpolicy.semantics import Request
    from meshpolicy.semantics.evaluate import INVALID_TOKEN, Token

    checked = check_text(text)
    mesh = checked.mesh
    plan = build_plan(mesh)
    tokens = [None, INVALID_TOKEN, Token("p1", {"role": "admin", "scope": "w"}), Token("p2", {"role": "admin"}),
              Token("p1", {})]
    for g in mesh.ingress_map:
        for method in ("GET", "POST"):
            for path in _NS_PATHS:
                for tok in tokens:
                    out = evaluate(mesh, Request(None, g, method, path, token=tok))
                    for svc, o in out.forwarded.items():
                        if not o.decision.allowed:
                            continue
                        assert g in plan.callers(svc), (g, svc, o.request)
                        r = o.decision.rule
                        if r is None:
                            continue
                        # the deciding rule's internet sources name this ingress, with the token's provider
                        internet = [s for s in plan.service(svc).internet if s.rule is r]
                        if internet and all(x.kind == "internet" for x in r.sources):
                            assert any(g in s.ingresses and (s.source.jwt is None or tok.provider in s.ingresses[g])
                                       for s in internet), (g, svc, o.request, r.index)
