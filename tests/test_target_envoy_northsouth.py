"""The Envoy target's north-south lowering (issue 15): an ingress gateway
bootstrap, end-user tokens (jwt_authn) at the gateway and at the callee,
claim-based RBAC, and the L7 rule options, checked by the strict protobuf
parse, by `envoy --mode validate`, and on real Envoys with real tokens."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.model.types import (AuthRule, ClaimTest, Cors, DirectResponse, Forward, HeaderOp, Ingress,
                                    JwtProvider, JwtRequirement, LimitKey, Listener, Match, Mesh, PathPattern,
                                    QueryMatch, RateLimit, Ref, Retry, Rewrite, RouteRule, Source, TokenLocation,
                                    WeightedVersion)
from meshpolicy.targets.envoy.json_lines import load

from .conftest import ROOT, check_text, free_port_base

needs_envoy = pytest.mark.skipif(shutil.which("envoy") is None, reason="needs the envoy binary")
ISSUER, AUDIENCE = "https://auth.test/", "shop"
BASE = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http }
service b { namespace ns; port 8080 http }
allow a -> b
"""


def _keypair():
    import jwt  # noqa: F401  (PyJWT, with cryptography)
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="RS256", use="sig")
    return key, {"keys": [jwk]}


def _fwd(service: str) -> Forward:
    return Forward.make(destinations=[WeightedVersion.make(version=Ref.make(name=service))])


def _with(mesh: Mesh, **fields) -> Mesh:
    """A copy of a checked mesh with more of the model filled in (the
    north-south syntax is parsed elsewhere; the lowering reads the model)."""
    out = {f: getattr(mesh, f) for f in Mesh.model_fields}
    out.update(fields)
    return Mesh.make(**out)


def _internet(*claims: ClaimTest) -> Source:
    return Source.make(kind="internet", jwt=JwtRequirement.make(claims=list(claims)) if claims else None)


# Written-order header operations Envoy applies removes-first: lowered so the
# result is semantics/header_ops.py's.
HEADER_OPS = [HeaderOp.make(side="request", op="add", name="x-o", value="1"),
              HeaderOp.make(side="request", op="remove", name="x-o"),
              HeaderOp.make(side="request", op="add", name="x-o", value="2"),
              HeaderOp.make(side="request", op="add", name="x-o", value="3"),
              HeaderOp.make(side="request", op="add", name="x-p", value="1"),
              HeaderOp.make(side="request", op="set", name="x-p", value="2"),
              HeaderOp.make(side="request", op="set", name="x-q", value="q")]


def north_south(d: Path, *, text: str = BASE, token_from=None, more_rules=(), limits=(),
                https: bool = False, jwks_uri: str | None = None) -> tuple[Mesh, object]:
    """BASE plus: a jwt provider with a local JWKS, an ingress `web` on one
    http listener for shop.test routing /api/** to b (rewrite "/", a request
    header set), everything else answered 404; b allows the internet with a
    token whose scope has orders:write (GET), and without a token /public/**."""
    key, jwks = _keypair()
    (d / "auth.jwks.json").write_text(json.dumps(jwks))
    mesh = check_text(text).mesh
    where = {"jwks_uri": jwks_uri} if jwks_uri else {"jwks_file": "auth.jwks.json"}
    prov = JwtProvider.make(name="auth", issuer=ISSUER, audiences=[AUDIENCE], **where,
                            token_from=token_from or [], file=str(d / "shop.mesh"))
    rules = [
        RouteRule.make(index=0, match=Match.make(paths=[PathPattern.make(kind="prefix", value="/api/")]),
                       action=_fwd("b"), rewrite=Rewrite.make(path="/"),
                       headers=[HeaderOp.make(side="request", op="set", name="x-from", value="edge 100%"),
                                *HEADER_OPS,
                                HeaderOp.make(side="response", op="set", name="x-gw", value="web")],
                       cors=Cors.make(origins=["https://shop.test"], methods=["GET", "PUT"], headers=["x-api-key"],
                                      expose=["x-gw"], max_age_ms=600000)),
        RouteRule.make(index=1, match=Match.make(paths=[PathPattern.make(kind="exact", value="/closed")]),
                       action=DirectResponse.make(status=403, body="closed")),
        RouteRule.make(index=2, match=Match.make(paths=[PathPattern.make(kind="exact", value="/q")], queries=[
            QueryMatch.make(name="view", kind="exact", value="full item")]),
            action=DirectResponse.make(status=200, body="query matched")),
        RouteRule.make(index=3, match=Match.make(), action=DirectResponse.make(status=404, body="no such page")),
    ]
    gw = Ingress.make(name="web", namespace="edge", account="web-gw",
                      listeners=[Listener.make(port=8080, protocol="http")] + ([Listener.make(
                          port=8443, protocol="https", cert_file="tls/web.crt", key_file="tls/web.key")]
                          if https else []), hosts=["shop.test", "*.shop.test"],
                      rules=rules, file=str(d / "shop.mesh"))
    n = len(mesh.auth_rules)
    auth = [AuthRule.make(index=n, effect="allow", target=Ref.make(name="b"), methods=["GET"],
                          sources=[_internet(ClaimTest.make(claim="scope", op="has", value="orders:write"))]),
            AuthRule.make(index=n + 1, effect="allow", target=Ref.make(name="b"), sources=[_internet()],
                          paths=[PathPattern.make(kind="glob", value="/public/**")])]
    auth += [r.model_copy(update={"index": n + 2 + i}) for i, r in enumerate(more_rules)]
    return _with(mesh, jwt_providers=[prov], ingresses=[gw], auth_rules=mesh.auth_rules + auth,
                 rate_limits=mesh.rate_limits + list(limits)), key


def _compile(mesh: Mesh, certs: str = "/certs", **settings):
    outputs, diags = compile_mesh(mesh, "envoy", CompileOptions(certs_dir=certs, settings=settings))
    return {o.path: o for o in outputs}, diags


def _errors(diags):
    return [(d.code, d.message) for d in diags if d.is_error]


def _hcm(listener: dict) -> dict:
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _listener(cfg: dict, name: str) -> dict:
    return next(li for li in cfg["static_resources"]["listeners"] if li["name"] == name)


# -- what is written ---------------------------------------------------------

