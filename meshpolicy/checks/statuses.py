"""MP207: status codes for aborts, direct responses and redirects."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import faults

REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@rule("MP207", per_file=True)
def invalid_statuses(mesh: Mesh):
    for f in faults(mesh):
        if f.abort_status is not None and not 200 <= f.abort_status <= 599:
            yield diag("MP207", f"fault abort status {f.abort_status} is not between 200 and 599", f.at("abort"))
    for route in mesh.routes:
        for r in route.rules:
            a = r.action
            if a.kind == "respond" and not 200 <= a.status <= 599:
                yield diag("MP207", f"response status {a.status} is not between 200 and 599", a.at("status"))
            elif a.kind == "redirect" and a.status not in REDIRECT_STATUSES:
                yield diag("MP207", f"redirect status {a.status} is not a redirect code", a.at("status"),
                           help="use 301, 302, 303, 307 or 308")
