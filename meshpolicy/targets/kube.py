"""What the Kubernetes-resource targets (gateway-api, linkerd) share besides
routes: the deployment convention, name checks, settings and the file layout.

Convention (as the Istio target's): each service's pods run in its namespace
with the label `app: <service>`, plus their version's labels, under the
service's account; the Service named after it exists (the app's own).
"""

from __future__ import annotations

import re

from ..codes import diag
from ..compile import Output
from ..compile.templates import render
from ..diagnostics import Diagnostic
from ..model.types import Mesh
from .base import cannot_express
from .http_routes import version_service
from .yaml_lines import document_lines

APP_LABEL = "app"
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def read_settings(target: str, settings: dict, known: dict[str, tuple]) -> tuple[dict, list[Diagnostic]]:
    """[compile.<target>] checked against known (key -> allowed values)."""
    out, diags = {}, []
    for k, v in (settings or {}).items():
        if k not in known:
            diags.append(diag("MP740", f"[compile.{target}] in meshc.toml: unknown key `{k}`"))
        elif v not in known[k]:
            diags.append(diag("MP740", f"[compile.{target}] in meshc.toml: `{k}` must be one of "
                                       + ", ".join(f'"{x}"' for x in known[k]) + f", not {v!r}"))
        else:
            out[k] = v
    return out, diags


def check_names(target: str, mesh: Mesh) -> list[Diagnostic]:
    """Service, namespace and version names become Kubernetes names; the
    per-version Services `<service>-<version>` must not collide with a service."""
    out = []
    services = list(mesh.service_map.values())
    taken = {(s.namespace, s.name): s for s in services}
    for svc in services:
        for what, value, span in (("service name", svc.name, svc.at("name")),
                                  ("namespace", svc.namespace, svc.at("namespace"))):
            if not DNS1123_LABEL.fullmatch(value) or len(value) > 63:
                out.append(cannot_express(target, f"the {what} `{value}`", span,
                                          "Kubernetes names are DNS-1123 labels: lower-case letters, digits and `-`"))
        for v in svc.versions:
            name = version_service(svc.name, v.name)
            if not DNS1123_LABEL.fullmatch(name) or len(name) > 63:
                out.append(cannot_express(target, f"the version name `{v.name}` of `{svc.name}`", v.at("name"),
                                          f"its Service `{name}` must be a DNS-1123 label of at most 63 characters"))
            other = taken.get((svc.namespace, name))
            if other is not None:
                out.append(diag("MP741", f"the Service `{name}` for version `{v.name}` of `{svc.name}` would "
                                         f"replace the service `{other.name}`", v.at("name")))
    return out


def _order(doc: dict) -> tuple:
    return (doc["kind"], doc["metadata"]["name"])


def files(target: str, mesh_name: str, documents: list[dict]) -> list[Output]:
    """One file per namespace (cluster-scoped documents go to `cluster.yaml`)
    plus a kustomization, through the pack's templates."""
    by_ns: dict[str, list[dict]] = {}
    for d in documents:
        by_ns.setdefault(d["metadata"].get("namespace") or "cluster", []).append(d)
    outputs = []
    for ns in sorted(by_ns):
        docs = sorted(by_ns[ns], key=_order)
        text = render(target, "namespace.yaml.j2", mesh=mesh_name, namespace=ns,
                      documents=[document_lines(d) for d in docs])
        outputs.append(Output(f"{ns}.yaml", text))
    outputs.append(Output("kustomization.yaml", render(target, "kustomization.yaml.j2", mesh=mesh_name,
                                                        files=[o.path for o in outputs])))
    return outputs
