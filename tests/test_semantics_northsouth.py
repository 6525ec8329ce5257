"""North-south meaning (issue 15): tokens and claims, rewrite, hosts, query,
header ops and CORS (docs/semantics.md, "Ingress, tokens and egress")."""

from __future__ import annotations

import pytest

from meshpolicy.model.types import ClaimTest, Cors, JwtProvider, JwtRequirement, Ref, TokenLocation
from meshpolicy.semantics import cors as cors_mod
from meshpolicy.semantics.header_ops import apply_header_ops
from meshpolicy.semantics.hosts import host_matches, host_of
from meshpolicy.semantics.query import parse_query, query_matches_raw
from meshpolicy.semantics.rewrite import fixed_part, rewrite_path
from meshpolicy.semantics.tokens import (
    Location, claim_passes, claim_passes_raw, locations_of, parse_cookies, requirement_met,
    requirement_met_raw, tokens_in,
)


# ---- claims -------------------------------------------------------------------

@pytest.mark.parametrize("claims, op, value, want", [
    ({"role": "admin"}, "eq", "admin", True),
    ({"role": "Admin"}, "eq", "admin", False),
    ({"role": "admin"}, "eq", "adm", False),
    ({"admin": True}, "eq", "true", True),
    ({"admin": True}, "eq", "True", False),
    ({"n": 3}, "eq", "3", True),
    ({"n": 3.5}, "eq", "3.5", True),
    ({"n": None}, "eq", "null", False),  # null is no string
    ({"role": ["admin"]}, "eq", "admin", False),  # eq is for a scalar claim
    ({"scope": "orders:read orders:write"}, "has", "orders:write", True),
    ({"scope": "orders:read orders:write"}, "has", "orders", False),
    ({"scope": "orders:read  orders:write"}, "has", "", False),  # empty words are no words
    ({"scope": "orders:read\torders:write"}, "has", "orders:write", False),  # words are split on spaces only
    ({"roles": ["a", "admin"]}, "has", "admin", True),
    ({"roles": ["a", 1, True]}, "has", "1", True),
    ({"roles": ["a", 1, True]}, "has", "true", True),
    ({"roles": [["admin"]]}, "has", "admin", False),
    ({"roles": {"admin": 1}}, "has", "admin", False),
    ({}, "eq", "x", False),  # a missing claim fails
    ({}, "has", "x", False),
    ({"https://x/roles": ["admin"]}, "has", "admin", True),
])
def test_claim_tests(claims, op, value, want):
    name = next(iter(claims), "role")
    assert claim_passes_raw(name, op, value, claims) is want
    assert claim_passes(ClaimTest.make(claim=name, op=op, value=value), claims) is want


def test_missing_claims_or_no_payload_fail():
    assert not claim_passes_raw("sub", "eq", "alice", None)
    assert not claim_passes_raw("sub", "eq", "alice", {"other": "alice"})
    with pytest.raises(ValueError):
        claim_passes_raw("sub", "like", "alice", {"sub": "alice"})


def _req(provider=None, *tests):
    return JwtRequirement.make(
        provider=Ref.make(name=provider) if provider else None,
        claims=[ClaimTest.make(claim=c, op=o, value=v) for c, o, v in tests],
    )


def test_requirement_needs_a_token_from_the_named_or_an_accepted_provider():
    claims = {"scope": "orders:write", "role": "admin"}
    assert requirement_met(None, None, None, set())  # no `with jwt`: anyone
    assert not requirement_met(_req(), None, None, {"auth"})  # no valid token
    assert requirement_met(_req(), "auth", claims, {"auth"})
    assert not requirement_met(_req(), "auth", claims, {"other"})  # the ingress does not accept it
    assert requirement_met(_req(), "auth", claims, None)  # no restriction known
    assert requirement_met(_req("auth"), "auth", claims, {"auth", "b"})
    assert not requirement_met(_req("b"), "auth", claims, {"auth", "b"})
    both = _req(None, ("scope", "has", "orders:write"), ("role", "eq", "admin"))
    assert requirement_met(both, "auth", claims, {"auth"})
    assert not requirement_met(both, "auth", {"scope": "orders:write"}, {"auth"})  # `and`
    assert requirement_met_raw("auth", [("role", "eq", "admin")], "auth", claims)


