"""Importing north-south Istio and Gateway API resources: ingress gateways,
end-user tokens, external services and the egress stance, L7 rule options.
Each test holds the import to what Istio / Gateway API document, through the
reference evaluator, and the emitted .mesh to reading back the same."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from meshpolicy.importers import import_sources
from meshpolicy.importers.emit import files_for
from meshpolicy.semantics.evaluate import Request, Token, evaluate
from meshpolicy.span import SourceFile

from .conftest import ROOT, check_texts, run_meshc
from .strategies import mesh_programs

SHOP = ROOT / "tests" / "fixtures" / "istio" / "northsouth"


def shop(**kw):
    return import_sources({str(p): SourceFile(str(p), p.read_text()) for p in sorted(SHOP.glob("*.yaml"))}, **kw)


def codes(result) -> set[str]:
    return {d.code for d in result.diagnostics}


def test_gateway_and_its_virtual_service_are_an_ingress_with_the_routes_options():
    r = shop()
    assert not [d for d in r.diagnostics if d.is_error and d.code != "MP223"]
    (g,) = r.mesh.ingresses
    assert (g.namespace, g.account, g.hosts) == ("istio-system", "istio-ingressgateway-service-account",
                                                 ["shop.example.com"])
    assert [(ls.port, ls.protocol) for ls in g.listeners] == [(80, "http"), (443, "http")]  # not emitting: MP920
    assert "MP920" in codes(r) and "MP921" not in codes(r)  # the gateway Deployment is in the inputs
    rule = g.rules[0]
    assert rule.rewrite.path == "/orders" and rule.match.queries[0].value == "full"
    assert [(h.side, h.op, h.name) for h in rule.headers] == [("response", "remove", "server"),
                                                              ("request", "set", "x-from")] or \
        [(h.side, h.op, h.name) for h in rule.headers] == [("request", "set", "x-from"),
                                                           ("response", "remove", "server")]
    assert rule.retry.on_status == [503, 429] and rule.retry.on == ["connect-failure"]
    assert rule.cors.origins == ["https://shop.example.com"] and rule.cors.max_age_ms == 86_400_000


def test_ingress_requests_mean_what_istio_does():
    mesh = shop().mesh
    write = Token("auth", {"iss": "https://auth.shop.example/", "scope": "orders:read orders:write"})
    read = Token("auth", {"iss": "https://auth.shop.example/", "scope": "orders:read"})

    def at_gateway(path, method="POST", token=None, host="shop.example.com"):
        return evaluate(mesh, Request(None, "shop", method, path, host=host, token=token))

    ok = at_gateway("/api/orders/7?view=full", token=write)
    (fwd,) = ok.forwarded.values()
    assert fwd.decision.allowed and fwd.request.path == "/orders/7" and fwd.request.query == "view=full"
    assert not next(iter(at_gateway("/api/orders/7?view=full", token=read).forwarded.values())).decision.allowed
    assert at_gateway("/api/orders/7?view=full", token=Token(None)).status == 401
    assert at_gateway("/api/orders/7", token=write).status == 404  # the query test fails: directResponse 404
    assert at_gateway("/api/orders/7?view=full", host="evil.example.com").status == 404


def test_service_entry_with_tls_origination_is_an_external_and_the_stance_is_the_sidecars():
    mesh = shop().mesh
    (ext,) = mesh.externals
    assert ext.hosts == ["api.stripe.com"] and [(p.number, p.protocol) for p in ext.ports] == [(443, "tls")]
    assert mesh.settings.egress == "registry_only"
    assert evaluate(mesh, Request("orders", "stripe", "POST", "/v1/charges")).decision.allowed  # Istio: no egress authz
    assert not evaluate(mesh, Request("orders", "example.org")).decision.allowed


def test_istio_default_egress_is_allow_any():
    text = (SHOP / "shop.yaml").read_text().split("kind: Sidecar")[0].rsplit("---", 1)[0]
    r = import_sources({"in.yaml": SourceFile("in.yaml", text)})
    assert r.mesh.settings.egress == "allow_any" and "MP927" in codes(r)


JWKS = '{"keys": [{"kty": "RSA", "kid": "k1", "alg": "RS256", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"}]}'


def test_emitted_policy_reads_back_and_checks_with_the_files_provided(tmp_path):
    src = tmp_path / "k8s"
    src.mkdir()
    (src / "shop.yaml").write_text((SHOP / "shop.yaml").read_text().replace(
        'jwksUri: "https://auth.shop.example/jwks"', f"jwks: '{JWKS}'"))
    out = tmp_path / "policy"
    proc = run_meshc("import", "istio", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MP923" in proc.stdout
    assert (out / "jwks" / "auth.json").read_text() == JWKS  # inline keys, byte for byte, inside -o only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k8s", "policy"]
    text = (out / "istio-system.mesh").read_text()
    assert 'listen 443 https cert "tls/shop/shop-cert.crt"' in text
    # the certificate is the user's to provide (MP920); meshc check wants PEM there
    checked = run_meshc("check", str(out))
    assert "MP232" in checked.stdout and "MP223" not in checked.stdout
    # provided, the policy checks clean
    cert, key = _self_signed("shop.example.com")
    (out / "tls" / "shop").mkdir(parents=True)
    (out / "tls" / "shop" / "shop-cert.crt").write_bytes(cert)
    (out / "tls" / "shop" / "shop-cert.key").write_bytes(key)
    again = run_meshc("check", str(out))
    assert again.returncode == 0, again.stdout


def _self_signed(host: str) -> tuple[bytes, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def test_emitted_files_are_the_same_mesh():
    r = shop(emitting=True)
    files = files_for(r.mesh)
    back = check_texts(files)
    assert not [d for d in back.diagnostics if d.code not in ("MP223", "MP232") and d.is_error], \
        [(d.code, d.message) for d in back.diagnostics]
    for req in (Request(None, r.mesh.ingresses[0].name, "POST", "/api/orders/1?view=full", host="shop.example.com",
                        token=Token("auth", {"iss": "https://auth.shop.example/", "scope": "orders:write"})),
                Request("orders", "stripe", "GET", "/")):
        a, b = evaluate(r.mesh, req), evaluate(back.mesh, req)
        assert (a.status, a.decision.allowed) == (b.status, b.decision.allowed)


GATEWAY_API = """apiVersion: v1
kind: Service
metadata: {name: orders, namespace: shop}
spec:
  selector: {app: orders}
  ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, hostname: "*.shop.example.com"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{name: web, namespace: edge}]
  hostnames: [api.shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, queryParams: [{name: v, value: "2"}]}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: web}], remove: [x-debug]}
    backendRefs: [{name: orders, port: 8080}]
