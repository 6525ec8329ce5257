"""The request target meshproxy forwards: the normalized path (docs/semantics.md,
"Paths") followed by the query exactly as the caller sent it, byte for byte.

Nothing here decodes the query: a decoded `%0d%0a` written into a request line
would start a second request on a pooled upstream connection (request
smuggling), and decoding `%23`, `%25`, `+` or UTF-8 escapes changes what the
application reads. A target that could not be written as one request line
(CR, LF, NUL, space, other control bytes, raw non-ASCII bytes, a fragment) is
refused with 400, as Envoy does.
"""

from __future__ import annotations

import re

from ..semantics.patterns import normalize_path

# RFC 9112 origin-form: visible ASCII only; `#` starts a fragment, which a
# request never carries (Envoy answers 400 to one).
_TARGET = re.compile(rb"/[!-\"$-~]*")
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def raw_bytes(text: str) -> bytes:
    """The bytes aiohttp decoded (it decodes request lines and headers as
    UTF-8 with surrogateescape, so this is exact)."""
    return text.encode("utf-8", "surrogateescape")


def forward_target(raw_target: str) -> tuple[str, bytes] | None:
    """(the normalized path rules see, the target to send upstream), or None
    when the request must get 400."""
    raw = raw_bytes(raw_target)
    if _TARGET.fullmatch(raw) is None:
        return None
    path, sep, query = raw.partition(b"?")
    normalized = normalize_path(path.decode("ascii"))
    if normalized is None or b"%00" in path:  # Envoy refuses an escaped NUL in the path
        return None
    out = normalized.encode("ascii") + sep + query
    return (normalized, out) if _TARGET.fullmatch(out) else None


def valid_method(method: str) -> bool:
    return _METHOD.fullmatch(raw_bytes(method)) is not None
