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
