"""MP202: every percentage (faults, mirrors, splits, outlier max, retry
budget, tracing sample) lies between 0% and 100%."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import faults, outliers_and_circuits, retries, route_rules


def _all(mesh: Mesh):
    """(value, span, what) for every percentage in the mesh."""
    for f in faults(mesh):
        if f.delay_percent is not None:
            yield f.delay_percent, f.at("delay_percent"), "fault delay percentage"
        if f.abort_percent is not None:
            yield f.abort_percent, f.at("abort_percent"), "fault abort percentage"
    for r in route_rules(mesh):
        if r.action.kind != "forward":
            continue
        for d in r.action.destinations:
            if d.weight is not None:
                yield d.weight, d.at("weight"), "split weight"
        m = r.action.mirror
        if m is not None:
            yield m.percent, m.at("percent"), "mirror percentage"
    for o in outliers_and_circuits(mesh):
        if getattr(o, "max_percent", None) is not None:
            yield o.max_percent, o.at("max_percent"), "outlier `max` ejection percentage"
    for r in retries(mesh):
        if r.budget_percent is not None:
            yield r.budget_percent, r.at("budget"), "retry budget"
    for m in mesh.mesh_blocks:
        if "sample" in m.tracing.spans:
            yield m.tracing.sample_percent, m.tracing.at("sample"), "tracing sample rate"


@rule("MP202", per_file=True)
def percent_range(mesh: Mesh):
    for value, span, what in _all(mesh):
        if not 0.0 <= value <= 100.0:
            yield diag("MP202", f"{what} {value:g}% is more than 100%", span)