def test_ingress_bootstrap_is_its_own_workload(tmp_path):
    mesh, _ = north_south(tmp_path)
    out, diags = _compile(mesh)
    assert not _errors(diags)
    assert sorted(out) == ["edge/web.yaml", "ns/a.yaml", "ns/b.yaml"]
    gw = load(out["edge/web.yaml"].content)
    assert gw["node"]["id"] == "edge/web"
    front = _hcm(_listener(gw, "ingress|8080"))
    assert _listener(gw, "ingress|8080")["address"]["socket_address"]["port_value"] == 8080  # per-workload
    names = [f["name"] for f in front["http_filters"]]
    assert names[0] == "envoy.filters.http.jwt_authn" and names[-1] == "envoy.filters.http.router"
    rules = front["http_filters"][0]["typed_config"]["rules"]
    assert rules[-1] == {"match": {"prefix": "/"}}  # no token where the policy reads one: nothing to verify
    assert rules[0]["match"]["headers"] == [{"name": "authorization", "string_match": {"safe_regex": {
        "regex": "(?i)Bearer\\ .*"}}}]
    req = rules[0]["requires"]["requires_any"]["requirements"]
    assert {"allow_missing": {}} in req and {"provider_name": "auth"} in req  # missing passes, invalid: 401
    assert front["route_config"]["virtual_hosts"][0]["domains"] == ["*.shop.test", "shop.test"]
    # The gateway calls b over mTLS with its own identity.
    b = next(c for c in gw["static_resources"]["clusters"] if c["name"] == "b")
    tls = b["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls["tls_certificates"][0]["certificate_chain"]["filename"] == "/certs/edge/web-gw/cert.pem"


def test_header_values_are_literal_and_the_selector_cannot_be_forged(tmp_path):
    mesh, _ = north_south(tmp_path)
    out, _ = _compile(mesh)
    gw = load(out["edge/web.yaml"].content)
    route = _hcm(_listener(gw, "ingress|8080"))["route_config"]["virtual_hosts"][0]["routes"][0]
    adds = route["request_headers_to_add"]
    assert adds[0] == {"header": {"key": "x-from", "value": "edge 100%%"},
                       "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
    assert adds[-1]["header"]["key"] == "x-meshc-ingress-service"  # last: no rule op can replace it
    assert adds[-1]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    hop = _hcm(_listener(gw, "ingress|mesh"))["route_config"]
    assert hop["request_headers_to_remove"] == ["x-meshc-ingress-service"]


def test_internet_principal_is_the_gateway_and_the_claims(tmp_path):
    mesh, _ = north_south(tmp_path)
    out, _ = _compile(mesh)
    b = load(out["ns/b.yaml"].content)
    inbound = _listener(b, "inbound")
    hcm = _hcm(inbound)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names.index("envoy.filters.http.jwt_authn") < names.index("meshc.inbound.deny")
    jwt_cfg = hcm["http_filters"][0]["typed_config"]
    # The plan's validating providers: an invalid token is 401 here too, a missing one passes.
    assert jwt_cfg["rules"][0]["requires"]["requires_any"]["requirements"] == [
        {"provider_name": "auth"}, {"allow_missing": {}}]
    assert "local_reply_config" in hcm  # another audience's 403 is 401 too
    policies = hcm["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["meshc.inbound.allow"][
        "rbac"]["rules"]["policies"]
    text = json.dumps(policies["allow-1"])
    assert "spiffe://example.org/ns/edge/sa/web-gw" in text and '"key": "scope"' in text
    sans = inbound["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"][
        "validation_context"]["match_typed_subject_alt_names"]
    assert {"san_type": "URI", "matcher": {"exact": "spiffe://example.org/ns/edge/sa/web-gw"}} in sans
    # a's sidecar is not the gateway: it never carries token filters.
    a = load(out["ns/a.yaml"].content)
    assert "jwt_authn" not in out["ns/a.yaml"].content and a["node"]["id"] == "ns/a"


def test_has_on_a_space_separated_string_cannot_be_fooled():
    """`scope has "orders:write"` as Envoy runs it: a list element equal to
    the value, or a whole-string RE2 match over space-separated words."""
    import re2

    from meshpolicy.targets.envoy.jwt_authn import claim_principal

    p = claim_principal("auth", ClaimTest.make(claim="scope", op="has", value="orders:write"))
    regex = p["or_ids"]["ids"][-1]["metadata"]["value"]["string_match"]["safe_regex"]["regex"]
    words = lambda s: "orders:write" in s.split(" ")  # noqa: E731  (docs/semantics.md's meaning)
    for claim in ["orders:write", "a orders:write", "orders:write b", "a orders:write b", "a  orders:write",
                  "orders:writer", "xorders:write", "orders:write\nb", "orders-write", "orders:writ", "",
                  "a\torders:write", "ORDERS:WRITE", "orders:write ", " orders:write"]:
        assert (re2.fullmatch(regex, claim) is not None) == words(claim), claim
    dotted = claim_principal("auth", ClaimTest.make(claim="scope", op="has", value="a.b"))
    r2 = dotted["or_ids"]["ids"][-1]["metadata"]["value"]["string_match"]["safe_regex"]["regex"]
    assert re2.fullmatch(r2, "aXb") is None  # escaped, not a wildcard
    spaced = claim_principal("auth", ClaimTest.make(claim="scope", op="has", value="a b"))
    assert "safe_regex" not in json.dumps(spaced)  # never one word: only the list test


def test_eq_on_numbers_and_booleans():
    from meshpolicy.targets.envoy.jwt_authn import claim_principal

    n = json.dumps(claim_principal("auth", ClaimTest.make(claim="level", op="eq", value="3")))
    assert '"double_match": {"exact": 3.0}' in n
    # A list of numbers `has` one by its JSON text too; a fraction or a huge integer is only a string.
    listed = json.dumps(claim_principal("auth", ClaimTest.make(claim="groups", op="has", value="42")))
    assert '"list_match": {"one_of": {"double_match": {"exact": 42.0}}}' in listed
    for text in ("2.5", "1e3", "9007199254740993", "03"):
        assert "double_match" not in json.dumps(claim_principal("auth", ClaimTest.make(claim="x", op="eq",
                                                                                     value=text)))
    t = json.dumps(claim_principal("auth", ClaimTest.make(claim="admin", op="eq", value="true")))
    assert '"bool_match": true' in t
    s = claim_principal("auth", ClaimTest.make(claim="role", op="eq", value="admin"))
    assert s["metadata"]["value"] == {"string_match": {"exact": "admin"}}


def test_token_locations_are_always_explicit(tmp_path):
    """With no location written Envoy would also read `access_token` from the
    query: the default (Authorization: Bearer) is written out."""
    mesh, _ = north_south(tmp_path)
    out, _ = _compile(mesh)
    prov = _hcm(_listener(load(out["edge/web.yaml"].content), "ingress|8080"))["http_filters"][0][
        "typed_config"]["providers"]["auth"]
    # `Bearer ` in every letter case (Envoy compares prefixes with case, the policy without).
    assert len(prov["from_headers"]) == 64 and {"name": "authorization", "value_prefix": "bEaReR "} in prov[
        "from_headers"] and {h["name"] for h in prov["from_headers"]} == {"authorization"}
    assert "from_params" not in prov
    mesh2, _ = north_south(tmp_path, token_from=[TokenLocation.make(kind="query", name="token"),
                                                 TokenLocation.make(kind="cookie", name="session")])
    out2, _ = _compile(mesh2)
    prov2 = _hcm(_listener(load(out2["edge/web.yaml"].content), "ingress|8080"))["http_filters"][0][
        "typed_config"]["providers"]["auth"]
    assert prov2["from_params"] == ["token"] and prov2["from_cookies"] == ["session"]
    assert "from_headers" not in prov2


def test_jwks_gone_since_the_checks_is_mp001_not_a_traceback(tmp_path):
    mesh, _ = north_south(tmp_path)
    (tmp_path / "auth.jwks.json").unlink()
    _, diags = _compile(mesh)
    assert "MP001" in [d.code for d in diags if d.is_error]


def test_mesh_unique_ports_place_the_gateway_after_the_services(tmp_path):
    mesh, _ = north_south(tmp_path)
    out, diags = _compile(mesh, port_base=30000, ports_per_workload=10)
    assert not _errors(diags)
    gw = load(out["edge/web.yaml"].content)
    assert _listener(gw, "ingress|8080")["address"]["socket_address"]["port_value"] == 30000 + 2 * 10 + 4
    assert _listener(gw, "ingress|mesh")["address"]["socket_address"]["port_value"] == 30000 + 2 * 10 + 1
    assert gw["admin"]["address"]["socket_address"]["port_value"] == 30000 + 2 * 10 + 2
    # The services' ports did not move.
    a = load(out["ns/a.yaml"].content)
    assert a["admin"]["address"]["socket_address"]["port_value"] == 30002


def test_gateway_listener_on_a_reserved_port_is_mp720(tmp_path):
    mesh, _ = north_south(tmp_path)
    g = mesh.ingresses[0]
    bad = _with(mesh, ingresses=[g.model_copy(update={"listeners": [Listener.make(port=15000, protocol="http")]})])
    _, diags = _compile(bad)
    assert "MP720" in [d.code for d in diags]


L7_TEXT = """mesh m { trust_domain "example.org" }
service a { namespace ns; port 8080 http }
service b { namespace ns; port 8080 http; version v1; version v2 }
allow a -> b
route b {
  GET /orders/** -> v1
  * -> v2
}
"""


def _l7_mesh() -> Mesh:
    """b's route with every L7 option on its first rule, and a service-level CORS."""
    mesh = check_text(L7_TEXT).mesh
    route = mesh.routes[0]
    r0 = route.rules[0]
    r0 = r0.model_copy(update={
        "match": r0.match.model_copy(update={"queries": [QueryMatch.make(name="view", kind="exact", value="full"),
                                                         QueryMatch.make(name="debug", kind="present")]}),
        "headers": [HeaderOp.make(side="request", op="add", name="x-a", value="1"),
                    HeaderOp.make(side="request", op="remove", name="x-a"),
                    HeaderOp.make(side="request", op="add", name="x-a", value="2"),
                    HeaderOp.make(side="response", op="remove", name="server")],
        "rewrite": Rewrite.make(path="/v1/orders/", host="orders.internal"),
        "retry": Retry.make(attempts=2, on=["connect-failure"], on_status=[503, 429]),
        "cors": Cors.make(origins=["https://shop.example"], methods=["GET", "POST"], headers=["content-type"],
                          expose=["x-total"], credentials=True, max_age_ms=3600000),
    })
    svc = mesh.service_map["b"].model_copy(update={"cors": Cors.make(origins=["*"])})
    services = [svc if s.name == "b" else s for s in mesh.services]
    return _with(mesh, services=services, routes=[route.model_copy(update={"rules": [r0, route.rules[1]]})])


def test_l7_options_on_a_sidecar_route():
    out, diags = _compile(_l7_mesh())
    assert not _errors(diags), _errors(diags)
    a = load(out["ns/a.yaml"].content)
    hcm = _hcm(_listener(a, "outbound"))
    assert [f["name"] for f in hcm["http_filters"]][0] == "envoy.filters.http.cors"
    vh = next(v for v in hcm["route_config"]["virtual_hosts"] if v["name"] == "b")
    r0, r1 = vh["routes"]
    from meshpolicy.targets.envoy.l7 import encodings

    assert r0["match"]["query_parameters"] == [{"name": "view", "string_match": {"safe_regex": {
        "regex": encodings("full")}}}, {"name": "debug", "present_match": True}]
    # add, remove, add of one header: Envoy removes before it adds, so only the last add is kept.
    assert r0["request_headers_to_remove"] == ["x-a"]
    assert [h["header"]["value"] for h in r0["request_headers_to_add"]] == ["2"]
    assert r0["response_headers_to_remove"] == ["server"]
    # A glob's fixed part `/orders/` is what the rewrite replaces.
    import re2

    assert r0["route"]["regex_rewrite"] == {"pattern": {"regex": "^" + re2.escape("/orders/")},
                                            "substitution": "/v1/orders/"}
    assert r0["route"]["host_rewrite_literal"] == "orders.internal"
    rp = r0["route"]["retry_policy"]
    assert rp["retry_on"] == "connect-failure,retriable-status-codes" and rp["retriable_status_codes"] == [429, 503]
    cors = r0["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert cors["allow_origin_string_match"] == [{"exact": "https://shop.example"}]
    assert cors["allow_credentials"] is True and cors["max_age"] == "3600"
    # The rule without CORS of its own gets the service's.
    assert r1["typed_per_filter_config"]["envoy.filters.http.cors"]["allow_origin_string_match"] == [
        {"safe_regex": {"regex": ".*"}}]


def test_query_values_match_every_spelling_that_decodes_to_them():
    """Envoy compares a parameter's raw text; the policy tests the decoded
    value (semantics/query.py): the pattern admits exactly the raw spellings
    that decode to the tested value."""
    import re2

    from meshpolicy.semantics.query import parse_query
    from meshpolicy.targets.envoy.l7 import encodings

    for value, raws in {
        # (a raw space never reaches a route: it is no valid request target)
        "full item": ["full+item", "full%20item", "f%75ll+item", "full%2Bitem", "full+itemx", "fullitem"],
        "a+b": ["a+b", "a%2Bb", "a%2bb", "a%20b"],
        "50%": ["50%25", "50%2"],  # a bare `%` is read as written by Python's decoder: only %25 here
        "é/x": ["é/x", "%C3%A9/x", "%c3%a9%2F%78", "e/x"],
        "a&b": ["a%26b", "a&b"],
    }.items():
        for raw in raws:
            decoded = parse_query(f"/q?view={raw}")["view"][0]  # what the route test sees
            # Envoy's raw value of a parameter ends at the first `&` too.
            assert (re2.fullmatch(encodings(value), raw.split("&")[0]) is not None) == (decoded == value), (value, raw)
    assert re2.fullmatch(encodings("ab") + ".*", "%61b%zz") is not None  # prefix: the rest as it comes


def test_query_regex_is_mp701():
    mesh = _l7_mesh()
    route = mesh.routes[0]
    r0 = route.rules[0]
    r0 = r0.model_copy(update={"match": r0.match.model_copy(update={
        "queries": [QueryMatch.make(name="view", kind="regex", value="f.*")]})})
    _, diags = _compile(_with(mesh, routes=[route.model_copy(update={"rules": [r0, route.rules[1]]})]))
    assert "MP701" in [d.code for d in diags]


def test_rewrite_is_semantics_rewrite_for():
    """Each rule's routes, emulated as Envoy applies them (first matching route;
    prefix_rewrite swaps the matched prefix or the whole `path`; regex_rewrite
    replaces its match), rewrite like semantics/rewrite.py `rewrite_for`."""
    import re2

    from meshpolicy.semantics.patterns import path_matches
    from meshpolicy.semantics.rewrite import rewrite_for
    from meshpolicy.targets.envoy.l7 import per_path, rewrite_fields
    from meshpolicy.targets.envoy.matchers import route_path_match

    class Sink:
        def unsupported(self, *a):
            raise AssertionError(a)

    def envoy_rewrite(rule, path):
        for _, variant in per_path(rule):
            m = route_path_match(variant.match.paths)
            hit = (path == m["path"] if "path" in m else path.startswith(m["prefix"]) if "prefix" in m
                   else re2.fullmatch(m["safe_regex"]["regex"], path) is not None)
            if not hit:
                continue
            f = rewrite_fields(Sink(), variant, "")
            if "prefix_rewrite" in f:
                matched = m.get("path") or m.get("prefix")
                return f["prefix_rewrite"] + path[len(matched):]
            rx = f["regex_rewrite"]
            return re2.sub(rx["pattern"]["regex"], rx["substitution"].replace("\\\\", "\\"), path, count=1)
        return None

    def pat(kind, value):
        return PathPattern.make(kind=kind, value=value)

    cases = [
        [pat("prefix", "/api/")],
        [pat("exact", "/old")],
        [pat("glob", "/a/**")],
        [pat("glob", "/a/*/b"), pat("prefix", "/a/x")],
        [pat("glob", "/a/**"), pat("prefix", "/a/x/")],
        [pat("prefix", "/a/x/"), pat("glob", "/a/**")],
        [],
    ]
    paths = ["/api/orders", "/old", "/a/x/b", "/a/x/c", "/a/y/b", "/a/x/", "/b", "/api/"]
    for patterns in cases:
        rule = RouteRule.make(index=0, match=Match.make(paths=patterns), action=_fwd("b"),
                              rewrite=Rewrite.make(path="/n/"))
        for path in paths:
            matches = not patterns or any(path_matches(p, path) for p in patterns)
            if not matches:
                continue
            want = rewrite_for([(p.kind, p.value) for p in patterns],
                               lambda k, v, x: path_matches(PathPattern.make(kind=k, value=v), x), path, "/n/")
            assert envoy_rewrite(rule, path) == want, (patterns, path)


def test_host_header_ops_are_mp701():
    mesh = _l7_mesh()
    route = mesh.routes[0]
    r0 = route.rules[0].model_copy(update={"headers": [HeaderOp.make(side="request", op="set", name="host",
                                                                     value="x")]})
    bad = _with(mesh, routes=[route.model_copy(update={"rules": [r0, route.rules[1]]})])
    _, diags = _compile(bad)
    assert "MP701" in [d.code for d in diags]


# -- on real Envoys -----------------------------------------------------------

def _envoy_validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["envoy", "--mode", "validate", "-c", str(path), "-l", "error"],
                          capture_output=True, text=True, timeout=60)


@needs_envoy
def test_every_north_south_bootstrap_passes_envoy_validate(tmp_path):
    from meshpolicy.certs import issue

    numbers = AuthRule.make(index=0, effect="allow", target=Ref.make(name="b"), sources=[_internet(
        ClaimTest.make(claim="level", op="eq", value="3"), ClaimTest.make(claim="groups", op="has", value="42"),
        ClaimTest.make(claim="admin", op="eq", value="true"))])
    mesh, _ = north_south(tmp_path, token_from=[TokenLocation.make(kind="header", name="authorization",
                                                                   prefix="Bearer "),
                                                TokenLocation.make(kind="query", name="access_token"),
                                                TokenLocation.make(kind="cookie", name="session")],
                          more_rules=[numbers],
                          limits=[_limit(LimitKey.make(kind="claim", name="sub"),
                                         Source.make(kind="internet", jwt=JwtRequirement.make())),
                                  _limit(LimitKey.make(kind="header", name="x-api-key"),
                                         Source.make(kind="service", name="a")),
                                  _limit(None, _internet(), Source.make(kind="internet", jwt=JwtRequirement.make()))])
    g = mesh.ingresses[0]
    (tmp_path / "certs-in").mkdir()
    issue(mesh, tmp_path / "certs")
    # The https listener's files, relative to the declaring file's folder.
    shutil.copy(tmp_path / "certs" / "edge" / "web-gw" / "cert.pem", tmp_path / "certs-in" / "web.crt")
    shutil.copy(tmp_path / "certs" / "edge" / "web-gw" / "key.pem", tmp_path / "certs-in" / "web.key")
    g = g.model_copy(update={"listeners": g.listeners + [Listener.make(
        port=8443, protocol="https", cert_file="certs-in/web.crt", key_file="certs-in/web.key")]})
    remote = JwtProvider.make(name="remote", issuer="https://idp.test/", jwks_uri="https://idp.test/jwks",
                              file=str(tmp_path / "shop.mesh"))
    mesh = _with(mesh, ingresses=[g], jwt_providers=mesh.jwt_providers + [remote])
    for m in (mesh, _l7_mesh(), _egress_mesh("allow_any")):
        issue(m, tmp_path / "certs")
        out, diags = _compile(m, certs=str(tmp_path / "certs"))
        assert not _errors(diags), _errors(diags)
        for o in out.values():
            p = tmp_path / "out" / o.path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(o.content)
            r = _envoy_validate(p)
            assert r.returncode == 0, f"{o.path}: {r.stdout}{r.stderr}"
    gw = load((tmp_path / "out" / "edge" / "web.yaml").read_text())
    https = _listener(gw, "ingress|8443")
    files = https["filter_chains"][0]["transport_socket"]["typed_config"]["common_tls_context"]["tls_certificates"][0]
    assert files["certificate_chain"]["filename"] == str(tmp_path / "certs-in" / "web.crt")
    assert any(c["name"] == "jwks|remote" for c in gw["static_resources"]["clusters"])


STRIDE = 10


def _request(port: int, path: str, host: str = "shop.test", headers: dict | None = None,
             method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Host": host, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _wait_ready(port: int, procs) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if any(p.poll() is not None for p in procs):
            raise AssertionError("a process exited early")
        time.sleep(0.2)
    raise AssertionError(f"admin port {port} never became ready")


def _token(key, **claims) -> str:
    import jwt

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 600, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256",
                      headers={"kid": "k1"})


def _alg_none(**claims) -> str:
    import base64

    def seg(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 600, **claims}
    return f"{seg({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{seg(body)}."


def _tampered(token: str) -> str:
    import base64

    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["scope"] = "orders:write admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """The gateway, b's sidecar and b's app (tests/proxy_raw_app.py, which
    answers with what it received), on loopback."""
    if shutil.which("envoy") is None:
        pytest.skip("needs the envoy binary")
    from meshpolicy.certs import issue

    d = tmp_path_factory.mktemp("ns")
    mesh, key = north_south(d, https=True)
    base = free_port_base(3 * STRIDE, STRIDE)
    issue(mesh, d / "certs")
    # The https listener's pair, next to the policy (any certificate will do: the gateway's own here).
    (d / "tls").mkdir()
    shutil.copy(d / "certs" / "edge" / "web-gw" / "cert.pem", d / "tls" / "web.crt")
    shutil.copy(d / "certs" / "edge" / "web-gw" / "key.pem", d / "tls" / "web.key")
    out, diags = _compile(mesh, certs=str(d / "certs"), port_base=base, ports_per_workload=STRIDE)
    assert not _errors(diags), _errors(diags)
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_raw_app.py"), "--port",
                                       str(base + STRIDE + 3), "--service", "b"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for path in ("ns/b.yaml", "edge/web.yaml"):
            p = d / "out" / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(out[path].content)
            procs.append(subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                           "--drain-time-s", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_ready(base + STRIDE + 2, procs)
        _wait_ready(base + 2 * STRIDE + 2, procs)
        yield {"port": base + 2 * STRIDE + 4, "https_port": base + 2 * STRIDE + 5, "key": key,
               "b_inbound": base + STRIDE, "ca": d / "certs" / "ca.pem"}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@needs_envoy
def test_tokens_at_the_gateway_and_claims_at_the_callee(running):
    port, key = running["port"], running["key"]
    bearer = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    # No token: the callee's authorization decides (a public path passes, the rest is 403).
    assert _request(port, "/api/public/x")[0] == 200
    assert _request(port, "/api/orders")[0] == 403
    # A valid token with the claim: 200, with b seeing the rewritten path and the literal header.
    status, headers, body = _request(port, "/api/orders/7", headers=bearer(_token(key, scope="a orders:write")))
    assert status == 200
    seen = json.loads(body)
    assert seen["target"] == "/orders/7"
    got = {k.lower(): v for k, v in seen["headers"]}
    assert got["x-from"] == "edge 100%"
    assert got["authorization"].startswith("Bearer ")  # forwarded unchanged
    assert "x-meshc-ingress-service" not in got
    assert headers.get("x-gw") == "web"
    # The claim as a list works too; a scope without the word, or a word that only contains it, does not.
    assert _request(port, "/api/orders", headers=bearer(_token(key, scope=["orders:write"])))[0] == 200
    assert _request(port, "/api/orders", headers=bearer(_token(key, scope="orders:read")))[0] == 403
    assert _request(port, "/api/orders", headers=bearer(_token(key, scope="orders:writer xorders:write")))[0] == 403
    assert _request(port, "/api/orders", headers=bearer(_token(key)))[0] == 403  # no scope claim at all
    # Invalid tokens: 401 at the gateway, whatever the route.
    good = _token(key, scope="orders:write")
    # The Bearer prefix in any letter case, and only at the start of the value (semantics/tokens.py):
    # `Basic Bearer <t>` carries no token at all.
    assert _request(port, "/api/orders", headers={"Authorization": f"bearer {good}"})[0] == 200
    assert _request(port, "/api/orders", headers={"Authorization": "BEARER x.y.z"})[0] == 401
    assert _request(port, "/api/orders", headers={"Authorization": f"Basic Bearer {good}"})[0] == 403
    assert _request(port, "/api/public/x", headers={"Authorization": "Basic Bearer x.y.z"})[0] == 200
    assert _request(port, "/api/orders", headers={"Authorization": f"xBearer {good}"})[0] == 403
    for bad in (_tampered(good), _token(key, scope="orders:write", iss="https://evil.test/"),
                _token(key, scope="orders:write", aud="other"),
                _token(key, scope="orders:write", exp=int(time.time()) - 3600),
                _alg_none(scope="orders:write"), "not-a-token"):
        assert _request(port, "/api/orders", headers=bearer(bad))[0] == 401
        assert _request(port, "/api/public/x", headers=bearer(bad))[0] == 401
    # POST is not in the token rule: the claims gate only what the rule names.
    assert _request(port, "/api/orders", headers=bearer(good), method="POST")[0] == 403


@needs_envoy
def test_header_operations_and_cors_as_the_semantics_say(running):
    from meshpolicy.semantics.cors import preflight_headers
    from meshpolicy.semantics.header_ops import apply_header_ops

    port = running["port"]
    sent = [("x-o", "client"), ("x-p", "client"), ("x-q", "client")]
    status, _, body = _request(port, "/api/public/x", headers=dict(sent))
    assert status == 200
    got = [(k.lower(), v) for k, v in json.loads(body)["headers"] if k.lower() in ("x-o", "x-p", "x-q")]
    want = [(k, v) for k, v in apply_header_ops(HEADER_OPS, "request", sent)]
    assert sorted(got) == sorted(want), (got, want)
    # A preflight from an allowed origin is answered at the gateway (b never sees it).
    pre = {"Origin": "https://shop.test", "Access-Control-Request-Method": "PUT"}
    status, headers, _ = _request(port, "/api/orders", headers=pre, method="OPTIONS")
    assert status == 200
    h = {k.lower(): v for k, v in headers.items()}
    cors = Cors.make(origins=["https://shop.test"], methods=["GET", "PUT"], headers=["x-api-key"], expose=["x-gw"],
                     max_age_ms=600000)
    for name, value in preflight_headers(cors, "https://shop.test"):
        assert h.get(name) == value, name
    # An actual request from it gets the origin back; another origin gets no CORS headers.
    _, headers, _ = _request(port, "/api/public/x", headers={"Origin": "https://shop.test"})
    assert headers.get("access-control-allow-origin") == "https://shop.test"
    _, headers, _ = _request(port, "/api/public/x", headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in {k.lower() for k in headers}


@needs_envoy
def test_hosts_rules_and_forged_selector(running):
    port, key = running["port"], running["key"]
    assert _request(port, "/api/public/x", host="other.test")[0] == 404  # not one of the hosts
    assert _request(port, "/api/public/x", host="a.shop.test")[0] == 200  # *.shop.test
    assert _request(port, "/api/public/x", host="shop.test:8080")[0] == 200  # the port is not the host
    from meshpolicy.semantics.hosts import any_host_matches

    for host in ("shop.test.", "SHOP.Test", "a.b.shop.test", ".shop.test", "xshop.test", "shop.test.evil"):
        assert (_request(port, "/api/public/x", host=host)[0] == 200) == any_host_matches(
            ["shop.test", "*.shop.test"], host), host
    status, _, body = _request(port, "/elsewhere")
    assert (status, body) == (404, b"no such page")  # the catch-all `respond`
    # Query tests compare the decoded value (semantics/query.py), the first occurrence only.
    from meshpolicy.semantics.query import parse_query, query_matches_raw

    for query in ("view=full+item", "view=full%20item", "view=x&view=full+item", "view=full+item&view=x",
                  "view=full%2Bitem", "other=1"):
        expect = query_matches_raw("view", "exact", "full item", parse_query(f"/q?{query}"))
        assert (_request(port, f"/q?{query}")[0] == 200) == expect, query
    # Only jwt_authn's own 403 (another audience) becomes 401; a rule's `respond 403` stays.
    assert _request(port, "/closed")[:3:2] == (403, b"closed")
    # A client's own selector header is replaced, and b still never sees it.
    status, _, body = _request(port, "/api/public/x", headers={"x-meshc-ingress-service": "a"})
    assert status == 200
    assert "x-meshc-ingress-service" not in {k.lower() for k, _ in json.loads(body)["headers"]}


@needs_envoy
def test_https_listener_terminates_tls_with_the_policys_files(running):
    import ssl

    ctx = ssl.create_default_context(cafile=str(running["ca"]))
    ctx.check_hostname = False  # the certificate names a SPIFFE URI, not shop.test; the chain is checked
    bearer = {"Authorization": f"Bearer {_token(running['key'], scope='orders:write')}", "Host": "shop.test"}
    req = urllib.request.Request(f"https://127.0.0.1:{running['https_port']}/api/orders/1", headers=bearer)
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        assert r.status == 200 and json.loads(r.read())["target"] == "/orders/1"
    with pytest.raises(OSError):  # plaintext to the https listener is no HTTP exchange
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{running['https_port']}/api/public/x",
                                                      headers={"Host": "shop.test"}), timeout=5)


@needs_envoy
def test_a_valid_token_does_not_make_a_mesh_caller_the_internet(running):
    """The claims gate only requests whose peer is the gateway: straight to
    b's inbound listener without the gateway's certificate, nothing passes."""
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{running['b_inbound']}/public/x", timeout=5)


def test_the_control_plane_serves_the_same_gateway_and_callee(tmp_path):
    """One code path: the gateway's and the callee's bootstraps split into xDS
    resources that each parse strictly, and join back to the static target."""
    from meshpolicy.xds.resources import join, snapshots
    from meshpolicy.xds.server import _pack

    mesh, _ = north_south(tmp_path)
    out, diags = _compile(mesh, port_base=30000, ports_per_workload=10)
    assert not _errors(diags)
    snaps = snapshots(list(out.values()))
    assert set(snaps) == {"edge/web", "ns/a", "ns/b"}
    for node, (static, snap) in snaps.items():
        assert json.dumps(join(snap), sort_keys=True) == json.dumps(static["static_resources"], sort_keys=True), node
        for type_url, resources in snap.resources.items():
            for resource in resources.values():
                _pack(type_url, resource)
    routes = snaps["edge/web"][1].resources["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"]
    assert sorted(routes) == ["ingress|8080|ingress", "ingress|mesh|mesh"]


# -- egress -------------------------------------------------------------------

EGRESS = """mesh m {{ trust_domain "example.org"; egress {stance} }}
service a {{ namespace ns; port 8080 http }}
service b {{ namespace ns; port 8080 http }}
external stripe {{ namespace pay; host "localhost"; port {tls_port} tls; timeout 2s }}
external pg {{ host "db.example.net"; port 5432 tcp }}
allow a -> b
allow a -> stripe POST /v1/**
deny a -> stripe /v1/admin/**
allow a -> pg
"""


def _egress_mesh(stance: str = "registry_only", tls_port: int = 443) -> Mesh:
    checked = check_text(EGRESS.format(stance=stance, tls_port=tls_port))
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    return checked.mesh


def test_egress_only_where_the_plan_lets_the_caller_out():
    out, diags = _compile(_egress_mesh())
    assert not _errors(diags), _errors(diags)
    a, b = load(out["ns/a.yaml"].content), load(out["ns/b.yaml"].content)
    a_hcm = _hcm(_listener(a, "outbound"))
    names = [vh["name"] for vh in a_hcm["route_config"]["virtual_hosts"]]
    assert "external|stripe|localhost|443" in names and "egress|any" not in names  # registry_only
    assert [li["name"] for li in a["static_resources"]["listeners"]] == ["inbound", "outbound", "outbound|tcp|pg|5432"]
    tls = next(c for c in a["static_resources"]["clusters"] if c["name"] == "external|stripe|localhost|443")
    ctx = tls["transport_socket"]["typed_config"]
    assert ctx["sni"] == "localhost"
    assert ctx["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == \
        "/etc/ssl/certs/ca-certificates.crt"  # the system bundle unless [compile.envoy] egress_ca says
    # b is named by no egress rule: no route out, no cluster, no tcp listener.
    assert "external|" not in out["ns/b.yaml"].content
    assert [li["name"] for li in b["static_resources"]["listeners"]] == ["inbound", "outbound"]


def test_allow_any_adds_the_dynamic_forward_proxy():
    out, diags = _compile(_egress_mesh("allow_any"))
    assert not _errors(diags), _errors(diags)
    # b may not call stripe: under allow_any its hosts are refused, not passed through as unknown.
    b_vhosts = _hcm(_listener(load(out["ns/b.yaml"].content), "outbound"))["route_config"]["virtual_hosts"]
    refused = next(vh for vh in b_vhosts if vh["name"] == "external|stripe|refused")
    assert "localhost" in refused["domains"] and refused["routes"][0]["direct_response"]["status"] == 403
    assert b_vhosts.index(refused) < len(b_vhosts) - 1  # before the catch-all
    for path in ("ns/a.yaml", "ns/b.yaml"):
        cfg = load(out[path].content)
        hcm = _hcm(_listener(cfg, "outbound"))
        assert hcm["route_config"]["virtual_hosts"][-1]["domains"] == ["*"]
        assert "envoy.filters.http.dynamic_forward_proxy" in [f["name"] for f in hcm["http_filters"]]
        assert any(c["name"] == "egress|any" for c in cfg["static_resources"]["clusters"])


def _ca_and_server_cert(d: Path, host: str):
    """A CA, and a server certificate for `host` signed by it (PEM files)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("egress test CA")).issuer_name(name("egress test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name(host)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    d.mkdir(parents=True, exist_ok=True)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    return d / "ca.pem", d / "server.pem", d / "server.key"


TLS_STAND_IN = """
import http.server, json, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        body = json.dumps({"method": self.command, "path": self.path, "host": self.headers.get("host")}).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = _answer
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


@needs_envoy
def test_egress_originates_verified_tls_and_applies_the_callers_rules(tmp_path):
    from meshpolicy.certs import issue

    base = free_port_base(3 * STRIDE, STRIDE)
    tls_port = base + 2 * STRIDE  # outside every workload's block
    good_ca, cert, key = _ca_and_server_cert(tmp_path / "pki", "localhost")
    other_ca, _, _ = _ca_and_server_cert(tmp_path / "other", "localhost")
    mesh = _egress_mesh(tls_port=tls_port)
    issue(mesh, tmp_path / "certs")
    procs = [subprocess.Popen([sys.executable, "-c", TLS_STAND_IN, str(tls_port), str(cert), str(key)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        ports = {}
        for name, ca, b in (("trusted", good_ca, base), ("untrusted", other_ca, base + STRIDE)):
            # a alone (workload 0) is started; each copy on its own block of ports.
            out, diags = _compile(mesh, certs=str(tmp_path / "certs"), port_base=b, ports_per_workload=STRIDE,
                                  egress_ca=str(ca))
            assert not _errors(diags), _errors(diags)
            p = tmp_path / name / "a.yaml"
            p.parent.mkdir(parents=True)
            p.write_text(out["ns/a.yaml"].content)
            procs.append(subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                           "--drain-time-s", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            _wait_ready(b + 2, procs)
            ports[name] = b + 1
        out_port = ports["trusted"]
        # Allowed: plain HTTP from the app, TLS from the sidecar, the stand-in's answer.
        status, _, body = _request(out_port, "/v1/charges", host="localhost", method="POST")
        assert status == 200 and json.loads(body)["path"] == "/v1/charges"
        assert _request(out_port, "/v1/charges", host=f"localhost:{tls_port}", method="POST")[0] == 200
        assert _request(out_port, "/v1/charges", host="localhost")[0] == 403  # GET: no allow rule (default deny)
        assert _request(out_port, "/v1/admin/keys", host="localhost", method="POST")[0] == 403  # the deny
        assert _request(out_port, "/v1/%2e%2e/admin/x", host="localhost", method="POST")[0] in (400, 403)
        # The reference evaluator decides the same (egress: at the caller's sidecar).
        from meshpolicy.semantics.evaluate import Request, evaluate

        for method, path in (("POST", "/v1/charges"), ("GET", "/v1/charges"), ("POST", "/v1/admin/keys"),
                             ("POST", "/v1/x/../admin/k"), ("DELETE", "/v1/a")):
            out = evaluate(mesh, Request("a", "stripe", method, path, host="localhost"))
            want = 200 if out.decision.allowed else 403
            assert _request(out_port, path, host="localhost", method=method)[0] == want, (method, path)
        # A host nobody declares (registry_only): refused at the sidecar with the reference's answer.
        blackhole = evaluate(mesh, Request("a", "elsewhere.example", "GET", "/", host="elsewhere.example"))
        assert blackhole.route.kind == "blackhole"
        assert _request(out_port, "/", host="elsewhere.example")[0] == blackhole.status == 403
        # The server's certificate is checked against egress_ca: another CA's is refused.
        assert _request(ports["untrusted"], "/v1/charges", host="localhost", method="POST")[0] == 503
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


# -- keyed rate limits ----------------------------------------------------------

def _limit(key: LimitKey, *sources: Source, n: int = 2) -> RateLimit:
    return RateLimit.make(sources=list(sources), target=Ref.make(name="b"), requests=n, per="m", key=key)


def _ratelimit_cfg(out) -> dict:
    b = load(out["ns/b.yaml"].content)
    return next(f for f in _hcm(_listener(b, "inbound"))["http_filters"]
                if f["name"] == "envoy.filters.http.local_ratelimit")["typed_config"]


def test_keyed_limits_share_one_first_entry_and_a_bucket_for_no_value(tmp_path):
    token = Source.make(kind="internet", jwt=JwtRequirement.make())
    mesh, _ = north_south(tmp_path, limits=[
        _limit(LimitKey.make(kind="header", name="x-api-key"), Source.make(kind="service", name="a"), token),
        _limit(LimitKey.make(kind="source_ip"), Source.make(kind="service", name="a"), _internet())])
    out, diags = _compile(mesh)
    assert not _errors(diags), _errors(diags)
    cfg = _ratelimit_cfg(out)
    header = [r["actions"] for r in cfg["rate_limits"] if any('"limit-0"' in json.dumps(a) for a in r["actions"])]
    # a, and the gateway with a validated token: each with the key's value, and each without one.
    assert len(header) == 4
    assert {json.dumps(a[-1], sort_keys=True) for a in header} == {
        json.dumps({"request_headers": {"header_name": "x-api-key", "descriptor_key": "key"}}, sort_keys=True),
        json.dumps({"header_value_match": {"descriptor_key": "key-absent", "descriptor_value": "x-api-key",
                                           "expect_match": False, "headers": [{"name": "x-api-key",
                                                                               "present_match": True}]}},
                   sort_keys=True)}
    ip = [r["actions"] for r in cfg["rate_limits"] if any('"limit-1"' in json.dumps(a) for a in r["actions"])]
    # a: its own address; through the gateway: the client's, as the gateway set it.
    assert sorted(json.dumps(a[-1]) for a in ip) == sorted([
        json.dumps({"remote_address": {}}),
        json.dumps({"request_headers": {"header_name": "x-meshc-client-ip", "descriptor_key": "key"}})])
    gw = load(out["edge/web.yaml"].content)
    route = _hcm(_listener(gw, "ingress|8080"))["route_config"]["virtual_hosts"][0]["routes"][0]
    assert {"header": {"key": "x-meshc-client-ip", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} in route["request_headers_to_add"]


def test_unkeyed_internet_limit_buckets_per_gateway_and_provider(tmp_path):
    mesh, _ = north_south(tmp_path, limits=[
        _limit(None, _internet(), Source.make(kind="internet", jwt=JwtRequirement.make()))])
    out, diags = _compile(mesh)
    assert not _errors(diags), _errors(diags)
    cfg = _ratelimit_cfg(out)
    sid = "spiffe://example.org/ns/edge/sa/web-gw"
    entries = [d["entries"] for d in cfg["descriptors"]]
    # `internet`: the gateway's own bucket; `internet with jwt`: one more, for requests the provider validated.
    assert [{"key": "limit-0", "value": "internet"}] in entries
    assert [{"key": "limit-0", "value": "internet"}, {"key": "token-auth", "value": ISSUER}] in entries
    assert all(json.dumps(r).count(f";URI={sid}") == 1 for r in cfg["rate_limits"])


def test_claim_tests_in_a_limit_source_are_mp701(tmp_path):
    mesh, _ = north_south(tmp_path, limits=[
        _limit(None, _internet(ClaimTest.make(claim="role", op="eq", value="admin")))])
    _, diags = _compile(mesh)
    assert "MP701" in [d.code for d in diags]


@needs_envoy
def test_one_bucket_per_claim_value_on_real_envoys(tmp_path):
    from meshpolicy.certs import issue

    token = Source.make(kind="internet", jwt=JwtRequirement.make())
    mesh, key = north_south(tmp_path, limits=[_limit(LimitKey.make(kind="claim", name="sub"), token)])
    base = free_port_base(3 * STRIDE, STRIDE)
    issue(mesh, tmp_path / "certs")
    out, diags = _compile(mesh, certs=str(tmp_path / "certs"), port_base=base, ports_per_workload=STRIDE)
    assert not _errors(diags), _errors(diags)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_raw_app.py"), "--port",
                               str(base + STRIDE + 3), "--service", "b"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for path in ("ns/b.yaml", "edge/web.yaml"):
            p = tmp_path / "out" / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(out[path].content)
            procs.append(subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                           "--drain-time-s", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_ready(base + STRIDE + 2, procs)
        _wait_ready(base + 2 * STRIDE + 2, procs)
        port = base + 2 * STRIDE + 4

        def get(**claims) -> int:
            return _request(port, "/api/public/x", headers={"Authorization": f"Bearer {_token(key, **claims)}"})[0]

        assert [get(sub="alice") for _ in range(3)] == [200, 200, 429]
        assert [get(sub="bob") for _ in range(3)] == [200, 200, 429]  # a bucket of its own
        assert [get(sub=None) for _ in range(3)] == [200, 200, 429]  # no `sub`: one shared bucket
        # Without a token the source (`internet with jwt`) does not match: not limited.
        assert [_request(port, "/api/public/x")[0] for _ in range(3)] == [200, 200, 200]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@needs_envoy
def test_gateway_and_callee_run_on_served_config(tmp_path):
    """The control plane serves the gateway's and the callee's resources (the
    same lowering as the static files) to real Envoys: they ACK, and tokens
    and claims are enforced as with the static bootstraps."""
    from meshpolicy.certs import issue
    from meshpolicy.xds.resources import snapshots, xds_bootstrap
    from meshpolicy.xds.server import ControlPlane

    mesh, key = north_south(tmp_path)
    base = free_port_base(3 * STRIDE, STRIDE)
    issue(mesh, tmp_path / "certs")
    out, diags = _compile(mesh, certs=str(tmp_path / "certs"), port_base=base, ports_per_workload=STRIDE)
    assert not _errors(diags), _errors(diags)
    boots = snapshots([out["ns/b.yaml"], out["edge/web.yaml"]])
    cp = ControlPlane()
    cp_port = cp.start()
    cp.publish({n: s for n, (_, s) in boots.items()})
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_raw_app.py"), "--port",
                               str(base + STRIDE + 3), "--service", "b"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for node, (static, _) in boots.items():
            cfg = tmp_path / (node.replace("/", "-") + ".json")
            cfg.write_text(json.dumps(xds_bootstrap(static, cp_port)))
            procs.append(subprocess.Popen(["envoy", "-c", str(cfg), "--use-dynamic-base-id", "-l", "error"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for node, (_, snap) in boots.items():
            assert cp.wait_acked(node, snap, timeout=30), f"{node} never ACKed its config"
        port = base + 2 * STRIDE + 4
        deadline = time.time() + 15
        while _request(port, "/api/public/x")[0] != 200 and time.time() < deadline:
            time.sleep(0.2)  # listeners warm up after the ACK
        bearer = {"Authorization": f"Bearer {_token(key, scope='orders:write')}"}
        assert _request(port, "/api/orders", headers=bearer)[0] == 200
        assert _request(port, "/api/orders")[0] == 403
        assert _request(port, "/api/orders", headers={"Authorization": "Bearer x.y.z"})[0] == 401
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        cp.stop()


def _predicted(mesh: Mesh, method: str, path: str, host: str, token, headers=()) -> int:
    """The reference evaluator's status for a request from outside to ingress `web`."""
    from meshpolicy.semantics.evaluate import Request, evaluate

    out = evaluate(mesh, Request(None, "web", method, path, tuple(headers), host=host, token=token))
    r = out.route
    if r.kind == "preflight":
        return 200
    if r.kind != "forward":
        return r.status
    (inner,) = out.forwarded.values()
    if inner.route.kind not in ("forward", "default", "preflight"):
        return inner.route.status
    return 200 if inner.decision.allowed else 403


@needs_envoy
def test_the_gateway_agrees_with_the_reference_evaluator(running, tmp_path):
    """Requests from outside, each sent to the running gateway and given to
    semantics/evaluate.py: the same status."""
    from meshpolicy.semantics.evaluate import Token

    mesh, _ = north_south(tmp_path)  # the same policy (a fresh key; tokens are modelled, not signed, here)
    key = running["key"]
    tokens = [
        (None, None),
        (_token(key, scope="orders:write"), Token("auth", {"scope": "orders:write"})),
        (_token(key, scope=["orders:write", "x"]), Token("auth", {"scope": ["orders:write", "x"]})),
        (_token(key, scope="orders:read"), Token("auth", {"scope": "orders:read"})),
        (_token(key, scope="orders:write", aud="other"), Token(None, {})),
        (_alg_none(scope="orders:write"), Token(None, {})),
    ]
    requests = [("GET", "/api/orders/1", "shop.test"), ("POST", "/api/orders", "shop.test"),
                ("GET", "/api/public/a", "x.shop.test"), ("GET", "/api/public/a", "other.test"),
                ("GET", "/closed", "shop.test"), ("GET", "/nowhere", "shop.test"),
                ("GET", "/api/%2e%2e/closed", "shop.test"), ("GET", "/q?view=full+item", "shop.test")]
    for raw, model in tokens:
        for method, path, host in requests:
            headers = {"Authorization": f"Bearer {raw}"} if raw else {}
            got = _request(running["port"], path, host=host, headers=headers, method=method)[0]
            want = _predicted(mesh, method, path, host, model)
            assert got == want, (method, path, host, model)


SHOP = """mesh shop { trust_domain "shop.test"; egress registry_only }

jwt auth {
  issuer "https://auth.shop.test/"
  audience "shop-api"
  jwks "keys/auth.jwks.json"
  token header "authorization" prefix "Bearer "
  token cookie "session"
}

ingress web {
  namespace edge
  listen 8080 http
  hosts "shop.test", "*.shop.test"
  jwt auth
  /api/orders/** -> orders rewrite "/orders/" set request header "x-from" "edge"
  GET /** -> frontend
  * -> respond 404 "no such page"
}

external stripe {
  namespace pay
  host "api.stripe.com"
  port 443 tls
  timeout 2s
}

service frontend { namespace shop; port 8080 http }
service orders { namespace shop; port 8080 http; version v1; version v2; cors origins "https://shop.test" }
service payments { namespace shop; port 8080 http }

route orders {
  GET /orders/** query "view" = "full" -> v2
  POST /orders -> v1 retry 2 on 503, 429, connect-failure
  * -> v1
}

allow internet -> frontend GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt scope has "orders:read" -> orders GET
allow frontend -> orders
allow orders -> payments
allow payments -> stripe POST /v1/charges
limit internet with jwt -> orders 10/s burst 5 per claim "sub"
"""


@needs_envoy
def test_a_written_policy_compiles_through_the_cli_and_validates(tmp_path):
    """The language as written (parser, checks, plan) to files Envoy loads:
    `meshc certs` and `meshc compile --target envoy` on a folder with an
    ingress, a provider with a JWKS file next to it, an external and keyed limits."""
    from .conftest import run_meshc

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "auth.jwks.json").write_text(json.dumps(_keypair()[1]))
    (tmp_path / "shop.mesh").write_text(SHOP)
    r = run_meshc("certs", str(tmp_path), "-o", str(tmp_path / "certs"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "certs" / "edge" / "web" / "cert.pem").is_file()  # the gateway's identity
    r = run_meshc("compile", str(tmp_path), "--target", "envoy", "-o", str(tmp_path / "out"),
                  "--certs-dir", str(tmp_path / "certs"))
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.yaml"))
    assert files == ["edge/web.yaml", "shop/frontend.yaml", "shop/orders/v1.yaml", "shop/orders/v2.yaml",
                     "shop/payments.yaml"]
    for f in files:
        v = _envoy_validate(tmp_path / "out" / f)
        assert v.returncode == 0, f"{f}: {v.stdout}{v.stderr}"
    payments = (tmp_path / "out" / "shop" / "payments.yaml").read_text()
    assert "external|stripe|api.stripe.com|443" in payments
    assert "external|stripe" not in (tmp_path / "out" / "shop" / "frontend.yaml").read_text()


@needs_envoy
def test_a_remote_jwks_is_fetched_over_verified_tls(tmp_path):
    """`jwks_uri`: the gateway and the callee fetch the keys through their
    `jwks|<provider>` cluster (TLS, the server checked against egress_ca)
    before their listeners open, and validate with them."""
    from meshpolicy.certs import issue

    base = free_port_base(4 * STRIDE, STRIDE)
    jwks_port = base + 3 * STRIDE
    ca, cert, key_file = _ca_and_server_cert(tmp_path / "pki", "localhost")
    mesh, key = north_south(tmp_path, jwks_uri=f"https://localhost:{jwks_port}/jwks.json")
    (tmp_path / "jwks.json").write_text((tmp_path / "auth.jwks.json").read_text())
    issue(mesh, tmp_path / "certs")
    out, diags = _compile(mesh, certs=str(tmp_path / "certs"), port_base=base, ports_per_workload=STRIDE,
                          egress_ca=str(ca))
    assert not _errors(diags), _errors(diags)
    serve = TLS_STAND_IN.replace("def _answer(self):", "def _answer(self):\n        return self._jwks()")
    serve = serve.replace("    do_GET = do_POST = _answer", "    do_GET = do_POST = _answer\n"
                          "    def _jwks(self):\n"
                          f"        body = open({str(tmp_path / 'jwks.json')!r}, 'rb').read()\n"
                          "        self.send_response(200); self.send_header('content-length', str(len(body)))\n"
                          "        self.end_headers(); self.wfile.write(body)")
    procs = [subprocess.Popen([sys.executable, "-c", serve, str(jwks_port), str(cert), str(key_file)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, str(ROOT / "tests" / "proxy_raw_app.py"), "--port",
                               str(base + STRIDE + 3), "--service", "b"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(0.5)
        for path in ("ns/b.yaml", "edge/web.yaml"):
            p = tmp_path / "out" / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(out[path].content)
            procs.append(subprocess.Popen(["envoy", "-c", str(p), "--use-dynamic-base-id", "-l", "error",
                                           "--drain-time-s", "1"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_ready(base + STRIDE + 2, procs)
        _wait_ready(base + 2 * STRIDE + 2, procs)
        port = base + 2 * STRIDE + 4
        good = _token(key, scope="orders:write")
        deadline = time.time() + 15
        while _request(port, "/api/orders", headers={"Authorization": f"Bearer {good}"})[0] != 200:
            assert time.time() < deadline, "the remote JWKS never validated a good token"
            time.sleep(0.2)
        assert _request(port, "/api/orders", headers={"Authorization": f"Bearer {_tampered(good)}"})[0] == 401
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def test_ingress_rule_timeout_is_the_front_routes_and_retry_is_mp701(tmp_path):
    mesh, _ = north_south(tmp_path)
    g = mesh.ingresses[0]
    timed = g.rules[0].model_copy(update={"timeout_ms": 1500})
    out, diags = _compile(_with(mesh, ingresses=[g.model_copy(update={"rules": [timed] + g.rules[1:]})]))
    assert not _errors(diags)
    route = _hcm(_listener(load(out["edge/web.yaml"].content), "ingress|8080"))["route_config"][
        "virtual_hosts"][0]["routes"][0]
    assert route["route"]["timeout"] == "1.500s"
    retried = g.rules[0].model_copy(update={"retry": Retry.make(attempts=2)})
    _, diags = _compile(_with(mesh, ingresses=[g.model_copy(update={"rules": [retried] + g.rules[1:]})]))
    assert [d.code for d in diags if d.is_error] == ["MP701"]