"""


def test_gateway_api_gateway_and_route_are_an_ingress_with_gateway_api_rewrites():
    r = import_sources({"gw.yaml": SourceFile("gw.yaml", GATEWAY_API)}, flavour="gateway-api")
    assert not [d for d in r.diagnostics if d.is_error], [(d.code, d.message) for d in r.diagnostics]
    (g,) = r.mesh.ingresses
    assert (g.namespace, g.account, g.hosts) == ("edge", "web-istio", ["api.shop.example.com"])

    def delivered(path):
        out = evaluate(r.mesh, Request(None, g.name, "GET", path, host="api.shop.example.com"))
        return out.status, [o.request.path for o in out.forwarded.values()]

    assert delivered("/api/x?v=2")[1] == ["/x"]
    assert delivered("/api?v=2")[1] == ["/"]
    assert delivered("/api/x")[0] == 404  # the query match fails
    assert delivered("/apix?v=2")[0] == 404  # PathPrefix matches whole elements
    ops = g.rules[0].headers
    assert [(o.op, o.name) for o in ops] == [("remove", "x-debug"), ("set", "x-via")]


def test_claims_and_principals_become_internet_sources():
    base = (SHOP / "shop.yaml").read_text()
    r = import_sources({"in.yaml": SourceFile("in.yaml", base.replace(
        'requestPrincipals: ["https://auth.shop.example//*"]',
        'requestPrincipals: ["https://auth.shop.example//*"], principals: '
        '["cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"]'))})
    assert "MP925" not in codes(r)  # the gateway named: exact
    (rule,) = [a for a in r.mesh.auth_rules if a.target.name == "orders"]
    (src,) = rule.sources
    assert src.kind == "internet" and [(c.claim, c.op, c.value) for c in src.jwt.claims] == [
        ("iss", "eq", "https://auth.shop.example/"), ("scope", "has", "orders:write")]


def test_verify_reads_the_north_south_yaml_where_it_is():
    proc = run_meshc("verify", str(SHOP))
    assert proc.returncode == 0, proc.stdout
    assert "shop.yaml:" in proc.stdout and "Traceback" not in proc.stderr


def test_the_gateways_own_service_is_not_a_mesh_service():
    """istio-system/istio-ingressgateway fronts the gateway pods: kept as a service it
    would share the ingress's identity (MP108 with internet rules)."""
    r = shop()
    assert r.mesh.service("istio-ingressgateway") is None
    from meshpolicy.checks import run_checks

    assert not [d for d in run_checks(r.mesh) if d.code == "MP108"]