# ---- token locations ------------------------------------------------------------

def test_default_location_is_authorization_bearer():
    p = JwtProvider.make(name="auth")
    assert locations_of(p) == (Location("header", "authorization", "Bearer "),)
    q = JwtProvider.make(name="q", token_from=[TokenLocation.make(kind="query", name="access_token")])
    assert locations_of(q) == (Location("query", "access_token", None),)


def test_tokens_in_reads_each_location():
    locs = [Location("header", "authorization", "Bearer "), Location("query", "access_token"),
            Location("cookie", "session"), Location("header", "x-token")]
    headers = {"authorization": "bearer  abc ", "x-token": ["t2"]}
    query = parse_query("/p?access_token=t3&x=1")
    cookies = parse_cookies(["a=1; session=t4", "session=other"])
    assert tokens_in(locs, headers, query, cookies) == ["abc", "t3", "t4", "t2"]
    assert tokens_in(locs, {"authorization": "Basic abc"}, {}, {}) == []
    assert tokens_in(locs, {"authorization": "Bearer "}, {}, {}) == []
    assert tokens_in(locs, {"authorization": "Bearer x", "x-token": "x"}, {}, {}) == ["x"]


# ---- rewrite --------------------------------------------------------------------

@pytest.mark.parametrize("kind, value, path, repl, want", [
    ("prefix", "/api/", "/api/orders/7", "/", "/orders/7"),
    ("prefix", "/api", "/api/orders", "/", "//orders"),  # a string replacement: write the slashes you mean
    ("glob", "/api/orders/**", "/api/orders/7", "/orders/", "/orders/7"),
    ("glob", "/api/*/items", "/api/a/items", "/v2/", "/v2/a/items"),
    ("glob", "/**", "/x/y", "/app/", "/app/x/y"),
    ("exact", "/old", "/old", "/new", "/new"),
    ("exact", "/old", "/older", "/new", "/older"),  # not matched: unchanged
    ("prefix", "/api/", "/other", "/", "/other"),
])
def test_rewrite_replaces_the_matched_part(kind, value, path, repl, want):
    assert rewrite_path(kind, value, path, repl) == want


def test_rewrite_refuses_a_regex():
    assert fixed_part("regex", "/a.*") is None
    with pytest.raises(ValueError):
        rewrite_path("regex", "/a.*", "/ab", "/")


# ---- hosts ----------------------------------------------------------------------

@pytest.mark.parametrize("pattern, host, want", [
    ("shop.example.com", "shop.example.com", True),
    ("shop.example.com", "Shop.Example.COM:8443", True),
    ("shop.example.com", "shop.example.com.", True),
    ("shop.example.com", "api.shop.example.com", False),
    ("*.shop.example.com", "api.shop.example.com", True),
    ("*.shop.example.com", "a.b.shop.example.com:80", True),
    ("*.shop.example.com", "shop.example.com", False),
    ("*.shop.example.com", "evilshop.example.com", False),
    ("*", "anything.example", True),
])
def test_host_matches(pattern, host, want):
    assert host_matches(pattern, host) is want


def test_host_of():
    assert host_of("[::1]:8080") == "[::1]"
    assert host_of("a.example:80") == "a.example"
    assert host_of("a.example") == "a.example"


# ---- query ----------------------------------------------------------------------

def test_parse_query_decodes_and_keeps_repeats():
    assert parse_query("/p?a=1&b&a=2&&c=x%20y+z") == {"a": ["1", "2"], "b": [""], "c": ["x y z"]}
    assert parse_query("/p") == {}


