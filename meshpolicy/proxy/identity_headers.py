"""Identity headers: the ones meshproxy sets from a verified certificate, and
the sanitizing that keeps a caller from forging them.

An application may read who called it from `x-meshproxy-peer` (the caller's
SPIFFE ID) or `x-forwarded-client-cert` (Envoy's XFCC format, so the same
app works behind either proxy). Only the sidecar that verified the TLS
peer may set them: every copy a caller sent, in any letter case, is removed
on every path (inbound, outbound, mirrors, retries), then the inbound side
adds its own when the peer has a certificate (Envoy's SANITIZE_SET).
Spellings with `_` for `-` go too (semantics/identity_names.py).

`x-meshproxy-client-ip` (the outside client's address, which an ingress
passes to the services it forwards to, for `per source_ip` limits) is
stripped the same way: only an ingress sets it, and a callee reads it only
from an ingress peer. There is no header carrying validated claims: every
sidecar that needs claims validates the token itself.
"""

from __future__ import annotations

import hashlib

from ..semantics.identity_names import PEER, XFCC, is_identity
from .upstream import HOP_BY_HOP

CLIENT_IP = "x-meshproxy-client-ip"


def forwardable(headers) -> list[tuple[str, str]]:
    """The caller's headers minus hop-by-hop ones (and those its Connection
    header names) and every identity header."""
    conn_named = set()
    for k, v in headers:
        if k.lower() == "connection":
            conn_named |= {t.strip().lower() for t in v.split(",")}
    return [(k, v) for k, v in headers
            if (name := k.lower()) not in HOP_BY_HOP and not is_identity(name) and name not in conn_named
            and name.replace("_", "-") != CLIENT_IP]


def identity_headers(own_id: str, peer_id: str | None, peer_der: bytes | None) -> list[tuple[str, str]]:
    """What the inbound side tells the app about a verified caller (nothing for
    a caller without a certificate)."""
    if peer_id is None:
        return []
    xfcc = f"By={own_id}"
    if peer_der:
        xfcc += f";Hash={hashlib.sha256(peer_der).hexdigest()}"
    return [(PEER, peer_id), (XFCC, f"{xfcc};URI={peer_id}")]
