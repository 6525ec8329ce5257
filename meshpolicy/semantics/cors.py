"""CORS as a sidecar answers it (docs/semantics.md, "Ingress, tokens and
egress"). Pure, no model: a policy is anything with the Cors fields
(`origins`, `methods`, `headers`, `expose`, `credentials`, `max_age_ms`) or
the same keys in a dict (meshproxy's JSON config).

Values are joined with "," and the allowed origin is echoed, as Envoy's CORS
filter answers from Istio's corsPolicy, so every target answers alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _get(cors: Any, key: str):
    return cors.get(key) if isinstance(cors, Mapping) else getattr(cors, key)


def origin_allowed(cors: Any, origin: str | None) -> bool:
    """An `Origin` is allowed when the policy lists it exactly or lists `*`.
    No policy, or no Origin header: not a CORS request, nothing is added."""
    if cors is None or not origin:
        return False
    origins = _get(cors, "origins") or []
    return "*" in origins or origin in origins


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """`OPTIONS` with `Origin` and `Access-Control-Request-Method` (headers:
    lower-cased names)."""
    return method == "OPTIONS" and bool(headers.get("origin")) and bool(headers.get("access-control-request-method"))


def preflight_headers(cors: Any, origin: str) -> list[tuple[str, str]]:
    """The headers of the sidecar's own 200 answer to a preflight from an
    allowed origin (the request reaches neither authorization nor the app).
    Lists that are empty are left out, as Envoy leaves them out."""
    out = [("access-control-allow-origin", origin)]
    methods = _get(cors, "methods") or []
    if methods:
        out.append(("access-control-allow-methods", ",".join(methods)))
    allowed = _get(cors, "headers") or []
    if allowed:
        out.append(("access-control-allow-headers", ",".join(allowed)))
    max_age = _get(cors, "max_age_ms")
    if max_age is not None:
        out.append(("access-control-max-age", str(max_age // 1000)))
    if _get(cors, "credentials"):
        out.append(("access-control-allow-credentials", "true"))
    return out


def response_headers(cors: Any, origin: str) -> list[tuple[str, str]]:
    """The headers added to the response of an actual (non-preflight)
    request from an allowed origin."""
    out = [("access-control-allow-origin", origin)]
    if _get(cors, "credentials"):
        out.append(("access-control-allow-credentials", "true"))
    expose = _get(cors, "expose") or []
    if expose:
        out.append(("access-control-expose-headers", ",".join(expose)))
    return out