HOSTILE = [
    "kind: Gateway\napiVersion: networking.istio.io/v1\nmetadata: {name: g}\nspec: {selector: 3, servers: [1, {port: 5}, "
    "{port: {number: 80, protocol: HTTP}, hosts: 7}]}",
    "kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: v}\nspec: {hosts: ['*', 3], gateways: "
    "[g, null], http: [{match: [{queryParams: 3}], rewrite: {uri: 5, authority: 'x:99999'}, headers: {request: {set: "
    "{host: a, x: {a: 1}}, remove: 3}}, corsPolicy: {allowCredentials: true, maxAge: soon}, retries: {retryOn: "
    "'503,999,abc'}, route: [{destination: {host: svc}}]}, 7]}",
    "kind: RequestAuthentication\napiVersion: security.istio.io/v1\nmetadata: {name: r}\nspec: {jwtRules: [{issuer: 5}, "
    "{}, {issuer: a, jwks: 5}, {issuer: b, jwksUri: 'https://x', fromHeaders: [3, {name: h}], fromParams: 5}, 3]}",
    "kind: AuthorizationPolicy\napiVersion: security.istio.io/v1\nmetadata: {name: p}\nspec: {rules: [{from: [{source: "
    "{requestPrincipals: 5}}], when: [3, {key: 'request.auth.claims[a]', values: 4}]}]}",
    "kind: ServiceEntry\napiVersion: networking.istio.io/v1\nmetadata: {name: se}\nspec: {hosts: [3, '10.0.0.0/8', ''], "
    "ports: [{number: 80, protocol: UDP}, 5], location: 5}",
    "kind: HTTPRoute\napiVersion: gateway.networking.k8s.io/v1\nmetadata: {name: hr}\nspec: {parentRefs: [{name: gw}, 4], "
    "hostnames: 5, rules: [5, {filters: 5, backendRefs: 5}]}",
    "kind: Gateway\napiVersion: gateway.networking.k8s.io/v1\nmetadata: {name: gw}\nspec: {listeners: [3, {name: b, port: "
    "443, protocol: HTTPS, tls: {certificateRefs: 5}}]}",
]


def test_an_inline_jwks_the_validators_refuse_is_not_written(tmp_path):
    text = (SHOP / "shop.yaml").read_text().replace('jwksUri: "https://auth.shop.example/jwks"',
                                                    """jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'""")
    r = import_sources({"in.yaml": SourceFile("in.yaml", text)}, emitting=True)
    assert "MP924" in codes(r) and not r.files and not r.mesh.jwt_providers


