"""External services and egress rules: MP241 (HTTP conditions towards a
tcp-only external), MP242 (an external without host or port), MP243
(`internet` as an egress source). Egress rules are enforced at the calling
workload's sidecar, on the way out (docs/semantics.md)."""

from __future__ import annotations

from ..codes import diag
from ..model.types import Mesh
from . import rule


@rule("MP241", "MP242", "MP243")
def egress_rules(mesh: Mesh):
    if not mesh.externals:
        return
    for e in mesh.externals:
        missing = [w for w, has in (("`host`", e.hosts), ("`port`", e.ports)) if not has]
        if missing:
            yield diag("MP242", f"external `{e.name}` declares no {' and no '.join(missing)}", e.at("name"))
    externals = mesh.external_map
    for ar in mesh.auth_rules:
        e = externals.get(ar.target.name)
        if e is None or ar.target.name in mesh.service_map:
            continue
        if (ar.methods or ar.paths) and e.ports and all(p.protocol == "tcp" for p in e.ports):
            yield diag("MP241", f"this rule names methods or paths, but external `{e.name}` has only tcp ports: "
                                "its callers' sidecars see bytes, not requests", ar.span)
        for s in ar.sources:
            if s.kind == "internet":
                yield diag("MP243", f"`internet` cannot be the caller of external `{e.name}`", s.span)
    for lim in mesh.rate_limits:
        e = externals.get(lim.target.name)
        if e is None or lim.target.name in mesh.service_map:
            continue
        if e.ports and all(p.protocol == "tcp" for p in e.ports):
            yield diag("MP241", f"a limit counts requests, but external `{e.name}` has only tcp ports", lim.span)
        for s in lim.sources:
            if s.kind == "internet":
                yield diag("MP243", f"`internet` cannot be the caller of external `{e.name}`", s.span)
