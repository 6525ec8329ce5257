"""Whether a hop may carry many requests on one connection (HTTP/2) without
changing what the destination's `circuit` means (docs/semantics.md,
"Circuit limits and multiplexing").

The language's `circuit` has the one-request-per-connection meaning (what
meshproxy enforces and what Envoy does over HTTP/1.1): `max_connections N`
lets N requests be in flight at once, `max_pending P` lets P more wait for
a connection, and the rest are refused. Over HTTP/2, Envoy counts the same
thresholds differently: one connection carries every request (so
`max_connections` no longer bounds requests in flight) and requests wait
only while that connection is being opened (so `max_pending` no longer
bounds a queue). `max_requests` (requests outstanding) and `max_retries`
(retries outstanding) count requests on any protocol, as does a retry
budget. So a hop may multiplex exactly when neither connection-counted
limit is set; the Envoy target reads this for the hop between sidecars.
"""

from __future__ import annotations

from ..model.types import CircuitBreaker

# The limits whose meaning rests on one request per connection.
CONNECTION_COUNTED = ("max_connections", "max_pending")


def multiplexing_keeps(circuit: CircuitBreaker | None) -> bool:
    """True when requests to a destination (version) with this circuit may
    share one HTTP/2 connection and every limit still means what it says."""
    return circuit is None or all(getattr(circuit, f) is None for f in CONNECTION_COUNTED)