def test_malformed_north_south_resources_are_diagnosed_not_crashed():
    text = "\n---\n".join(HOSTILE)
    for emitting in (False, True):
        r = import_sources({"w.yaml": SourceFile("w.yaml", text)}, emitting=emitting)
        assert {"MP904", "MP924", "MP929"} <= codes(r)


NORTH_SOUTH = """
mesh shop {
  trust_domain "cluster.local"
  mtls strict
  default deny
  egress registry_only
}

jwt auth {
  issuer "https://auth.shop.example/"
  audience "shop-api"
  jwks_uri "https://auth.shop.example/jwks"
}

service orders {
  namespace shop
  port 8080 http
  version v1 { version: "v1" }
  version v2 { version: "v2" }
}

service frontend {
  namespace web
  port 8080 http
}

route orders {
  GET /orders/** query "view" = "full" -> v2
  * -> v1
}

ingress web {
  namespace edge
  account web-gateway
  listen 8080 http
  hosts "shop.example.com"
  jwt auth
  /api/orders/** -> orders rewrite "/orders/" set request header "x-from" "web"
  GET /** -> frontend
  * -> respond 404 "no such page"
}

external stripe {
  namespace shop
  host "api.stripe.com"
  port 443 tls
}

allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt -> orders GET
allow orders -> stripe POST /v1/charges
allow frontend -> stripe GET
deny frontend -> stripe /v1/charges
"""


def _workloads(mesh) -> str:
    """What a cluster running meshc's Istio output has besides it: Services, their
    Deployments, and the ingress gateway's Deployment (docs/targets/istio.md)."""
    import json

    docs = []
    for s in mesh.services:
        docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name, "namespace": s.namespace},
                     "spec": {"selector": {"app": s.name},
                              "ports": [{"port": p.number, "name": f"{p.protocol}-{p.number}"} for p in s.ports]}})
        for v in s.versions or [None]:
            labels = {"app": s.name, **(v.labels if v else {})}
            docs.append({"apiVersion": "apps/v1", "kind": "Deployment",
                         "metadata": {"name": f"{s.name}-{v.name if v else 'all'}", "namespace": s.namespace},
                         "spec": {"template": {"metadata": {"labels": labels},
                                               "spec": {"serviceAccountName": s.account}}}})
    for g in mesh.ingresses:
        docs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": g.name, "namespace": g.namespace},
                     "spec": {"template": {"metadata": {"labels": {"app": g.name}},
                                           "spec": {"serviceAccountName": g.account}}}})
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def test_import_of_compiled_north_south_istio_means_the_policy():
    from meshpolicy.compile import compile_mesh

    from .conftest import check_text

    checked = check_text(NORTH_SOUTH)
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics]
    outputs, diags = compile_mesh(checked.mesh, "istio")
    assert not [d for d in diags if d.is_error], [(d.code, d.message) for d in diags]
    texts = {o.path: SourceFile(o.path, o.content) for o in outputs if o.path != "kustomization.yaml"}
    texts["workloads.yaml"] = SourceFile("workloads.yaml", _workloads(checked.mesh))
    result = import_sources(texts)
    assert not [d for d in result.diagnostics if d.is_error], [(d.code, d.message) for d in result.diagnostics]
    assert not codes(result) & {"MP925", "MP926", "MP931", "MP921", "MP911"}, \
        [(d.code, d.message) for d in result.diagnostics if d.code.startswith("MP9")]
    a, b = checked.mesh, result.mesh
    (gb,) = b.ingresses
    assert b.settings.egress == "registry_only" and [e.hosts for e in b.externals] == [["api.stripe.com"]]
    tokens = [None, Token(None), Token("auth", {"iss": "https://auth.shop.example/", "aud": "shop-api",
                                                  "scope": "orders:write"}),
              Token("auth", {"iss": "https://auth.shop.example/", "aud": "shop-api", "scope": "orders:read"})]
    for method in ("GET", "POST"):
        for path in ("/", "/api/orders/7?view=full", "/api/orders/7", "/api/orders/", "/orders", "/x/y"):
            for host in ("shop.example.com", "other.example.com"):
                for token in tokens:
                    want = evaluate(a, Request(None, "web", method, path, host=host, token=token))
                    b_token = token if token is None or token.provider is None else \
                        Token(b.ingresses[0].jwt[0].name, token.claims)
                    got = evaluate(b, Request(None, gb.name, method, path, host=host, token=b_token))
                    assert got.status == want.status, (method, path, host, token)
                    assert set(got.forwarded) == set(want.forwarded), (method, path, host, token)
                    for name, w in want.forwarded.items():
                        g = got.forwarded[name]
                        # a service without versions: its one implicit version (the import names it `default`)
                        weights = {} if g.route.weights == {"default": 100.0} else g.route.weights
                        assert (g.decision.allowed, g.request.path, weights) == \
                            (w.decision.allowed, w.request.path, w.route.weights), (method, path, token)
    for src in ("orders", "frontend"):
        for method, path in (("POST", "/v1/charges"), ("GET", "/v1/charges"), ("POST", "/v2"), ("GET", "/v2")):
            want = evaluate(a, Request(src, "stripe", method, path))
            ext = b.externals[0].name
            assert evaluate(b, Request(src, ext, method, path)).decision.allowed == want.decision.allowed
        assert not evaluate(b, Request(src, "example.org")).decision.allowed


