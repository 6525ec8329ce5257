"""meshproxy's JWT validation (meshpolicy/proxy/jwt_verify.py) with real
keys and real tokens: valid ones pass; expired, not yet valid, wrong issuer,
wrong audience, tampered, alg=none, HS256 with the RSA public key as the
secret, an unknown kid and an oversized token are refused."""

from __future__ import annotations

import json

import pytest

from meshpolicy.proxy.jwt_verify import (MAX_TOKEN_BYTES, MAX_TOKENS_PER_REQUEST, RequestTokens, Verifier,
                                         allowed_algorithms)

from .jwt_tokens import AUDIENCE, ISSUER, Keys, good_claims, hs256_with_public_key, tampered, unsigned


@pytest.fixture(scope="module")
def keys():
    return Keys()


def provider(keys, audiences=(AUDIENCE,), rsa_alg="RS256", tokens=None, jwks=None):
    return Verifier.from_config({
        "name": "auth", "issuer": ISSUER, "audiences": list(audiences),
        "jwks": json.dumps(jwks if jwks is not None else keys.jwks(rsa_alg)),
        "tokens": tokens or [{"kind": "header", "name": "authorization", "prefix": "Bearer "}],
    })


def test_valid_tokens_of_each_key_type(keys):
    v = provider(keys)
    for alg, kid in (("RS256", "rsa-1"), ("ES256", "ec-1"), ("EdDSA", "ed-1")):
        claims = v.verify(keys.token({"scope": "a b"}, alg=alg, kid=kid))
        assert claims is not None and claims["sub"] == "alice", alg
    # without a kid every key is tried
    assert v.verify(keys.token(alg="ES256", kid=None)) is not None


@pytest.mark.parametrize("case", [
    "expired", "not-yet-valid", "wrong-issuer", "no-issuer", "wrong-audience", "no-audience", "tampered",
    "alg-none", "hs256-confusion", "unknown-kid", "kid-of-other-key", "alg-not-the-keys", "oversized", "garbage",
])
def test_bad_tokens_are_refused(keys, case):
    v = provider(keys)
    token = {
        "expired": lambda: keys.token(exp_in=-120),  # past the 60 s leeway
        "not-yet-valid": lambda: keys.token(nbf_in=600),
        "wrong-issuer": lambda: keys.token(iss="https://evil.example/"),
        "no-issuer": lambda: keys.token(iss=None),
        "wrong-audience": lambda: keys.token(aud="other-api"),
        "no-audience": lambda: keys.token(aud=None),
        "tampered": lambda: tampered(keys.token()),
        "alg-none": lambda: unsigned(good_claims()),
        "hs256-confusion": lambda: hs256_with_public_key(keys, good_claims()),
        "unknown-kid": lambda: keys.token(kid="rsa-2"),
        "kid-of-other-key": lambda: keys.token(alg="RS256", kid="ec-1"),
        # the RSA key's JWKS entry says RS256: an RS512 token with it is refused
        "alg-not-the-keys": lambda: keys.token(alg="RS512"),
        "oversized": lambda: keys.token({"pad": "x" * MAX_TOKEN_BYTES}),
        "garbage": lambda: "not.a.token",
    }[case]()
    assert v.verify(token) is None


def test_leeway_is_sixty_seconds(keys):
    v = provider(keys)
    assert v.verify(keys.token(exp_in=-30)) is not None  # 30 s late: within the skew
    assert v.verify(keys.token(nbf_in=30)) is not None
    assert v.verify(keys.token(exp_in=-90)) is None


def test_audience_any_of_list_and_none_written(keys):
    assert provider(keys, audiences=("x", AUDIENCE)).verify(keys.token(aud=["y", AUDIENCE])) is not None
    # no audiences written: aud is not checked, with or without one in the token
    assert provider(keys, audiences=()).verify(keys.token(aud="anything")) is not None
    assert provider(keys, audiences=()).verify(keys.token(aud=None)) is not None


