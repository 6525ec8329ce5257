"""The identity headers a sidecar sets from a verified certificate, and every
spelling a caller could forge them under. Both proxies strip these
(meshpolicy/proxy/identity_headers.py, targets/envoy/inbound.py).

CGI, WSGI, PHP and Rack turn `-` into `_` to name a header's variable, so
`x_meshproxy_peer` and `x-meshproxy-peer` reach an app as the same
HTTP_X_MESHPROXY_PEER, and some servers keep the caller's copy over the
sidecar's: every mix of `-` and `_` is an identity header too."""

from __future__ import annotations

from itertools import product

PEER = "x-meshproxy-peer"
XFCC = "x-forwarded-client-cert"
IDENTITY = frozenset({PEER, XFCC})


def is_identity(name: str) -> bool:
    """name (any letter case, `-` or `_`) names an identity header."""
    return name.lower().replace("_", "-") in IDENTITY


def spellings(name: str) -> list[str]:
    """Every lower-case spelling of name with `-` or `_` between its words."""
    words = name.split("-")
    return ["".join(w + s for w, s in zip(words, seps + ("",))) for seps in product("-_", repeat=len(words) - 1)]