@pytest.mark.parametrize("kind, value, target, want", [
    ("exact", "full", "/o?view=full", True),
    ("exact", "full", "/o?view=fullx", False),
    ("exact", "full", "/o?view=short&view=full", False),  # the first value decides
    ("prefix", "fu", "/o?view=full", True),
    ("regex", "f.*l", "/o?view=full", True),
    ("regex", "f", "/o?view=full", False),  # whole value
    ("present", None, "/o?view", True),
    ("present", None, "/o?other=1", False),
    ("exact", "a b", "/o?view=a%20b", True),
])
def test_query_matches(kind, value, target, want):
    assert query_matches_raw("view", kind, value, parse_query(target)) is want


# ---- header ops -----------------------------------------------------------------

def test_header_ops_in_written_order_and_per_side():
    ops = [("request", "set", "x-from", "api"), ("request", "add", "x-tag", "b"),
           ("request", "remove", "x-drop", None), ("response", "remove", "server", None),
           ("request", "set", "x-tag", "c")]
    got = apply_header_ops(ops, "request", [("X-From", "caller"), ("x-tag", "a"), ("x-drop", "1"), ("server", "s")])
    assert got == [("server", "s"), ("x-from", "api"), ("x-tag", "c")]
    assert apply_header_ops(ops, "response", [("Server", "envoy"), ("a", "1")]) == [("a", "1")]


# ---- CORS -----------------------------------------------------------------------

def test_cors_origins_and_headers():
    c = Cors.make(origins=["https://shop.example.com"], methods=["GET", "POST"], headers=["content-type"],
                  expose=["x-total"], credentials=True, max_age_ms=3_600_000)
    assert cors_mod.origin_allowed(c, "https://shop.example.com")
    assert not cors_mod.origin_allowed(c, "https://evil.example")
    assert not cors_mod.origin_allowed(c, None)
    assert not cors_mod.origin_allowed(None, "https://shop.example.com")
    assert cors_mod.origin_allowed({"origins": ["*"]}, "https://any.example")
    assert cors_mod.is_preflight("OPTIONS", {"origin": "o", "access-control-request-method": "POST"})
    assert not cors_mod.is_preflight("OPTIONS", {"origin": "o"})
    assert not cors_mod.is_preflight("GET", {"origin": "o", "access-control-request-method": "POST"})
    assert dict(cors_mod.preflight_headers(c, "https://shop.example.com")) == {
        "access-control-allow-origin": "https://shop.example.com",
        "access-control-allow-methods": "GET,POST",
        "access-control-allow-headers": "content-type",
        "access-control-max-age": "3600",
        "access-control-allow-credentials": "true",
    }
    assert dict(cors_mod.response_headers(c, "https://shop.example.com")) == {
        "access-control-allow-origin": "https://shop.example.com",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-total",
    }
    bare = {"origins": ["*"], "methods": [], "headers": [], "expose": [], "credentials": False, "max_age_ms": None}
    assert cors_mod.preflight_headers(bare, "https://a") == [("access-control-allow-origin", "https://a")]
    assert cors_mod.response_headers(bare, "https://a") == [("access-control-allow-origin", "https://a")]


# ---- the reference evaluator, end to end ------------------------------------------

from meshpolicy.semantics import Request, evaluate  # noqa: E402
from meshpolicy.semantics.egress import destination_for_host  # noqa: E402
from meshpolicy.semantics.evaluate import INVALID_TOKEN, Token, authorize  # noqa: E402
from meshpolicy.semantics.ingress import accepted_providers, validating_providers  # noqa: E402

from .conftest import check_text  # noqa: E402