def test_algorithms_come_from_the_jwks_only(keys):
    assert allowed_algorithms({"kty": "RSA"}) >= {"RS256", "PS512"}
    assert allowed_algorithms({"kty": "EC", "crv": "P-384"}) == {"ES384"}
    assert allowed_algorithms({"kty": "OKP", "crv": "Ed25519"}) == {"EdDSA"}
    assert allowed_algorithms({"kty": "RSA", "alg": "RS256", "use": "sig", "key_ops": ["verify"]}) == {"RS256"}
    for bad in ({"kty": "oct", "k": "c2VjcmV0"}, {"kty": "RSA", "alg": "HS256"}, {"kty": "RSA", "alg": "none"},
                {"kty": "EC", "crv": "P-999"}, {"kty": "RSA", "use": "enc"}, {"kty": "RSA", "key_ops": ["encrypt"]},
                {"kty": "RSA", "alg": "RS256", "key_ops": "verify"}):
        assert allowed_algorithms(bad) == frozenset(), bad
    # an RSA key without `alg` allows PS256 and RS512 too
    v = provider(keys, rsa_alg=None)
    assert v.verify(keys.token(alg="PS256")) is not None and v.verify(keys.token(alg="RS512")) is not None
    # a JWKS with a symmetric key: that key is ignored, an HS256 token made with its secret fails
    import jwt as pyjwt
    oct_only = provider(keys, jwks={"keys": [{"kty": "oct", "k": "c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M", "kid": "h"}]})
    assert oct_only.keys == []
    assert oct_only.verify(pyjwt.encode(good_claims(), "s" * 32, algorithm="HS256", headers={"kid": "h"})) is None


def test_token_locations_and_unvalidated_tokens(keys):
    v = provider(keys, tokens=[{"kind": "header", "name": "authorization", "prefix": "Bearer "},
                               {"kind": "query", "name": "access_token", "prefix": None},
                               {"kind": "cookie", "name": "session", "prefix": None}])
    good, bad = keys.token(), keys.token(iss="https://evil.example/")
    for headers, query, cookies in (({"authorization": [f"Bearer {good}"]}, {}, {}),
                                    ({}, {"access_token": [good]}, {}),
                                    ({}, {}, {"session": good})):
        t = RequestTokens({"auth": v}, headers, query, cookies)
        assert t.validated(["auth"])[0] == "auth" and not t.unvalidated_token(["auth"])
    t = RequestTokens({"auth": v}, {"authorization": [f"Bearer {bad}"]}, {}, {})
    assert t.validated(["auth"]) is None and t.unvalidated_token(["auth"])
    # Basic credentials are no token; no token at all is not an invalid one
    t = RequestTokens({"auth": v}, {"authorization": ["Basic YTpi"]}, {}, {})
    assert t.validated(["auth"]) is None and not t.unvalidated_token(["auth"])
    # one valid and one invalid token: the invalid one still makes it 401 at the ingress
    t = RequestTokens({"auth": v}, {"authorization": [f"Bearer {good}"]}, {"access_token": [bad]}, {})
    assert t.validated(["auth"]) is not None and t.unvalidated_token(["auth"])


def test_many_tokens_in_one_request_are_refused_without_checking_them(keys):
    """Each token costs a signature check per provider: past
    MAX_TOKENS_PER_REQUEST the request is refused like an invalid token."""
    v = provider(keys, tokens=[{"kind": "header", "name": "authorization", "prefix": "Bearer "}])
    calls = []
    real = v.verify
    v.verify = lambda t: calls.append(t) or real(t)
    many = [f"Bearer {keys.token({'n': i})}" for i in range(MAX_TOKENS_PER_REQUEST + 1)]
    t = RequestTokens({"auth": v}, {"authorization": many}, {}, {})
    assert t.unvalidated_token(["auth"]) and calls == []
    few = RequestTokens({"auth": v}, {"authorization": many[:MAX_TOKENS_PER_REQUEST]}, {}, {})
    assert not few.unvalidated_token(["auth"]) and len(calls) == MAX_TOKENS_PER_REQUEST


def test_cached_token_is_checked_against_the_clock_again(keys):
    """A validated token is kept (same bytes only); its exp is checked again
    on every later use, so it stops passing once it expires."""
    import time

    v = provider(keys)
    v.leeway = 0
    token = keys.token(exp_in=1)
    assert v.verify(token) is not None and token in v._valid
    assert v.verify(tampered(token)) is None  # other bytes: verified afresh, and refused
    time.sleep(1.6)
    assert v.verify(token) is None and token not in v._valid
    # invalid tokens are never kept
    v.verify(keys.token(iss="https://evil.example/"))
    assert len(v._valid) == 0