def test_gamma_route_filters_and_query_matches_are_rule_options():
    text = GATEWAY_API.replace("parentRefs: [{name: web, namespace: edge}]",
                               'parentRefs: [{group: "", kind: Service, name: orders}]').replace(
        "backendRefs: [{name: orders, port: 8080}]", "backendRefs: [{name: orders, port: 8080}]\n  - {}")
    text += """---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: shop}
spec:
  parentRefs: [{name: web, namespace: edge}]
"""
    r = import_sources({"gw.yaml": SourceFile("gw.yaml", text)}, flavour="gateway-api")
    (route,) = r.mesh.routes
    first = route.rules[0]
    assert first.match.queries[0].name == "v" and [(o.op, o.name) for o in first.headers] == [("remove", "x-debug"),
                                                                                            ("set", "x-via")]
    assert not r.mesh.ingresses and "MP903" in codes(r)  # the GRPCRoute on a Gateway is said, not dropped
    out = evaluate(r.mesh, Request("orders", "orders", "GET", "/api/x?v=2"))
    assert out.delivered.path == "/x" and ("x-via", "web") in out.delivered.headers


def test_header_operations_the_language_cannot_hold_are_refused_at_import():
    """A name HTTP does not allow, or a value with a line break, was an MP210/MP214 error
    from the checks (nothing imported, verify stopped); it is the route's MP904 now."""
    from meshpolicy.checks import run_checks

    base = (SHOP / "shop.yaml").read_text()
    for bad in ('set: {"bad name": gateway}', 'set: {"x-a": "line\\r\\nbreak"}'):
        r = import_sources({"in.yaml": SourceFile("in.yaml", base.replace("set: {x-from: gateway}", bad))})
        assert "MP904" in codes(r)
        assert not [d for d in run_checks(r.mesh) if d.code in ("MP210", "MP214")]
        assert not r.mesh.ingresses[0].rules[0].headers


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(mesh_programs())
def test_import_of_compiled_generated_ingresses_answers_as_the_policy(text):
    """Generated programs with ingresses, compiled to Istio and read back: every
    request from outside (methods, paths, no / invalid / valid tokens of each
    provider) gets the same answer: the status the mesh gives, or per service
    it reaches, whether it is allowed (a service route's own answer counts as
    its status: Istio's output may answer it at the gateway already)."""
    from meshpolicy.compile import compile_mesh

    from .conftest import check_text

    checked = check_text(text)
    if not checked.ok or not checked.mesh.ingresses:
        return
    outputs, diags = compile_mesh(checked.mesh, "istio")
    if any(d.is_error for d in diags):
        return  # a construct Istio cannot express (MP701)
    texts = {o.path: SourceFile(o.path, o.content) for o in outputs if o.path != "kustomization.yaml"}
    texts["workloads.yaml"] = SourceFile("workloads.yaml", _workloads(checked.mesh))
    result = import_sources(texts)
    assert not [d for d in result.diagnostics if d.is_error], [(d.code, d.message) for d in result.diagnostics]
    a, b = checked.mesh, result.mesh
    issuer_to_b = {p.issuer: p.name for p in b.jwt_providers}

    def answer(o):
        if o.status is not None:
            return ("status", o.status)
        return tuple((k, "answer", w.status if w.status is not None else w.route.status)
                     if w.route.kind in ("respond", "no_route", "redirect") or w.status is not None
                     else (k, w.decision.allowed) for k, w in sorted(o.forwarded.items()))

    for ga in a.ingresses:
        gb = b.ingress_map[ga.name]
        host = ga.hosts[0].replace("*", "a") if ga.hosts else "x.example"
        tokens = [None, Token(None)] + [Token(p.name, {"iss": p.issuer, "aud": (p.audiences or ["x"])[0], "sub": "u",
                                                       "scope": "read write", "role": "admin"})
                                        for p in a.jwt_providers]
        for method, path, tok in itertools.product(("GET", "POST"), ("/", "/a", "/api/x", "/v1/x?q=1"), tokens):
            want = evaluate(a, Request(None, ga.name, method, path, host=host, token=tok))
            # a provider no ingress accepts and no rule names has no RequestAuthentication in
            # Istio's output: its tokens are ones no provider validates there, as at the ingress
            tok_b = tok if tok is None or tok.provider is None else \
                Token(issuer_to_b.get(a.provider_map[tok.provider].issuer), tok.claims)
            got = evaluate(b, Request(None, gb.name, method, path, host=host, token=tok_b))
            assert answer(got) == answer(want), (method, path, tok)