SHOP = """
mesh shop { EGRESS }
jwt auth {
  issuer "https://auth.shop.example/"
  audience "shop-api"
  jwks_uri "https://auth.shop.example/jwks"
}
jwt partner {
  issuer "https://partner.example/"
  jwks_uri "https://partner.example/jwks"
}
service orders { namespace shop; port 8080 http; version v1 { app: "orders" }; version v2 { app: "orders2" } }
service frontend { namespace shop; port 8080 http }
service payments { namespace pay; port 8080 http; version v1 { app: "payments" } }
service billing { namespace edge; port 8080 http }
ingress web {
  namespace edge
  listen 8080 http
  hosts "shop.example.com", "*.shop.example.com"
  jwt auth
  /api/orders/** -> orders rewrite "/orders/" set request header "x-from" "web"
  GET /old/** -> redirect "/new"
  GET /split -> frontend 80%, billing 20%
  GET /** -> frontend
  * -> respond 404 "no such page"
}
ingress partners {
  namespace edge
  account partner-gw
  listen 9090 http
  jwt partner
  /** -> orders
}
external stripe {
  namespace pay
  host "api.stripe.com"
  port 443 tls
}
allow payments -> stripe POST /v1/charges
deny namespace shop -> stripe
allow internet -> frontend GET
allow namespace edge -> billing GET
allow internet with jwt scope has "orders:write" -> orders POST /orders
allow internet with jwt auth role = "admin" and scope has "admin" -> orders /admin/**
allow internet with jwt partner -> orders GET /orders/**
allow frontend -> orders GET
route orders {
  GET /orders/** query "view" = "full" -> v2
  GET /orders/legacy/** -> v1 rewrite "/orders/"
  * -> v1 cors origins "https://shop.example.com" methods GET, POST headers "content-type" credentials
}
"""

ORIGIN = "https://shop.example.com"


def _shop(egress="egress registry_only"):
    checked = check_text(SHOP.replace("EGRESS", egress))
    assert checked.ok, [(d.code, d.message) for d in checked.diagnostics if d.is_error]
    return checked.mesh


@pytest.fixture(scope="module")
def shop():
    return _shop()


def _at(ingress, method, target, host="shop.example.com", token=None, headers=()):
    return Request(None, ingress, method, target, tuple(headers), host=host, token=token)


WRITER = Token("auth", {"scope": "orders:read orders:write", "sub": "alice"})
ADMIN = Token("auth", {"scope": ["admin"], "role": "admin"})


def test_ingress_hosts_paths_and_tokens_are_checked_first(shop):
    got = evaluate(shop, _at("web", "GET", "/", host="evil.example"))
    assert (got.route.kind, got.route.status, got.decision.allowed) == ("unknown_host", 404, False)
    assert evaluate(shop, _at("web", "GET", "/", host="shop.example.com.")).route.kind == "forward"
    assert evaluate(shop, _at("web", "GET", "/", host="a.b.shop.example.com:443")).route.kind == "forward"
    assert evaluate(shop, _at("web", "GET", "/", host="shop.example.com.evil")).route.status == 404
    assert evaluate(shop, _at("web", "GET", "/a%2Fb", token=INVALID_TOKEN)).route.status == 400
    # a bad token is refused before the host is looked at (jwt_authn runs before routing in Envoy and Istio)
    assert evaluate(shop, _at("web", "GET", "/", host="evil.example", token=INVALID_TOKEN)).route.status == 401
    # an invalid token is refused whatever the route, even where no token is needed
    for target in ("/", "/api/orders/1", "/nowhere"):
        bad = evaluate(shop, _at("web", "GET", target, token=INVALID_TOKEN))
        assert (bad.route.kind, bad.route.status, bad.decision.allowed) == ("bad_token", 401, False)
    # a token of a provider this ingress does not accept is invalid here
    assert evaluate(shop, _at("web", "GET", "/", token=Token("partner", {}))).route.status == 401
    # no token passes authentication: authorization decides
    assert evaluate(shop, _at("web", "GET", "/")).forwarded["frontend"].decision.allowed


def test_ingress_rules_in_order(shop):
    redirect = evaluate(shop, _at("web", "GET", "/old/x"))
    assert (redirect.route.kind, redirect.route.status, redirect.forwarded) == ("redirect", 301, {})
    assert evaluate(shop, _at("web", "DELETE", "/x")).route.kind == "respond"
    assert evaluate(shop, _at("web", "DELETE", "/x")).route.status == 404
    split = evaluate(shop, _at("web", "GET", "/split"))
    assert split.route.weights == {"frontend": 80.0, "billing": 20.0}
    # each service gets the request from the ingress; billing admits it by the ingress's namespace
    assert set(split.forwarded) == {"frontend", "billing"}
    assert all(o.request.source == "web" for o in split.forwarded.values())
    assert split.forwarded["billing"].decision.allowed
    assert split.forwarded["billing"].decision.rule.sources[0].kind == "namespace"
    assert evaluate(shop, _at("partners", "POST", "/x", host=None)).route.weights == {"orders": 100.0}
    nothing = check_text(SHOP.replace('  * -> respond 404 "no such page"\n', "")).mesh
    assert evaluate(nothing, _at("web", "DELETE", "/x")).route.kind == "no_route"
    assert evaluate(nothing, _at("web", "DELETE", "/x")).route.status == 404


