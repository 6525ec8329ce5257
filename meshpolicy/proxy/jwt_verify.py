"""JWT validation for meshproxy, with PyJWT (no crypto of our own).

One `Verifier` per provider of the workload's config (`jwt` section),
built once: the JWKS is parsed when the config is loaded, never per request.
A token is valid for a provider when

- it is at most MAX_TOKEN_BYTES long, and its header parses;
- its `alg` is one the chosen key allows: the key's own `alg` when the JWKS
  gives one, else by key type (RSA: RS256/384/512, PS256/384/512; EC: the
  ES algorithm of its curve; OKP: EdDSA). `none` and every HMAC algorithm
  are never allowed: a JWKS holds public keys, and HS256 "signed" with an
  RSA public key as the secret (algorithm confusion) is refused before any
  signature check; symmetric (`oct`) keys are ignored;
- a `kid` in the header selects keys with that `kid` (an unknown `kid`
  fails); without one, every key whose algorithms allow `alg` is tried;
- the signature verifies, `iss` equals the issuer, `aud` names one of the
  audiences (when the provider lists any), `exp` and `nbf` (when present)
  hold within LEEWAY_SECONDS of the clock, as Envoy's jwt_authn default.

`claims_for` then reads a request's tokens at the provider's locations
(meshpolicy.semantics.tokens.tokens_in, the one definition of where a token
is) and returns the first valid token's claims.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidTokenError, PyJWKError

from ..semantics.tokens import Location, tokens_in
from ..wire.jwks import ASYMMETRIC, allowed_algorithms

log = logging.getLogger("meshproxy")

# A token is a header value: Envoy and most servers cap headers near 8-60 KB;
# a token over 8 KB is refused before any parsing (JSON and base64 of a
# caller's bytes cost time and memory in proportion).
MAX_TOKEN_BYTES = 8192
# Distinct tokens one request may carry (all locations together): each costs
# a signature check per provider, so a request with hundreds of tokens would
# buy that much CPU; more than this is answered like an invalid token (401).
MAX_TOKENS_PER_REQUEST = 4
# Clock skew allowed on exp and nbf: Envoy jwt_authn's default (clock_skew_seconds).
LEEWAY_SECONDS = 60
# Tokens already validated, per provider (least recently used dropped): the
# same token is usually sent many times, and PyJWT's parse and RSA check cost
# ~0.25 ms. Keyed by the whole token (signature included), so a hit is the
# same bytes that verified; exp and nbf are checked again on every hit.
# Envoy's jwt_authn keeps such a cache too (jwt_cache_config). Only valid
# tokens are kept: a caller cannot fill it with tokens it made up.
CACHE_SIZE = 1024

@dataclass(frozen=True)
class Key:
    kid: str | None
    algorithms: frozenset[str]
    key: Any  # the cryptography public key object


def load_keys(jwks_text: str) -> list[Key]:
    """The usable public keys of a JWKS (JSON text). Keys PyJWT cannot read,
    or that allow no algorithm, are left out (logged)."""
    doc = json.loads(jwks_text)
    out: list[Key] = []
    for jwk in doc.get("keys", []) if isinstance(doc, dict) else []:
        if not isinstance(jwk, dict):
            continue
        algs = allowed_algorithms(jwk)
        if not algs:
            log.warning("JWKS key %r: no asymmetric algorithm allowed; ignored", jwk.get("kid"))
            continue
        try:
            # the algorithm only tells PyJWK how to read the key; which
            # algorithms verify with it is `algs`
            parsed = jwt.PyJWK(jwk, algorithm=jwk.get("alg") or sorted(algs)[0])
        except (PyJWKError, ValueError, TypeError) as exc:
            log.warning("JWKS key %r unreadable: %s", jwk.get("kid"), exc)
            continue
        out.append(Key(jwk.get("kid") if isinstance(jwk.get("kid"), str) else None, algs, parsed.key))
    return out


@dataclass
class Verifier:
    """One provider of the config: name, issuer, audiences, keys, locations."""

    name: str
    issuer: str
    audiences: list[str]
    keys: list[Key]
    locations: tuple[Location, ...]
    leeway: float = LEEWAY_SECONDS
    _valid: OrderedDict = field(default_factory=OrderedDict, repr=False)  # token -> claims

    @classmethod
    def from_config(cls, p: dict) -> "Verifier":
        """A `jwks_uri` provider starts with no keys (jwks_fetch.py fills them)."""
        keys = load_keys(p["jwks"]) if p.get("jwks") is not None else []
        return cls(p["name"], p["issuer"], list(p["audiences"]), keys,
                   tuple(Location(t["kind"], t["name"], t["prefix"]) for t in p["tokens"]))

    def set_keys(self, keys: list[Key]) -> None:
        """New keys (a remote JWKS refreshed): tokens validated with the old
        ones are validated again."""
        if keys != self.keys:
            self.keys = keys
            self._valid.clear()

    def verify(self, token: str) -> dict | None:
        """The token's claims if it is valid for this provider, else None."""
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            return None
        cached = self._valid.get(token)
        if cached is not None:
            if self._times_hold(cached):
                self._valid.move_to_end(token)
                return cached
            del self._valid[token]
            return None
        claims = self._verify(token)
        if claims is not None:
            self._valid[token] = claims
            if len(self._valid) > CACHE_SIZE:
                self._valid.popitem(last=False)
        return claims

    def _times_hold(self, claims: dict) -> bool:
        """exp and nbf against the clock, as PyJWT checks them (a token that
        verified has numeric ones, or none)."""
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        return (exp is None or now <= exp + self.leeway) and (nbf is None or now >= nbf - self.leeway)

    def _verify(self, token: str) -> dict | None:
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            return None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC:  # none, HS*, unknown: refused
            return None
        kid = header.get("kid")
        keys = [k for k in self.keys if alg in k.algorithms and (kid is None or k.kid == kid)]
        options = {"verify_aud": bool(self.audiences), "require": ["iss"]}
        for k in keys:
            try:
                claims = jwt.decode(token, k.key, algorithms=[alg], issuer=self.issuer,
                                    audience=self.audiences or None, leeway=self.leeway, options=options)
            except InvalidTokenError:
                continue
            return claims if isinstance(claims, dict) else None
        return None

    def tokens(self, headers: dict[str, list[str]], query: dict[str, list[str]], cookies: dict[str, str]) -> list[str]:
        return tokens_in(self.locations, headers, query, cookies)


