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
from .http_grammar import METHOD

# RFC 9112 origin-form: visible ASCII only; `#` starts a fragment, which a
# request never carries (Envoy answers 400 to one).
_TARGET = re.compile(rb"/[!-\"$-~]*")
_METHOD = METHOD


def raw_bytes(text: str) -> bytes:
    """The bytes aiohttp decoded (it decodes request lines and headers as
    UTF-8 with surrogateescape, so this is exact)."""
    return text.encode("utf-8", "surrogateescape")


# Targets repeat (a service calls the same few paths), and normalizing one
# costs more than the rest of a request's checks: results are kept for
# targets up to _MEMO_LEN characters, and the memo is emptied when full, so
# a caller sending ever new targets only costs its own misses.
_MEMO: dict[str, tuple[str, bytes] | None] = {}
_MEMO_SIZE = 4096
_MEMO_LEN = 256
_MISS = object()


def forward_target(raw_target: str) -> tuple[str, bytes] | None:
    """(the normalized path rules see, the target to send upstream), or None
    when the request must get 400."""
    hit = _MEMO.get(raw_target, _MISS)
    if hit is not _MISS:
        return hit
    out = _forward_target(raw_target)
    if len(raw_target) <= _MEMO_LEN:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.clear()
        _MEMO[raw_target] = out
    return out


def _forward_target(raw_target: str) -> tuple[str, bytes] | None:
    raw = raw_bytes(raw_target)
    if _TARGET.fullmatch(raw) is None:
        return None
    path, sep, query = raw.partition(b"?")
    normalized = normalize_path(path.decode("ascii"))
    if normalized is None or b"%00" in path:  # Envoy refuses an escaped NUL in the path
        return None
    out = normalized.encode("ascii") + sep + query
    return (normalized, out) if _TARGET.fullmatch(out) else None


_METHODS_SEEN: set[str] = set()


def valid_method(method: str) -> bool:
    if method in _METHODS_SEEN:
        return True
    ok = _METHOD.fullmatch(raw_bytes(method)) is not None
    if ok and len(_METHODS_SEEN) < 64:  # the usual few; a caller's inventions are checked each time
        _METHODS_SEEN.add(method)
    return ok
