"""Ingress gateways: MP230 (`from` in an ingress rule), MP231 (a destination
that is not a service), MP232 (TLS files of listeners), MP233 (a port
listened on twice; a port out of range is MP206, checks/ports.py), MP234
(an ingress that takes no request).

An ingress rule's destinations name services (each then routed by its own
`route`); a name that is nothing at all is MP101 (checks/names.py)."""

from __future__ import annotations

from pathlib import Path

from ..codes import diag
from ..diagnostics import Label
from ..model.types import Mesh, declared_path
from . import rule

MAX_PEM_BYTES = 1 << 20


@rule("MP230", "MP233", "MP234", per_file=True)
def ingress_shape(mesh: Mesh):
    for g in mesh.ingresses:
        for r in g.rules:
            if r.match.sources:
                yield diag("MP230", f"rule {r.index + 1} of ingress `{g.name}` matches on `from`: requests at an "
                                    "ingress have no caller service", r.match.sources[0].span.to(r.match.sources[-1].span))
        seen = {}
        for ls in g.listeners:
            if ls.port in seen:
                yield diag("MP233", f"ingress `{g.name}` listens on port {ls.port} twice", ls.at("port"),
                           labels=[Label(seen[ls.port].at("port"), "first here")])
            else:
                seen[ls.port] = ls
        # No `hosts` is not missing: the ingress then takes any host
        # (docs/semantics.md, "Ingress, tokens and egress").
        missing = [what for what, has in (("listener", g.listeners), ("rules", g.rules)) if not has]
        if missing:
            yield diag("MP234", f"ingress `{g.name}` has no {' and no '.join(missing)}: it takes no request",
                       g.at("name"))


@rule("MP231")
def ingress_destinations(mesh: Mesh):
    others = {**{n: "jwt provider" for n in mesh.provider_map}, **{n: "ingress" for n in mesh.ingress_map},
              **{n: "external service" for n in mesh.external_map}}
    for g in mesh.ingresses:
        for r in g.rules:
            a = r.action
            if a.kind != "forward":
                continue
            refs = [d.version for d in a.destinations] + ([a.mirror.version] if a.mirror is not None else [])
            for ref in refs:
                if ref.name not in mesh.service_map and ref.name in others:
                    yield diag("MP231", f"ingress `{g.name}` forwards to `{ref.name}`, a {others[ref.name]}, "
                                        "not a service", ref.span)


def _pem_problem(path: Path) -> str | None:
    try:
        if not path.is_file():
            return "is not a file" if path.exists() else "does not exist"
        if path.stat().st_size > MAX_PEM_BYTES:
            return f"is over {MAX_PEM_BYTES} bytes"
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if b"-----BEGIN " not in data:
        return "is not PEM (no `-----BEGIN` line)"
    return None


# Not per file: the certificate files may change while the .mesh file does not.
@rule("MP232")
def listener_files(mesh: Mesh):
    for g in mesh.ingresses:
        for ls in g.listeners:
            if ls.protocol == "http":
                if ls.cert_file is not None or ls.key_file is not None:
                    yield diag("MP232", f"`listen {ls.port} http` of ingress `{g.name}` names TLS files; "
                                        "write `https` to terminate TLS", ls.span)
                continue
            for field, what in (("cert_file", "cert"), ("key_file", "key")):
                written = getattr(ls, field)
                if written is None:
                    yield diag("MP232", f"`listen {ls.port} https` of ingress `{g.name}` has no `{what}` file",
                               ls.span)
                    continue
                path = Path(declared_path(g.file, written))
                problem = _pem_problem(path)
                if problem:
                    yield diag("MP232", f"the {what} file `{path}` of ingress `{g.name}` {problem}", ls.at(what))
