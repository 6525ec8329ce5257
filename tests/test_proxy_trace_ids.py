"""A caller's trace ids are full-matched before meshproxy passes them on:
a malformed one starts a new trace (W3C trace context: an invalid
traceparent is ignored) rather than reaching the app, the next hop or the
collector."""

from __future__ import annotations

import pytest

from meshpolicy.proxy.tracing import _ids, _propagate

TRACING = {"enabled": True, "formats": ["w3c", "b3"], "sample_percent": 100}
GOOD_TRACE, GOOD_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def test_valid_ids_are_kept():
    assert _ids({"traceparent": f"00-{GOOD_TRACE}-{GOOD_SPAN}-01"}) == (GOOD_TRACE, GOOD_SPAN, True)
    assert _ids({"x-b3-traceid": GOOD_SPAN, "x-b3-spanid": GOOD_SPAN, "x-b3-sampled": "0"}) == (
        GOOD_SPAN.rjust(32, "0"), GOOD_SPAN, False)
    assert _ids({"b3": f"{GOOD_TRACE}-{GOOD_SPAN}-1"}) == (GOOD_TRACE, GOOD_SPAN, True)


@pytest.mark.parametrize("headers", [
    {"traceparent": f"00-{'0' * 32}-{GOOD_SPAN}-01"},            # all-zero trace id
    {"traceparent": f"00-{GOOD_TRACE}-{'0' * 16}-01"},           # all-zero parent
    {"traceparent": f"ff-{GOOD_TRACE}-{GOOD_SPAN}-01"},          # version ff is invalid
    {"traceparent": f"00-{GOOD_TRACE.upper()}-{GOOD_SPAN}-01"},  # upper case
    {"traceparent": f"00-{GOOD_TRACE[:-1]}\"-{GOOD_SPAN}-01"},   # a quote in the id
    {"traceparent": f"00-{GOOD_TRACE}-{GOOD_SPAN}-01-extra"},
    {"x-b3-traceid": "x" * 32, "x-b3-spanid": GOOD_SPAN},
    {"x-b3-traceid": GOOD_TRACE, "x-b3-spanid": "<script>"},
    {"x-b3-traceid": GOOD_TRACE + "0", "x-b3-spanid": GOOD_SPAN},  # 33 digits
    {"b3": f"{GOOD_TRACE}\u00a0-{GOOD_SPAN}"},
])
def test_malformed_ids_start_a_new_trace(headers):
    assert _ids(headers) == (None, None, None)
    out, (trace_id, span, parent, _sampled) = _propagate(list(headers.items()), TRACING)
    assert trace_id not in str(headers) and parent is None
    sent = dict(out)
    assert sent["x-b3-traceid"] == trace_id and sent["traceparent"] == f"00-{trace_id}-{span}-01"