class RequestTokens:
    """The tokens of one request, validated at most once per provider."""

    def __init__(self, verifiers: dict[str, Verifier], headers: dict[str, list[str]],
                 query: dict[str, list[str]], cookies: dict[str, str]):
        self.verifiers = verifiers
        self.headers, self.query, self.cookies = headers, query, cookies
        self._claims: dict[str, dict | None] = {}
        self._checked: dict[tuple[str, str], dict | None] = {}

    def _verify(self, provider: str, token: str) -> dict | None:
        key = (provider, token)
        if key not in self._checked:
            self._checked[key] = self.verifiers[provider].verify(token)
        return self._checked[key]

    def claims_for(self, provider: str) -> dict | None:
        """The claims of the first of the request's tokens (at this provider's
        locations) that this provider validates; None when there is none."""
        if provider not in self._claims:
            v = self.verifiers.get(provider)
            got = None
            if v is not None:
                for t in v.tokens(self.headers, self.query, self.cookies)[:MAX_TOKENS_PER_REQUEST]:
                    got = self._verify(provider, t)
                    if got is not None:
                        break
            self._claims[provider] = got
        return self._claims[provider]

    def validated(self, providers: list[str]) -> tuple[str, dict] | None:
        """(provider, claims) of the first provider in `providers` that
        validates one of the request's tokens."""
        for p in providers:
            c = self.claims_for(p)
            if c is not None:
                return p, c
        return None

    def unvalidated_token(self, providers: list[str]) -> bool:
        """Does the request carry a token (at any of these providers'
        locations) that none of them validates? The ingress answers 401."""
        known = [p for p in providers if p in self.verifiers]
        seen: list[str] = []
        for p in known:
            seen += [t for t in self.verifiers[p].tokens(self.headers, self.query, self.cookies) if t not in seen]
        if len(seen) > MAX_TOKENS_PER_REQUEST:
            return True
        return any(all(self._verify(p, t) is None for p in known) for t in seen)
