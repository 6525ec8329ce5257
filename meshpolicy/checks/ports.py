"""MP206 port numbers (services, externals, ingress listeners) and duplicates, MP212 services without a port."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh
from . import rule


@rule("MP206", per_file=True)
def invalid_ports(mesh: Mesh):
    for svc in mesh.services:
        first = {}
        for p in svc.ports:
            span = p.at("number")
            if not 1 <= p.number <= 65535:
                yield diag("MP206", f"port {p.number} is outside 1 to 65535", span)
            elif p.number in first:
                yield diag("MP206", f"port {p.number} is declared twice in service `{svc.name}`", span,
                           labels=[Label(first[p.number].at("number"), "first declared here")],
                           help="declare each port once, with the protocol it speaks")
            else:
                first[p.number] = p
    for e in mesh.externals:
        first = {}
        for p in e.ports:
            span = p.at("number")
            if not 1 <= p.number <= 65535:
                yield diag("MP206", f"port {p.number} is outside 1 to 65535", span)
            elif p.number in first:
                yield diag("MP206", f"port {p.number} is declared twice in external `{e.name}`", span,
                           labels=[Label(first[p.number].at("number"), "first declared here")])
            else:
                first[p.number] = p
    for g in mesh.ingresses:  # a listener's port twice is MP233
        for ls in g.listeners:
            if not 1 <= ls.port <= 65535:
                yield diag("MP206", f"port {ls.port} is outside 1 to 65535", ls.at("port"))


@rule("MP212", per_file=True)
def services_without_ports(mesh: Mesh):
    for svc in mesh.services:
        if not svc.ports:
            yield diag("MP212", f"service `{svc.name}` declares no port", svc.at("name"))
