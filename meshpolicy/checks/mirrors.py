"""MP306: mirroring to a version that already gets the live traffic doubles
its load and its side effects, and the copy's answers are thrown away."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh
from . import rule


@rule("MP306", per_file=True)
def mirror_to_destination(mesh: Mesh):
    for route in mesh.routes:
        for r in route.rules:
            a = r.action
            if a.kind != "forward" or a.mirror is None:
                continue
            name = a.mirror.version.name
            live = next((d for d in a.destinations if d.version.name == name and d.weight != 0), None)
            if live is not None:
                yield diag("MP306", f"this rule mirrors to `{name}`, which already receives its live traffic",
                           a.mirror.version.span, labels=[Label(live.span, "live traffic goes here")])
