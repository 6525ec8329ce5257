"""MP207: status codes for aborts, direct responses and redirects."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import faults, retries, route_rules

REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@rule("MP207", per_file=True)
def invalid_statuses(mesh: Mesh):
    for f in faults(mesh):
        if f.abort_status is not None and not 200 <= f.abort_status <= 599:
            yield diag("MP207", f"fault abort status {f.abort_status} is not between 200 and 599", f.at("abort"))
    for r in route_rules(mesh):
        a = r.action
        if a.kind == "respond" and not 200 <= a.status <= 599:
            yield diag("MP207", f"response status {a.status} is not between 200 and 599", a.at("status"))
        elif a.kind == "redirect" and a.status not in REDIRECT_STATUSES:
            yield diag("MP207", f"redirect status {a.status} is not a redirect code", a.at("status"),
                       help="use 301, 302, 303, 307 or 308")
    for rt in retries(mesh):  # `retry ... on 503, 429`: an upstream's answer, so 100-599
        for i, status in enumerate(rt.on_status):
            if not 100 <= status <= 599:
                yield diag("MP207", f"retry status {status} is not an HTTP status (100-599)",
                           rt.spans.get(f"on_status.{i}", rt.at("on")))
