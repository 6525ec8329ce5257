"""The linkerd target: the checked policy as Linkerd 2 resources.

Inbound (policy.py): a Server per service port with the default stance,
AuthorizationPolicies requiring MeshTLSAuthentications or a
NetworkAuthentication, HTTPLocalRateLimitPolicies, and the namespaces'
default inbound policy annotation. Outbound (routes.py): an HTTPRoute
(policy.linkerd.io/v1beta3) per service attached to its Service, splitting
over per-version Services, with Linkerd's retry annotations. Egress
(egress.py): an EgressNetwork per namespace and HTTPRoutes on it for the
externals its services may call. What Linkerd
cannot express is MP701, from the pack manifest (targets/linkerd/) or from
the lowering where only some values of a construct fit.
"""

from __future__ import annotations

from ...compile import CompileOptions, Output
from ...diagnostics import Diagnostic, has_errors
from ...model.types import Mesh
from ...plan import plan_of
from ..base import cannot_express, rejections
from ..http_routes import Dialect
from ..waivers import waived
from ..kube import check_names, files, read_settings
from . import egress, policy, routes

NAME = "linkerd"
ROUTE_API = "policy.linkerd.io/v1beta3"


def dialect(target: str, diags: list[Diagnostic], waive: tuple[str, ...] = ()) -> Dialect:
    return Dialect(target, regex=True, mirror=False, redirect_codes=(301, 302),
                   reject=lambda c, span, why: diags.append(cannot_express(target, c, span, why)),
                   waive=waive, waived=lambda key, c, span: diags.append(waived(target, key, c, span)))


def lower_documents(mesh: Mesh, waive: tuple[str, ...] = ()) -> tuple[list[dict], list[Diagnostic]]:
    plan = plan_of(mesh)
    diags: list[Diagnostic] = rejections(NAME, mesh, None, waive) + check_names(NAME, mesh)
    d = dialect(NAME, diags, waive)
    auth = policy.Authorizations(mesh)
    docs: list[dict] = policy.namespaces(mesh)
    for sp in plan.services.values():
        docs += policy.servers(mesh, sp)
        docs += auth.documents(sp)
        docs += policy.rate_limits(mesh, sp, d.reject)
        if routes.needs_route(sp):
            route_docs, _ok = routes.http_route(sp, ROUTE_API, d, retries=True)
            docs += route_docs
        docs += routes.services_for_versions(sp)
    docs += auth.network_authentications()
    taken = {(x["kind"], x["metadata"].get("namespace"), x["metadata"]["name"]) for x in docs}
    docs += egress.documents(mesh, plan, ROUTE_API, d, d.reject, taken, diags)
    return docs, dedupe(diags + auth.diags)


def dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    """One finding per code and place: the manifest's rejection comes first
    and the lowering's word for the same construct is dropped."""
    seen, out = set(), []
    for x in diags:
        key = (x.code, x.span) if x.span is not None else (x.code, x.message)
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


class LinkerdTarget:
    name = NAME

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]:
        _settings, diags = read_settings(NAME, options.settings, {})
        if diags:
            return [], diags
        docs, diags = lower_documents(mesh, options.waive)
        if has_errors(diags):
            return [], diags
        return files(NAME, mesh.settings.name, docs), diags

    def validate(self, outputs: list[Output]) -> list[Diagnostic]:
        from ..kube_check import check_outputs

        return check_outputs(NAME, outputs)


TARGET = LinkerdTarget()