def test_forward_rewrites_and_the_service_authorizes_what_it_receives(shop):
    got = evaluate(shop, _at("web", "POST", "/api/orders/", token=WRITER))
    at_orders = got.forwarded["orders"]
    sent = at_orders.request
    assert (sent.source, sent.destination, sent.path, sent.token) == ("web", "orders", "/orders/", WRITER)
    assert ("x-from", "web") in sent.headers
    assert not at_orders.decision.allowed  # POST /orders/ is not POST /orders
    # the exact path the rule allows cannot be reached through this ingress rule (`/api/orders/**`
    # needs a `/` after `orders`), but the query survives the rewrite and decides the route there:
    full = evaluate(shop, _at("web", "GET", "/api/orders/7?view=full", token=WRITER)).forwarded["orders"]
    assert full.request.path == "/orders/7" and full.route.weights == {"v2": 100.0}
    assert not full.decision.allowed  # GET /orders/7 needs an admin or partner token
    admin = evaluate(shop, _at("web", "DELETE", "/api/orders/../admin/x", token=ADMIN))
    assert admin.route.kind == "respond"  # normalized to /api/admin/x first: no ingress rule forwards it


def test_internet_sources_and_claims(shop):
    def at_orders(method, path, token, via="web"):
        return authorize(shop, Request(via, "orders", method, path, token=token))

    assert at_orders("POST", "/orders", WRITER).allowed
    assert not at_orders("POST", "/orders", None).allowed  # the rule asks for a token
    assert not at_orders("POST", "/orders", Token("auth", {"scope": "orders:read"})).allowed
    assert not at_orders("POST", "/orders", Token("auth", {})).allowed  # a missing claim fails
    assert at_orders("GET", "/admin/x", ADMIN).allowed
    assert not at_orders("GET", "/admin/x", Token("auth", {"role": "admin"})).allowed  # `and`
    # `with jwt auth` names the provider: a partner token with the same claims does not do
    assert not at_orders("GET", "/admin/x", Token("partner", {"scope": "admin", "role": "admin"}), "partners").allowed
    assert at_orders("GET", "/orders/1", Token("partner", {}), "partners").allowed
    # without a named provider, the token must come from one the sending ingress accepts
    assert at_orders("POST", "/orders", Token("partner", {"scope": "orders:write"}), "partners").allowed
    assert not at_orders("POST", "/orders", Token("auth", {"scope": "orders:write"}), "partners").allowed
    # a service never matches `internet`, whatever token it carries
    assert not authorize(shop, Request("frontend", "orders", "POST", "/orders", token=WRITER)).allowed
    assert not authorize(shop, Request("billing", "frontend", "GET", "/")).allowed
    assert authorize(shop, Request("web", "frontend", "GET", "/")).allowed


def test_a_destination_checking_tokens_refuses_an_invalid_one_from_anyone(shop):
    assert validating_providers(shop, "orders") == {"auth", "partner"}
    assert validating_providers(shop, "payments") == frozenset()
    d = authorize(shop, Request("frontend", "orders", "GET", "/x", token=INVALID_TOKEN))
    assert not d.allowed and "401" in d.refused
    assert authorize(shop, Request("frontend", "orders", "GET", "/x")).allowed


@pytest.mark.parametrize("source, kind, want", [
    ("*", "any", True), ("authenticated", "authenticated", True),
    ("namespace edge", "namespace", True), ("namespace shop", "namespace", False), ("billing", "service", False),
])
def test_other_sources_and_the_ingress_identity(source, kind, want):
    mesh = check_text(SHOP.replace("EGRESS", "") + f"\nallow {source} -> payments\n").mesh
    assert authorize(mesh, Request("web", "payments", "GET", "/")).allowed is want


