"""MP208: counts must be at least 1 where zero means nothing (or, to Istio,
"unset": `max_connections 0` would silently mean unlimited) and fit the
32-bit fields Envoy stores them in."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Fix
from ..model.types import CircuitBreaker, Mesh
from . import rule
from ._walk import outliers_and_circuits, retries

UINT32_MAX = 4_294_967_295
# Zero would block every request, which Istio reads as "unset" (no limit).
_CIRCUIT_POSITIVE = ("max_connections", "max_pending", "max_requests")


def _all(mesh: Mesh):
    """(value, span, what, minimum) for every count in the mesh."""
    for r in retries(mesh):
        if "attempts" in r.spans:
            yield r.attempts, r.at("attempts"), "retry count", 0  # zero: see below
        if r.budget_min is not None:
            yield r.budget_min, r.at("budget_min"), "retry budget minimum", 0
    for holder in outliers_and_circuits(mesh):
        if isinstance(holder, CircuitBreaker):
            for name in ("max_connections", "max_pending", "max_requests", "max_retries"):
                v = getattr(holder, name)
                if v is not None:
                    yield v, holder.at(name), f"circuit `{name}`", 1 if name in _CIRCUIT_POSITIVE else 0
        else:
            for name in ("consecutive_5xx", "consecutive_gateway"):
                v = getattr(holder, name)
                if v is not None:
                    yield v, holder.at(name), f"outlier `{name}`", 0
    for lim in mesh.rate_limits:
        yield lim.requests, lim.at("rate"), "rate limit", 1
        if lim.burst is not None:
            yield lim.burst, lim.at("burst"), "burst", 1
    for a in mesh.assertions:
        if a.kind == "amplification" and a.bound is not None:
            yield a.bound, a.at("bound"), "amplification bound", 1


@rule("MP208", per_file=True)
def invalid_counts(mesh: Mesh):
    for value, span, what, minimum in _all(mesh):
        if value > UINT32_MAX:
            yield diag("MP208", f"{what} {value} is larger than {UINT32_MAX}", span)
        elif value < minimum:
            yield diag("MP208", f"{what} is {value}; it must be at least {minimum}", span)
    for r in retries(mesh):
        if "attempts" in r.spans and r.attempts == 0:
            # `off` replaces the count and any options after it (`retry off`
            # takes none). Only that: a retry's own span starts at `retry` in
            # a service but at the count in a route rule.
            count = r.at("attempts")
            yield diag("MP208", "`retry 0` retries nothing; write `retry off`", count,
                       help="use `retry off` to turn retries off",
                       fixes=[Fix("Replace with `retry off`", count.to(r.span), "off")])
