"""Which token bucket a keyed rate limit (`per claim|header|source_ip`)
charges a request to (docs/semantics.md, "Ingress, tokens and egress").
Pure, no model: meshproxy reads its JSON config with it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

SHARED_BUCKET = None  # the one bucket of the requests without a key value


def bucket_key(kind: str, name: str | None, claims: Mapping[str, Any] | None,
               headers: Mapping[str, str], client_ip: str | None) -> str | None:
    """The bucket's key, or SHARED_BUCKET (None) when the request has no value.

    claim: the validated token's claim (a string as it is; anything else by
    its JSON text, keys sorted); no valid token or no such claim: SHARED_BUCKET.
    header: the header's value (headers: lower-cased names; the first value
    when repeated); absent: SHARED_BUCKET (an empty value is a value). source_ip:
    the client address: at an ingress the TCP peer of the ingress (never a
    forwarded-for header, which a caller writes), east-west the caller's."""
    if kind == "claim":
        if not isinstance(claims, Mapping) or name not in claims:
            return SHARED_BUCKET
        v = claims[name]
        return v if isinstance(v, str) else json.dumps(v, sort_keys=True, separators=(",", ":"))
    if kind == "header":
        v = headers.get(name or "")
        return v if v is not None else SHARED_BUCKET
    if kind == "source_ip":
        return client_ip or SHARED_BUCKET
    raise ValueError(f"unknown limit key {kind!r}")
