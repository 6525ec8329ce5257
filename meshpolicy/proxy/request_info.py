"""What north-south decisions read from a request, worked out once: its query
parameters (decoded for matching only, never forwarded decoded), its headers
as lists, its cookies and its end-user tokens; the client address an ingress
passes on; the absolute-form target an app's HTTP proxy client sends.
"""

from __future__ import annotations

import re

from aiohttp import web

from ..semantics.query import parse_query
from ..semantics.tokens import parse_cookies
from .jwt_verify import RequestTokens, Verifier


# Bounds before any decoding or token work on a caller's bytes.
MAX_QUERY_BYTES = 16 * 1024

# absolute-form (RFC 9112 3.2.2), as HTTP proxy clients send: scheme http,
# an authority (host name or IPv4, optional port), then origin-form or nothing.
_ABSOLUTE = re.compile(rb"http://([A-Za-z0-9.\-]{1,253}(?::[0-9]{1,5})?)(/[!-\"$-~]*)?", re.IGNORECASE)


def split_absolute(raw_target: bytes) -> tuple[str, bytes] | None:
    """(authority, origin-form target) of an absolute-form target, or None
    when the target is not one (origin-form, or anything malformed)."""
    m = _ABSOLUTE.fullmatch(raw_target)
    if m is None:
        return None
    return m.group(1).decode("ascii"), m.group(2) or b"/"


def header_lists(request: web.BaseRequest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.headers.items():
        out.setdefault(k.lower(), []).append(v)
    return out


def query_params(target: bytes) -> dict[str, list[str]]:
    """The decoded parameters of the target meshproxy forwards (ASCII: the
    target was checked). An oversized query has no parameters to match."""
    if len(target) > MAX_QUERY_BYTES:
        return {}
    return parse_query(target.decode("ascii"))


def request_tokens(verifiers: dict[str, Verifier], request: web.BaseRequest, query: dict[str, list[str]],
                   headers: dict[str, list[str]] | None = None) -> RequestTokens:
    hs = headers if headers is not None else header_lists(request)
    return RequestTokens(verifiers, hs, query, parse_cookies(hs.get("cookie", [])))
