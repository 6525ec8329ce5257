"""MP201: a split must weigh every destination once and total exactly 100%."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh
from . import rule
from ._walk import route_rules


def _pct(x: float) -> str:
    return f"{x:g}%"


@rule("MP201", per_file=True)
def split_weights(mesh: Mesh):
    for r in route_rules(mesh):  # an ingress rule splits across services the same way
        a = r.action
        if a.kind != "forward" or not a.destinations:
            continue
        dests = a.destinations
        first: dict[str, object] = {}
        for d in dests:
            if d.version.name in first:
                yield diag("MP201", f"`{d.version.name}` appears twice in one split", d.span,
                           labels=[Label(first[d.version.name].span, "first here")],
                           help="list each destination once, with its whole share")
            first.setdefault(d.version.name, d)
        if len(dests) == 1 and dests[0].weight is None:
            continue  # a single destination takes everything
        missing = [d for d in dests if d.weight is None]
        for d in missing:
            yield diag("MP201", f"`{d.version.name}` has no weight in a split across {len(dests)} "
                                "destinations", d.span,
                       help="give every destination of a split a weight, e.g. `-> v1 90%, v2 10%`")
        if missing:
            continue
        total = sum(d.weight for d in dests)
        if abs(total - 100.0) > 1e-9:
            span = dests[0].span.to(dests[-1].span)
            yield diag("MP201", f"the weights of this split total {_pct(round(total, 6))}, not 100%", span,
                       labels=[Label(d.at("weight"), _pct(d.weight)) for d in dests])