def test_the_ingress_identity_is_seen_only_over_mtls():
    mesh = check_text(SHOP.replace("EGRESS", "").replace(
        "service frontend { namespace shop;", "service frontend { namespace shop; mtls off;")).mesh
    assert not authorize(mesh, Request("web", "frontend", "GET", "/")).allowed


def test_egress(shop):
    assert evaluate(shop, Request("payments", "stripe", "POST", "/v1/charges")).decision.allowed
    out = evaluate(shop, Request("payments", "stripe", "GET", "/v1/charges"))
    assert (out.decision.allowed, out.decision.rule, out.route.kind) == (False, None, "external")
    denied = evaluate(shop, Request("orders", "stripe", "POST", "/v1/charges")).decision
    assert not denied.allowed and denied.rule.effect == "deny"
    assert not evaluate(shop, Request("web", "stripe", "POST", "/v1/charges")).decision.allowed
    blocked = evaluate(shop, Request("payments", "example.org", "GET", "/"))
    assert (blocked.route.kind, blocked.route.status, blocked.decision.allowed) == ("blackhole", 403, False)
    open_mesh = _shop("egress allow_any")
    passed = evaluate(open_mesh, Request("payments", "example.org", "GET", "/"))
    assert (passed.route.kind, passed.decision.allowed, passed.decision.rule) == ("passthrough", True, None)
    # hosts name destinations
    assert destination_for_host(shop, "api.stripe.com:443") == "stripe"
    assert destination_for_host(shop, "orders.shop.svc.cluster.local") == "orders"
    assert destination_for_host(shop, "Example.org") == "example.org"


def test_default_allow_lets_egress_out():
    mesh = check_text(SHOP.replace("EGRESS", "default allow")).mesh
    assert evaluate(mesh, Request("billing", "stripe", "GET", "/")).decision.allowed
    assert not evaluate(mesh, Request("orders", "stripe", "GET", "/")).decision.allowed  # the deny still denies


def test_query_matches_and_rewrite_east_west(shop):
    assert evaluate(shop, Request("frontend", "orders", "GET", "/orders/1?view=full")).route.weights == {"v2": 100.0}
    assert evaluate(shop, Request("frontend", "orders", "GET", "/orders/1", query="view=full")).route.weights == \
        {"v2": 100.0}
    assert evaluate(shop, Request("frontend", "orders", "GET", "/orders/1?view=short")).route.weights == {"v1": 100.0}
    legacy = evaluate(shop, Request("frontend", "orders", "GET", "/orders/legacy/7"))
    assert legacy.delivered.path == "/orders/7" and legacy.decision.allowed
    assert evaluate(shop, Request("frontend", "orders", "GET", "/orders/1")).delivered is None


def test_cors(shop):
    pre = evaluate(shop, Request("frontend", "orders", "OPTIONS", "/orders", (
        ("origin", ORIGIN), ("access-control-request-method", "POST"))))
    assert (pre.route.kind, pre.route.status) == ("preflight", 200)
    assert dict(pre.route.cors_headers)["access-control-allow-methods"] == "GET,POST"
    # another origin's preflight is an ordinary OPTIONS request: routed, then authorized (and denied)
    other = evaluate(shop, Request("frontend", "orders", "OPTIONS", "/orders", (
        ("origin", "https://evil.example"), ("access-control-request-method", "POST"))))
    assert other.route.kind == "forward" and not other.route.cors_headers and not other.decision.allowed
    actual = evaluate(shop, Request("frontend", "orders", "GET", "/x", (("origin", ORIGIN),)))
    assert dict(actual.route.cors_headers) == {"access-control-allow-origin": ORIGIN,
                                               "access-control-allow-credentials": "true"}
    # a rule of its own without cors: the service has none either
    assert not evaluate(shop, Request("frontend", "orders", "GET", "/orders/1?view=full",
                                      (("origin", ORIGIN),))).route.cors_headers
    # through the ingress, the service's route answers the preflight (the ingress rule has no policy)
    via = evaluate(shop, _at("web", "OPTIONS", "/api/orders/1", headers=(
        ("origin", ORIGIN), ("access-control-request-method", "GET"))))
    assert via.forwarded["orders"].route.kind == "preflight"


