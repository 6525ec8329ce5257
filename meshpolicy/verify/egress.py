"""Findings about the way out of the mesh (docs/verify.md, "Egress"), each
with a witness request the reference evaluator confirms:

- MP542: under `egress allow_any`, workloads reach hosts no `external`
  declares, with no policy at all: one finding for the mesh, naming the
  workloads (those whose egress rules someone wrote first: their rules stop
  at the declared hosts);
- MP543: an external's host is claimed first by another declaration (a mesh
  service's name, or an earlier external's host): requests
  for that host are decided by the other's rules, so this external's egress
  rules never apply to it.

Egress rules themselves get the rule findings of every destination (MP501
to MP504: dead, redundant, shadowed, matching nothing), on the caller's side.
"""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Diagnostic, Label
from ..model.types import Mesh
from ..semantics.egress import destination_for_host
from ..semantics.evaluate import Request
from .witness import confirmed

UNDECLARED_HOST = "undeclared.example.net"


def findings(mesh: Mesh) -> list[Diagnostic]:
    return _allow_any(mesh) + _shadowed_hosts(mesh)


def _egress_callers(mesh: Mesh) -> list[str]:
    """Workloads with an egress rule naming them first, then the others."""
    from .callgraph import candidate_callers

    ruled: dict[str, None] = {}
    for ext in mesh.external_map.values():
        for c in candidate_callers(mesh, ext.name):
            if c is not None and mesh.service(c) is not None:
                ruled.setdefault(c)
    return list(ruled) + [s for s in mesh.service_map if s not in ruled]


def _undeclared_host(mesh: Mesh) -> str:
    host = UNDECLARED_HOST
    i = 0
    while destination_for_host(mesh, host) != host:  # declared after all: pick another
        i += 1
        host = f"undeclared-{i}.example.net"
    return host


def _allow_any(mesh: Mesh) -> list[Diagnostic]:
    if mesh.settings.egress != "allow_any" or not mesh.services:
        return []
    who = _egress_callers(mesh)
    host = _undeclared_host(mesh)
    req = Request(who[0], host, "POST", "/")
    wit = confirmed(mesh, req, lambda o: o.decision.allowed and o.route.kind == "passthrough",
                    "a request to an undeclared host passes the caller's sidecar")
    wit["workloads"] = who
    names = ", ".join(f"`{n}`" for n in who[:5]) + (f" and {len(who) - 5} more" if len(who) > 5 else "")
    return [diag("MP542", f"with `egress allow_any`, {len(who)} workload{'s' if len(who) != 1 else ''} "
                          f"({names}) can reach any host no `external` declares, with no rule applied: "
                          f"e.g. {req}", _egress_span(mesh), witness=wit)]


def _egress_span(mesh: Mesh):
    return next((b.at("egress") for b in mesh.mesh_blocks if "egress" in b.spans),
                mesh.settings.at("egress"))


def _sample_host(pattern: str) -> str:
    if pattern == "*":
        return "any.example.net"
    return "www" + pattern[1:] if pattern.startswith("*.") else pattern


def _shadowed_hosts(mesh: Mesh) -> list[Diagnostic]:
    from .callgraph import candidate_callers

    out = []
    for ext in mesh.external_map.values():
        if mesh.service(ext.name) is not None:
            continue  # a name clash: the checker's error
        for i, pattern in enumerate(ext.hosts):
            host = _sample_host(pattern)
            taker = destination_for_host(mesh, host)
            if taker == ext.name:
                continue
            caller = next((c for c in candidate_callers(mesh, ext.name) if c is not None and mesh.service(c)),
                          next(iter(mesh.service_map), None))
            if caller is None:
                continue
            req = Request(caller, taker, "GET", "/", host=host)
            wit = confirmed(mesh, req, lambda o: True, "the request is decided for the other destination")
            wit["host"] = host
            other = mesh.service(taker) or mesh.external_map.get(taker)
            labels = [Label(other.at("name") if other is not None and "name" in other.spans else other.span,
                            f"`{taker}` takes host {host} first")] if other is not None else []
            kind = "service" if mesh.service(taker) is not None else "external"
            out.append(diag("MP543", f"host {pattern} of external `{ext.name}` is taken first by {kind} `{taker}`: "
                                     f"a request for {host} is decided by `{taker}`'s rules, so the egress rules "
                                     f"on `{ext.name}` never apply to it; e.g. {caller} -> {host}",
                            ext.spans.get(f"host.{i}", ext.at("name")), labels=labels, witness=wit))
    return out
