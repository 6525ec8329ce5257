"""The Istio target: the checked model as Istio 1.30 custom resources.

Lowering builds plain dicts shaped like each resource (routing.py,
traffic.py, security.py, scoping.py, telemetry.py, ratelimit.py); layout.py
renders them through the templates in targets/istio/; output_check.py
parses the rendered text back and validates it before anything is written.
"""

from __future__ import annotations

from ...compile import CompileOptions, Output
from ...diagnostics import Diagnostic
from ...model.types import Mesh
from . import layout
from .context import Lowering
from .egress import externals
from .ingress import ingresses
from .names import DNS1123_LABEL
from .ratelimit import envoy_filters
from .routing import virtual_service
from .scoping import sidecars
from .security import authorization_policies, peer_authentications
from .telemetry import telemetry
from .tokens import request_authentications
from .traffic import destination_rule


def _check_names(lw: Lowering) -> None:
    """Service, namespace and version names become Kubernetes names and hosts."""
    for svc in lw.mesh.services:
        for what, value, span in (("service name", svc.name, svc.at("name")),
                                  ("namespace", svc.namespace, svc.at("namespace"))):
            if not DNS1123_LABEL.fullmatch(value) or len(value) > 63:
                lw.unsupported(f"the {what} `{value}`", span,
                               "Kubernetes names are DNS-1123 labels: lower-case letters, digits and `-`")
        for v in svc.versions:
            if not DNS1123_LABEL.fullmatch(v.name) or len(v.name) > 63:
                lw.unsupported(f"the version name `{v.name}`", v.at("name"),
                               "Istio subset names are DNS-1123 labels: lower-case letters, digits and `-`")
    # Ingresses and externals name resources too (their account: a service account).
    for kind, items in (("ingress", lw.mesh.ingress_map.values()), ("external", lw.mesh.external_map.values())):
        for x in items:
            values = [("name", x.name), ("namespace", x.namespace)]
            if kind == "ingress":
                values.append(("account", x.account or x.name))
            for what, value in values:
                # `-jwt`, `-ingress`, `-tls-<port>` and `-<n>` suffixes must still fit in 63 characters
                if not DNS1123_LABEL.fullmatch(value) or len(value) > (63 if what != "name" else 48):
                    lw.unsupported(f"the {kind} {what} `{value}`", x.at(what) if what in x.spans else x.span,
                                   "Kubernetes names are DNS-1123 labels (lower-case letters, digits and `-`), "
                                   "and meshc adds suffixes of up to 15 characters to this one")


def lower_documents(mesh: Mesh, options: CompileOptions) -> tuple[list[dict], list[Diagnostic]]:
    """Every resource as a plain dict, in no particular order."""
    lw = Lowering(mesh, options)
    _check_names(lw)
    docs: list[dict] = []
    for svc in mesh.services:
        if mesh.service(svc.name) is not svc:
            continue  # a duplicate: the checks reported it
        vs = virtual_service(lw, svc)
        if vs is not None:
            docs.append(vs)
        docs.append(destination_rule(lw, svc))
    docs += peer_authentications(lw)
    docs += authorization_policies(lw)
    docs += externals(lw)
    docs += ingresses(lw)
    docs += request_authentications(lw)
    docs += sidecars(lw)
    docs.append(telemetry(lw))
    docs += envoy_filters(lw)
    return docs, lw.diagnostics


class IstioTarget:
    name = "istio"

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]:
        docs, diags = lower_documents(mesh, options)
        return layout.files(mesh.settings.name, docs), diags

    def validate(self, outputs: list[Output]) -> list[Diagnostic]:
        from .output_check import check_outputs

        return check_outputs(outputs)


TARGET = IstioTarget()
