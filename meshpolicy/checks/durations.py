"""MP203: durations must be positive, and a backoff cap at least its base.

A zero timeout or per-try timeout means "none" to Envoy and Istio, the
opposite of what `0s` seems to say, so meshc refuses it.
"""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh, Outlier
from . import rule
from ._walk import cors_policies, faults, outliers_and_circuits, retries, route_rules


def _all(mesh: Mesh):
    """(milliseconds, span, what) for every duration in the mesh."""
    for svc in mesh.services:
        if svc.timeout_ms is not None:
            yield svc.timeout_ms, svc.at("timeout"), "timeout"
    for r in route_rules(mesh):
        if r.timeout_ms is not None:
            yield r.timeout_ms, r.at("timeout"), "timeout"
    for e in mesh.externals:
        if e.timeout_ms is not None:
            yield e.timeout_ms, e.at("timeout"), "timeout"
    for c in cors_policies(mesh):
        if c.max_age_ms is not None:
            yield c.max_age_ms, c.at("max_age"), "CORS max_age"
    for r in retries(mesh):
        if r.per_try_ms is not None:
            yield r.per_try_ms, r.at("per_try"), "per-try timeout"
        if r.backoff_ms is not None:
            yield r.backoff_ms, r.at("backoff"), "retry backoff"
        if r.backoff_max_ms is not None:
            yield r.backoff_max_ms, r.at("backoff_max"), "retry backoff cap"
    for o in outliers_and_circuits(mesh):
        if isinstance(o, Outlier):
            if o.interval_ms is not None:
                yield o.interval_ms, o.at("interval_ms"), "outlier interval"
            if o.eject_ms is not None:
                yield o.eject_ms, o.at("eject_ms"), "outlier ejection time"
    for f in faults(mesh):
        if f.delay_ms is not None:
            yield f.delay_ms, f.at("delay"), "fault delay"
    for a in mesh.assertions:
        if a.kind == "latency" and a.bound is not None:
            yield a.bound, a.at("bound"), "latency bound"


@rule("MP203", per_file=True)
def non_positive_durations(mesh: Mesh):
    for ms, span, what in _all(mesh):
        if ms <= 0:
            yield diag("MP203", f"the {what} is zero", span)
    for r in retries(mesh):
        if r.backoff_ms and r.backoff_max_ms is not None and 0 < r.backoff_max_ms < r.backoff_ms:
            yield diag("MP203", f"the backoff cap ({r.backoff_max_ms}ms) is below the base interval "
                                f"({r.backoff_ms}ms)", r.at("backoff_max"),
                       labels=[Label(r.at("backoff"), "base interval")])
