"""The gateway-api target: Kubernetes Gateway API v1.6 (standard channel)
for east-west traffic, as GAMMA defines it: an HTTPRoute (GRPCRoute for
gRPC ports) per service port with the Service as its parentRef, splitting
over per-version Services, with timeouts, mirrors and redirects.

The standard channel has no authorization, mTLS or traffic policy; with
`[compile.gateway-api] mesh = "istio"` those come from Istio's own
resources (PeerAuthentication, AuthorizationPolicy, DestinationRule per
version Service, Telemetry, the rate-limit EnvoyFilters: the istio
target's builders), with
`mesh = "linkerd"` from the linkerd target's (Servers, authorizations,
rate limits, retry annotations). The pack manifest (targets/gateway-api/)
says, per flavour, what is MP701; a construct waived in
`[compile.gateway-api] waive` is MP706 instead and left out (waivers.py).
"""

from __future__ import annotations

from ...compile import CompileOptions, Output
from ...diagnostics import Diagnostic, has_errors
from ...model.types import Mesh
from ...plan import ServicePlan, plan_of
from ..base import cannot_express, rejections
from ..http_routes import Dialect, grpc_rules, http_rules, version_services
from ..kube import APP_LABEL, check_names, files, read_settings
from ..linkerd import dedupe
from ..linkerd import routes as linkerd_routes
from ..waivers import waived
from . import consumers, istio_flavour, l7

NAME = "gateway-api"
API = "gateway.networking.k8s.io/v1"
FLAVOURS = ("istio", "linkerd")


def _parent(sp: ServicePlan, port: int) -> dict:
    return {"group": "", "kind": "Service", "name": sp.name, "port": port}


def _rule_name(rp) -> str:
    """A rule's name in the YAML: the policy rule it comes from (routes may
    leave rules out, see consumers.py), so a reviewer and the tests can tell."""
    return "default" if rp.rule is None else f"rule-{rp.rule.index + 1}"


def _options(sp: ServicePlan, d: Dialect, plans: list, rules: list[dict]) -> bool:
    """The rules' L7 options (l7.py); False after an MP701."""
    ok = True
    for rp, rule in zip(plans, rules):
        r = rp.rule
        where = f"in rule {r.index + 1} of route `{sp.name}`" if r is not None else f"of service `{sp.name}`"
        ok = l7.decorate(r, sp.service.cors_for(r), rule, d, where) and ok
    if not ok:
        return False
    pairs = [(rp.rule, rule.get("matches", [])) for rp, rule in zip(plans, rules) if rp.rule is not None]
    for earlier, later in l7.query_order_problems(pairs, d.regex_rank):
        d.reject(f"the order of rules {earlier.index + 1} and {later.index + 1} of route `{sp.name}`", later.span,
                 f"a request both match would take rule {later.index + 1}: routes prefer the match with more "
                 "query parameter tests, not the first")
        ok = False
    return ok


def _http_routes(sp: ServicePlan, d: Dialect, flavour: str | None, ports: list, http: list, namespace: str,
                 plans: list | None, callers_chosen: bool) -> list[dict]:
    """One HTTPRoute per http port of the service, in `namespace` (another
    than the service's: a consumer route, whose refs name the service's namespace)."""
    svc = sp.service
    plans = sp.rule_plans if plans is None else plans
    elsewhere = namespace != svc.namespace
    docs = []
    for p in http:
        rules = http_rules(sp, p.number, d, plans, callers_chosen)
        ann = linkerd_routes.retry_annotations(sp, False, d) if flavour == "linkerd" else {}
        if rules is None or ann is None:
            continue
        if not _options(sp, d, plans, rules):
            continue
        for rp, rule in zip(plans, rules):
            rule["name"] = _rule_name(rp)
            if elsewhere:
                refs = list(rule.get("backendRefs", []))
                refs += [f["requestMirror"]["backendRef"] for f in rule.get("filters", []) if "requestMirror" in f]
                for ref in refs:
                    ref["namespace"] = svc.namespace
        meta: dict = {"name": svc.name if len(ports) == 1 else f"{svc.name}-{p.number}", "namespace": namespace}
        if ann:
            meta["annotations"] = ann
        parent = _parent(sp, p.number)
        if elsewhere:
            parent["namespace"] = svc.namespace
        docs.append({"apiVersion": API, "kind": "HTTPRoute", "metadata": meta,
                     "spec": {"parentRefs": [parent], "rules": rules}})
    return docs


