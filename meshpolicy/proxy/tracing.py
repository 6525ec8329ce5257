"""Trace propagation: W3C traceparent and B3, one trace id across every hop.

A request that arrives without trace headers starts a trace (sampled at the
mesh's rate); each hop gets a new span id whose parent is the caller's.
"""

from __future__ import annotations

import random
import secrets


def _ids(headers: dict[str, str]) -> tuple[str | None, str | None, bool | None]:
    tp = headers.get("traceparent")
    if tp:
        parts = tp.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            return parts[1], parts[2], parts[3] == "01"
    if headers.get("x-b3-traceid"):
        sampled = headers.get("x-b3-sampled")
        return headers["x-b3-traceid"].rjust(32, "0"), headers.get("x-b3-spanid"), \
            None if sampled is None else sampled == "1"
    if headers.get("b3"):
        parts = headers["b3"].split("-")
        if len(parts) >= 2:
            return parts[0].rjust(32, "0"), parts[1], (parts[2] == "1") if len(parts) > 2 else None
    return None, None, None


_TRACE_HEADERS = {"traceparent", "tracestate", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
                  "b3"}


def propagate(headers: list[tuple[str, str]], tracing: dict) -> list[tuple[str, str]]:
    """Headers for the next hop: the same trace id, a new span id."""
    if not tracing["enabled"]:
        return headers
    hs = {k.lower(): v for k, v in headers}
    trace_id, parent, sampled = _ids(hs)
    if trace_id is None:
        trace_id = secrets.token_hex(16)
        sampled = random.random() * 100 < tracing["sample_percent"]
    if sampled is None:
        sampled = random.random() * 100 < tracing["sample_percent"]
    span = secrets.token_hex(8)
    out = [(k, v) for k, v in headers if k.lower() not in _TRACE_HEADERS or k.lower() == "tracestate"]
    if "w3c" in tracing["formats"]:
        out.append(("traceparent", f"00-{trace_id}-{span}-{'01' if sampled else '00'}"))
    if "b3" in tracing["formats"]:
        out += [("x-b3-traceid", trace_id), ("x-b3-spanid", span), ("x-b3-sampled", "1" if sampled else "0")]
        if parent:
            out.append(("x-b3-parentspanid", parent))
    return out