def test_service_cors_and_the_rules_own():
    text = SHOP.replace("EGRESS", "").replace(
        "service payments { namespace pay;", 'service payments { namespace pay; cors origins "*";')
    text += 'route payments {\n  /own -> respond 204\n  /x -> v1 cors origins "https://a.example"\n  * -> v1\n}\n'
    checked = check_text(text)
    assert checked.ok, [d.code for d in checked.diagnostics if d.is_error]
    mesh = checked.mesh
    hdr = (("origin", ORIGIN),)
    assert evaluate(mesh, Request("orders", "payments", "GET", "/y", hdr)).route.cors_headers  # the service's `*`
    assert not evaluate(mesh, Request("orders", "payments", "GET", "/x", hdr)).route.cors_headers  # replaced
    own = (("origin", "https://a.example"),)
    assert evaluate(mesh, Request("orders", "payments", "GET", "/x", own)).route.cors_headers
    assert not evaluate(mesh, Request("orders", "payments", "GET", "/own", hdr)).route.cors_headers  # not forwarded


def test_accepted_providers(shop):
    assert accepted_providers(shop, shop.ingress_map["web"]) == ("auth",)
    every = check_text(SHOP.replace("EGRESS", "").replace("  jwt auth\n  /api", "  /api")).mesh
    assert accepted_providers(every, every.ingress_map["web"]) == ("auth", "partner")


def test_request_text_and_token_equality():
    assert Token("auth", {"a": [1, 2]}) == Token("auth", {"a": [1, 2]})
    assert Token("auth", {"a": 1}) != Token("auth", {"a": "1"})
    assert hash(Token("auth", {"b": 1, "a": 2})) == hash(Token("auth", {"a": 2, "b": 1}))
    r = Request("web", "orders", "GET", "/x", query="a=1", host="h", token=Token("auth", {"sub": "al"}))
    assert str(r) == "web -> orders GET /x?a=1 host=h jwt[auth sub=al]"
    assert str(Request(None, "orders", "GET", "/x")) == "(no identity) -> orders GET /x"


def test_limit_buckets():
    from meshpolicy.semantics.limit_keys import SHARED_BUCKET, bucket_key

    assert bucket_key("claim", "sub", {"sub": "alice"}, {}, None) == "alice"
    assert bucket_key("claim", "n", {"n": 3}, {}, None) == "3"
    assert bucket_key("claim", "r", {"r": ["b", "a"]}, {}, None) == '["b","a"]'
    assert bucket_key("claim", "sub", {}, {}, None) is SHARED_BUCKET
    assert bucket_key("claim", "sub", None, {}, None) is SHARED_BUCKET
    assert bucket_key("header", "x-api-key", None, {"x-api-key": "k1"}, None) == "k1"
    assert bucket_key("header", "x-api-key", None, {"x-api-key": ""}, None) == ""
    assert bucket_key("header", "x-api-key", None, {}, None) is SHARED_BUCKET
    assert bucket_key("source_ip", None, None, {"x-forwarded-for": "1.2.3.4"}, "10.0.0.9") == "10.0.0.9"
    with pytest.raises(ValueError):
        bucket_key("cookie", "x", None, {}, None)


TOKEN_OPS = """
jwt auth { issuer "https://a.example/"; jwks_uri "https://a.example/jwks" }
jwt q { issuer "https://q.example/"; jwks_uri "https://q.example/jwks"; token query "access_token" }
service orders { namespace shop; port 8080 http }
ingress web {
  namespace edge
  listen 8080 http
  /strip/** -> orders remove request header "authorization"
  /fixed/** -> orders set request header "authorization" "Bearer static-token"
  /other/** -> orders set request header "x-user" "u" add request header "authorization" "Bearer second"
  /** -> orders
}
allow internet with jwt sub = "alice" -> orders
allow internet -> orders GET /open/**
"""


