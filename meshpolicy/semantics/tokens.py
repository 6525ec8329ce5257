"""End-user tokens (JWT): where a request carries one, and what a claim test
means (docs/semantics.md, "Ingress, tokens and egress").

Pure: no crypto and no model. Validation (signature, issuer, audience, time)
belongs to a maintained library in each proxy; this module only says what a
validated token's claims must hold, so the reference evaluator, the verifier,
the targets and meshproxy read one definition. Every function has a form over
plain values (`*_raw`, for meshproxy's JSON config) and one over the model's
objects (duck-typed: anything with the same attributes)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

# The token location when a provider names none: `Authorization: Bearer <token>`.
DEFAULT_HEADER = "authorization"
DEFAULT_PREFIX = "Bearer "


def _json_text(value: Any) -> str | None:
    """A scalar claim as the string a test compares with: a string itself, a
    number or bool by its JSON text (`true`, `3`, `2.5`); anything else
    (null, object, list) is no string at all."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        try:
            return json.dumps(value, allow_nan=False)
        except ValueError:
            return None  # NaN/inf: no JSON text
    return None


def claim_passes_raw(claim: str, op: str, value: str, claims: Mapping[str, Any] | None) -> bool:
    """Does a validated token's payload pass `claim op value`?

    eq: the claim is a string equal to value, or a number/bool whose JSON text
    equals it (`admin = "true"` holds for `true`). has: the claim is a list
    with an element that is eq to value, or a string whose words (split on
    single spaces, OAuth's `scope`) include value. A missing claim (or no
    claims at all) fails every test. Claim names are top-level keys, as
    written: `https://x/roles` is one key, never a path."""
    if not isinstance(claims, Mapping) or claim not in claims:
        return False
    got = claims[claim]
    if op == "eq":
        return _json_text(got) == value
    if op == "has":
        if isinstance(got, list):
            return any(_json_text(item) == value for item in got)
        if isinstance(got, str):
            return value in [w for w in got.split(" ") if w]
        return False
    raise ValueError(f"unknown claim operator {op!r}")


def claim_passes(test: Any, claims: Mapping[str, Any] | None) -> bool:
    """`claim_passes_raw` for a model ClaimTest (`.claim`, `.op`, `.value`)."""
    return claim_passes_raw(test.claim, test.op, test.value, claims)


def requirement_met_raw(
    provider: str | None,
    tests: Iterable[tuple[str, str, str]],
    validated_by: str | None,
    claims: Mapping[str, Any] | None,
    accepted: Collection[str] | None = None,
) -> bool:
    """Does a request's token meet `with jwt [provider] tests`?

    validated_by: the provider that validated the request's token (None: no
    valid token). accepted: the providers the ingress that sent the request
    accepts (None: don't restrict, e.g. a sidecar that only sees tokens an
    ingress already let through). The token must have been validated by
    `provider` when one is named, else by any accepted provider, and its
    claims must pass every test (`and`)."""
    if validated_by is None:
        return False
    if accepted is not None and validated_by not in accepted:
        return False
    if provider is not None and validated_by != provider:
        return False
    return all(claim_passes_raw(c, op, v, claims) for c, op, v in tests)


def requirement_met(
    req: Any,
    validated_by: str | None,
    claims: Mapping[str, Any] | None,
    accepted: Collection[str] | None = None,
) -> bool:
    """`requirement_met_raw` for a model JwtRequirement (`.provider` a Ref or
    None, `.claims` ClaimTests). `req` None (no `with jwt`) is met by any
    request, with or without a token."""
    if req is None:
        return True
    provider = req.provider.name if req.provider is not None else None
    return requirement_met_raw(provider, ((t.claim, t.op, t.value) for t in req.claims), validated_by, claims, accepted)


class Location(NamedTuple):
    """Where a token is read (the model's TokenLocation as plain values)."""

    kind: str  # header | query | cookie
    name: str  # header names lower-cased
    prefix: str | None = None


DEFAULT_LOCATIONS = (Location("header", DEFAULT_HEADER, DEFAULT_PREFIX),)


def locations_of(provider: Any) -> tuple[Location, ...]:
    """A model JwtProvider's token locations (`token_from`), the default
    `Authorization: Bearer` when it names none."""
    got = tuple(Location(t.kind, t.name, t.prefix) for t in provider.token_from)
    return got or DEFAULT_LOCATIONS


def parse_cookies(header_values: Iterable[str]) -> dict[str, str]:
    """`Cookie` header values as name -> value (first occurrence wins;
    RFC 6265: `name=value` pairs separated by `;`)."""
    out: dict[str, str] = {}
    for raw in header_values:
        for part in raw.split(";"):
            name, eq, value = part.strip().partition("=")
            if eq and name and name not in out:
                out[name] = value.strip()
    return out


def tokens_in(
    locations: Iterable[Location | tuple],
    headers: Mapping[str, list[str] | str],
    query: Mapping[str, list[str] | str],
    cookies: Mapping[str, str],
) -> list[str]:
    """Every token the request carries at these locations, in order, without
    duplicates. headers: lower-cased name -> value(s); query: decoded
    parameter -> value(s) (semantics/query.py); cookies: parse_cookies.

    A header counts only when its value starts with the location's prefix
    (compared without regard to letter case: `bearer x` is a Bearer token,
    RFC 7235 schemes are case-insensitive); the token is the rest, stripped
    of spaces. `Authorization: Basic ...` carries no token. An empty value
    carries none either."""
    found: list[str] = []
    for loc in locations:
        kind, name, prefix = (tuple(loc) + (None,))[:3]
        if kind == "header":
            values = _as_list(headers.get(name))
            for v in values:
                if prefix:
                    if v[: len(prefix)].lower() != prefix.lower():
                        continue
                    v = v[len(prefix):]
                v = v.strip(" \t")
                if v and v not in found:
                    found.append(v)
        elif kind == "query":
            for v in _as_list(query.get(name)):
                if v and v not in found:
                    found.append(v)
        elif kind == "cookie":
            v = cookies.get(name)
            if v and v not in found:
                found.append(v)
        else:
            raise ValueError(f"unknown token location {kind!r}")
    return found


def _as_list(v: list[str] | str | None) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


_ORIGINAL = "\0token"  # stands for the caller's own value while header ops run


def token_after_header_ops(loc: Location | tuple, ops: Iterable[Any]) -> str:
    """What a rule's request header operations do to a token carried at
    location `loc`: "kept" (it travels on unchanged: also every query or
    cookie location), "removed" (the header is gone, or holds no value with
    the location's prefix: no token), or "replaced" (the header now holds a
    value the policy wrote: a token the policy's author put there, which the
    evaluator cannot validate and takes as invalid)."""
    from .header_ops import apply_header_ops

    kind, name, prefix = (tuple(loc) + (None,))[:3]
    if kind != "header":
        return "kept"
    after = [v for k, v in apply_header_ops(ops, "request", [(name, _ORIGINAL)]) if k.lower() == name]
    if _ORIGINAL in after:
        return "kept"
    if tokens_in([(kind, name, prefix)], {name: after}, {}, {}):
        return "replaced"
    return "removed"