def test_yaml_with_an_inline_jwks_verifies_and_compiles_in_place(tmp_path):
    """Istio YAML may hold a RequestAuthentication's keys inline: checking,
    verifying or compiling that YAML where it is reads them from the YAML
    (model/jwks_text.py), not from a file only `meshc import` would write."""
    import json

    src = tmp_path / "k8s"
    src.mkdir()
    (src / "shop.yaml").write_text((SHOP / "shop.yaml").read_text().replace(
        'jwksUri: "https://auth.shop.example/jwks"', f"jwks: '{JWKS}'"))
    verified = run_meshc("verify", str(src))
    assert "MP223" not in verified.stdout and verified.returncode == 0, verified.stdout + verified.stderr
    out = tmp_path / "out"
    compiled = run_meshc("compile", str(src), "--target", "istio", "-o", str(out))
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    import yaml

    rules = [r for f in out.glob("*.yaml") for d in yaml.safe_load_all(f.read_text())
             if d and d.get("kind") == "RequestAuthentication" for r in d["spec"]["jwtRules"]]
    assert rules and all(json.loads(r["jwks"]) == json.loads(JWKS) for r in rules)
    # keys the validators cannot use are refused in place too (MP924 at import, nothing inline kept)
    (src / "shop.yaml").write_text((SHOP / "shop.yaml").read_text().replace(
        'jwksUri: "https://auth.shop.example/jwks"', "jwks: '{\"keys\": []}'"))
    assert "MP924" in run_meshc("check", str(src)).stdout