def _grpc_options_absent(sp: ServicePlan, d: Dialect) -> bool:
    """A GRPCRoute has header modifiers but no query, rewrite or CORS, and
    meshc does not write its header filters yet: any L7 option is MP701."""
    ok = True
    for rp in sp.rule_plans:
        r = rp.rule
        cors = sp.service.cors_for(r)
        where = f"in rule {r.index + 1} of route `{sp.name}`" if r is not None else f"of service `{sp.name}`"
        used = [what for what, on in (("query tests", r is not None and r.match.queries),
                                      ("header operations", r is not None and r.headers),
                                      ("`rewrite`", r is not None and r.rewrite is not None),
                                      ("CORS", cors is not None)) if on]
        if used:
            d.reject(f"{used[0]} {where} (a gRPC port)", r.span if r is not None else sp.service.span,
                     "a GRPCRoute has no query matches, rewrite or CORS, and meshc writes no GRPCRoute filters")
            ok = False
    return ok


def routes_of(mesh: Mesh, sp: ServicePlan, d: Dialect, flavour: str | None) -> list[dict]:
    svc = sp.service
    if not linkerd_routes.needs_route(sp):
        return []
    ports = [p for p in svc.ports if p.protocol != "tcp"]
    if not svc.ports:
        d.reject(f"service `{svc.name}` without ports", svc.at("name"), "a route's backendRefs name a Service port")
        return []
    if not ports:
        if len(svc.versions) > 1:
            d.reject(f"the versions of tcp service `{svc.name}`", svc.at("name"),
                     "TCPRoute is not in the standard channel, so connections cannot be split over versions")
        return []
    docs = []
    http = [p for p in ports if p.protocol != "grpc"]
    if http:
        # consumer routes are a mesh's choice (GAMMA's MeshConsumerRoute): Istio has them
        views = consumers.caller_views(mesh, sp, d) if flavour == "istio" else {}
        if views is not None:
            docs += _http_routes(sp, d, flavour, ports, http, svc.namespace,
                                 consumers.producer_plans(sp) if views else None, False)
            for ns, plans in views.items():
                mine = _http_routes(sp, d, flavour, ports, http, ns, plans, True)
                if mine:
                    docs += mine + [consumers.reference_grant(sp, ns, "HTTPRoute", mine)]
    for p in ports:
        if p.protocol != "grpc":
            continue
        if not _grpc_options_absent(sp, d):
            continue
        rules = grpc_rules(sp, p.number, d)
        if rules is None:
            continue
        meta: dict = {"name": svc.name if len(ports) == 1 else f"{svc.name}-{p.number}", "namespace": svc.namespace}
        if flavour == "linkerd":
            ann = linkerd_routes.retry_annotations(sp, True, d)
            if ann:
                meta["annotations"] = ann
        docs.append({"apiVersion": API, "kind": "GRPCRoute", "metadata": meta,
                     "spec": {"parentRefs": [_parent(sp, p.number)], "rules": rules}})
    return docs


def lower_documents(mesh: Mesh, flavour: str | None, options: CompileOptions) -> tuple[list[dict], list[Diagnostic]]:
    plan = plan_of(mesh)
    diags: list[Diagnostic] = rejections(NAME, mesh, flavour, options.waive) + check_names(NAME, mesh)
    d = Dialect(NAME, regex=flavour is not None, mirror=True, redirect_codes=(301, 302, 303, 307, 308),
                regex_rank=flavour == "istio",
                reject=lambda c, span, why: diags.append(cannot_express(NAME, c, span, why)),
                waive=options.waive, waived=lambda key, c, span: diags.append(waived(NAME, key, c, span)))
    docs: list[dict] = []
    for sp in plan.services.values():
        docs += routes_of(mesh, sp, d, flavour)
        docs += version_services(sp, APP_LABEL)
    if flavour == "istio":
        more, extra = istio_flavour.documents(mesh, options, d)
        docs += more
        diags += extra
    elif flavour == "linkerd":
        from ..linkerd import policy

        auth = policy.Authorizations(mesh, target=NAME)
        docs += policy.namespaces(mesh)
        for sp in plan.services.values():
            docs += policy.servers(mesh, sp)
            docs += auth.documents(sp)
            docs += policy.rate_limits(mesh, sp, d.reject)
        docs += auth.network_authentications()
        diags += auth.diags
        # egress: the linkerd target's EgressNetworks, their routes written as Gateway API HTTPRoutes
        from ..linkerd import egress as linkerd_egress

        taken = {(x["kind"], x["metadata"].get("namespace"), x["metadata"]["name"]) for x in docs}
        docs += linkerd_egress.documents(mesh, plan, API, d, d.reject, taken, diags)
    return docs, dedupe(diags)


class GatewayApiTarget:
    name = NAME

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]:
        settings, diags = read_settings(NAME, options.settings, {"mesh": FLAVOURS})
        if diags:
            return [], diags
        docs, diags = lower_documents(mesh, settings.get("mesh"), options)
        if has_errors(diags):
            return [], diags
        return files(NAME, mesh.settings.name, docs), diags

    def validate(self, outputs: list[Output]) -> list[Diagnostic]:
        from ..kube_check import check_outputs

        return check_outputs(NAME, outputs)


TARGET = GatewayApiTarget()