@pytest.mark.parametrize("path, want_token", [
    ("/x", "same"), ("/strip/x", None), ("/fixed/x", "invalid"), ("/other/x", "same"),
])
def test_header_ops_on_the_token_header_take_the_token_with_them(path, want_token):
    from meshpolicy.semantics.tokens import token_after_header_ops

    mesh = check_text(TOKEN_OPS).mesh
    alice = Token("auth", {"sub": "alice"})
    out = evaluate(mesh, Request(None, "web", "GET", path, token=alice)).forwarded["orders"]
    got = out.request.token
    assert got == {"same": alice, "invalid": INVALID_TOKEN, None: None}[want_token]
    assert out.decision.allowed is (want_token == "same")
    if want_token == "invalid":
        assert "401" in out.decision.refused  # orders validates tokens: the policy's literal one is not valid
    # a token in the query is not touched by header operations
    q_tok = Token("q", {"sub": "alice"})
    assert evaluate(mesh, Request(None, "web", "GET", path, token=q_tok)).forwarded["orders"].request.token == q_tok
    assert token_after_header_ops(("header", "authorization", "Bearer "), []) == "kept"


def test_outcome_status_says_who_answers(shop):
    def status(req):
        return evaluate(shop, req).status

    assert status(_at("web", "GET", "/", token=INVALID_TOKEN)) == 401
    assert status(_at("web", "GET", "/", host="evil.example")) == 404
    assert status(_at("web", "GET", "/a%2fb")) == 400
    assert status(_at("web", "GET", "/old/x")) == 301
    assert status(_at("web", "DELETE", "/x")) == 404  # the ingress's own `respond 404`
    assert status(_at("web", "GET", "/index.html")) is None  # frontend's app answers
    assert status(_at("web", "POST", "/api/orders/1")) == 403  # orders' sidecar denies
    assert status(_at("web", "GET", "/split")) is None  # a split: each service's outcome says
    assert status(Request("frontend", "orders", "GET", "/x", token=INVALID_TOKEN)) == 401
    assert status(Request("frontend", "orders", "OPTIONS", "/x", (
        ("origin", ORIGIN), ("access-control-request-method", "GET")))) == 200
    assert status(Request("payments", "example.org")) == 403
    assert status(Request("payments", "stripe", "GET", "/")) == 403
    assert status(Request("payments", "stripe", "POST", "/v1/charges")) is None
    # strict mTLS refuses a caller without identity: no answer at all
    assert status(Request(None, "orders", "GET", "/x")) is None
    assert evaluate(shop, Request(None, "orders", "GET", "/x")).decision.refused


def test_response_headers_the_caller_gets():
    from meshpolicy.semantics.evaluate import caller_response_headers

    mesh = check_text("""
service api { namespace ns; port 80 http; version v1 { app: "api" } }
ingress gw {
  namespace edge
  listen 8080 http
  /** -> api remove response header "server" add response header "x-via" "gw"
}
route api {
  /r -> respond 204
  /** -> v1 set response header "x-via" "api" cors origins "https://a.example"
}
allow internet -> api
""").mesh
    out = evaluate(mesh, Request(None, "gw", "GET", "/x", (("origin", "https://a.example"),)))
    got = caller_response_headers(out, [("Server", "app"), ("content-type", "text/plain")])
    # the service rule's ops first (set x-via api), then the ingress rule's (remove server, add x-via gw)
    assert got == [("content-type", "text/plain"), ("x-via", "api"), ("x-via", "gw"),
                   ("access-control-allow-origin", "https://a.example")]
    # east-west: the service rule's ops only; a `respond` answer gets none
    assert caller_response_headers(evaluate(mesh, Request("api", "api", "GET", "/x")), [("a", "1")]) == [
        ("a", "1"), ("x-via", "api")]
    assert caller_response_headers(evaluate(mesh, Request("api", "api", "GET", "/r")), [("a", "1")]) == [("a", "1")]
