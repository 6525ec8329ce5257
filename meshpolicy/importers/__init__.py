"""Reading existing Kubernetes YAML (Istio and Gateway API) into the model.

`import_sources` turns manifests into the same typed model the .mesh
language builds, with every span pointing at the YAML file, line and
column the value came from; checks and the verifier then run on it as on
any mesh, and `meshc import` prints it as .mesh files (emit.py). What the
language cannot express is reported field by field (MP903/MP904), never
dropped silently. docs/import.md describes each kind and Istio rule followed.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from ..codes import diag
from ..diagnostics import Diagnostic
from ..gc_pause import gc_paused
from ..model import types as t
from ..span import SourceFile
from .context import Context, Coverage
from .inventory import WORKLOAD_KINDS, Inventory, Resource
from .yamlmarks import YMap, YSeq, error_span, load_documents

YAML_SUFFIXES = (".yaml", ".yml")
ROOT_NAMESPACE = "istio-system"  # Istio's default root namespace (meshConfig.rootNamespace)

_READ_ELSEWHERE = {"Service", "Namespace", "ServiceAccount", "ConfigMap", "Secret", "Kustomization",
                   "HorizontalPodAutoscaler", "PodDisruptionBudget", "Role", "RoleBinding", "ClusterRole",
                   "ClusterRoleBinding", "CustomResourceDefinition", "Ingress", "NetworkPolicy", "Endpoints",
                   "EndpointSlice"} | WORKLOAD_KINDS
# Kinds whose meaning the language cannot hold yet: each instance is reported.
_NOT_IMPORTED = {
    "EnvoyFilter": "EnvoyFilters patch Envoy directly and can change any decision",
    "WorkloadEntry": "workloads outside Kubernetes are not imported",
    "WorkloadGroup": "workloads outside Kubernetes are not imported",
    "WasmPlugin": "Wasm plugins can change any decision",
    "ProxyConfig": "proxy settings do not change decisions",
    "TCPRoute": "TCP routes are not imported",
    "TLSRoute": "TLS routes are not imported",
    "ReferenceGrant": "cross-namespace references are taken as granted",
}


@dataclass
class Imported:
    mesh: t.Mesh
    diagnostics: list[Diagnostic]
    coverage: Coverage
    files: dict[str, str] | None = None  # files to write beside the .mesh files (inline JWKS), by relative path


def is_manifest(path: str) -> bool:
    return path.endswith(YAML_SUFFIXES)


def read_resources(sources: dict[str, SourceFile], diags: list[Diagnostic]) -> list[Resource]:
    out: list[Resource] = []
    for path, src in sources.items():
        try:
            docs = load_documents(path, src.text)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            diags.append(diag("MP901", f"cannot read YAML: {problem}", error_span(path, err)))
            continue
        for body, span in docs:
            _collect(body, span, path, out, diags)
    return out


def _collect(body, span, path, out, diags) -> None:
    if body is None or not isinstance(body.get("kind"), str) or not isinstance(body.get("apiVersion"), str):
        diags.append(diag("MP902", "this YAML document is not a Kubernetes resource", span))
        return
    if body["kind"].endswith("List") and isinstance(body.get("items"), YSeq):
        for i, item in enumerate(body["items"]):
            _collect(item if isinstance(item, YMap) else None, body["items"].at(i), path, out, diags)
        return
    meta = body.get("metadata") if isinstance(body.get("metadata"), YMap) else {}
    out.append(Resource(body["apiVersion"], body["kind"], str(meta.get("name") or ""),
                        str(meta.get("namespace") or "default"), body, path, len(out)))


def import_sources(sources: dict[str, SourceFile], *, root_namespace: str = ROOT_NAMESPACE,
                   mesh_name: str = "imported", flavour: str = "auto", trust_domain: str | None = None,
                   emitting: bool = False) -> Imported:
    """flavour: "istio" reads Istio and Gateway API resources under Istio's
    defaults; "gateway-api" reads Gateway API only (Istio resources are
    reported as not imported); "auto" is "istio" when any Istio resource is present.
    emitting: `meshc import` writes the result (TLS listeners name the files
    to provide, inline JWKS become files); else the YAML is read where it is."""
    with gc_paused():  # YAML nodes and model objects: millions of small objects that all stay alive
        return _import(sources, root_namespace, mesh_name, flavour, trust_domain, emitting)


def _import(sources, root_namespace, mesh_name, flavour, trust_domain, emitting=False) -> Imported:
    from . import gateway_api, istio_authz, istio_egress, istio_ingress, istio_jwt, istio_routes, services

    diags: list[Diagnostic] = []
    coverage = Coverage()
    resources = read_resources(sources, diags)
    for r in resources:
        coverage.resources[r.kind] += 1
    inv = Inventory(resources, diags)
    for w in inv.workloads:  # read for service accounts, versions and labels
        coverage.imported[w.resource.kind] += 1
    cx = Context(inv, diags, coverage)
    cx.emitting = emitting
    cx.mesh.files = list(sources)
    settings = t.MeshSettings.make(name=mesh_name, declared=True, default="deny", spans={},
                                   trust_domain=trust_domain or _trust_domain(resources))
    cx.mesh.settings = settings
    cx.mesh.mesh_blocks = [settings]
    by_kind: dict[str, list[Resource]] = {}
    for r in resources:
        by_kind.setdefault(r.kind if r.group != "gateway.networking.k8s.io" else "gw:" + r.kind, []).append(r)
    istio = flavour == "istio" or (flavour == "auto" and any(r.group.endswith("istio.io") for r in resources))
    if not istio:  # Gateway API alone: Istio's resources are someone else's
        for kind in ("PeerAuthentication", "DestinationRule", "VirtualService", "AuthorizationPolicy", "Telemetry",
                     "Gateway", "ServiceEntry", "RequestAuthentication", "Sidecar"):
            for r in by_kind.pop(kind, []):
                diags.append(diag("MP903", f"{r.label} is not imported: `meshc import gateway-api` reads Gateway "
                                           "API resources only (use `meshc import istio`)", r.body.span))
    services.build_services(cx, istio_defaults=istio)
    services.peer_authentications(cx, by_kind.get("PeerAuthentication", []), root_namespace)
    services.destination_rules(cx, by_kind.get("DestinationRule", []))
    istio_egress.service_entries(cx, by_kind.get("ServiceEntry", []), by_kind.get("DestinationRule", []))
    istio_egress.external_destination_rules(cx, by_kind.get("DestinationRule", []))
    istio_routes.virtual_services(cx, by_kind.get("VirtualService", []))
    istio_egress.external_virtual_services(cx, by_kind.get("VirtualService", []))
    istio_ingress.gateway_virtual_services(cx, by_kind.get("Gateway", []), by_kind.get("VirtualService", []),
                                           root_namespace, emitting)
    gateway_api.http_routes(cx, by_kind.get("gw:HTTPRoute", []) + by_kind.get("gw:GRPCRoute", []))
    gateway_api.gateway_ingresses(cx, by_kind.get("gw:Gateway", []), by_kind.get("gw:HTTPRoute", []), emitting)
    istio_ingress.drop_gateway_services(cx)
    services.check_tls_overrides(cx)
    istio_jwt.request_authentications(cx, by_kind.get("RequestAuthentication", []), root_namespace)
    istio_jwt.gateway_providers(cx, root_namespace)
    allow_scoped = istio_authz.authorization_policies(cx, by_kind.get("AuthorizationPolicy", []), root_namespace)
    istio_jwt.report_token_forwarding(cx)
    for ksvc in inv.services.values():
        if ksvc.key not in allow_scoped:  # Istio allows what no ALLOW policy governs
            svc = cx.service_for(ksvc)
            cx.mesh.auth_rules.append(t.AuthRule.make(
                index=len(cx.mesh.auth_rules), effect="allow",
                sources=[t.Source.make(kind="any", span=svc.span, spans={})],
                target=t.Ref.make(name=svc.name, span=svc.span, spans={}), span=svc.span, spans={}))
    _telemetry(cx, by_kind.get("Telemetry", []), root_namespace)
    _sidecars(cx, by_kind.get("Sidecar", []))
    if istio:
        istio_egress.egress_stance(cx, by_kind.get("Sidecar", []), resources, root_namespace)
    for r in resources:
        kind = r.kind
        if kind in _NOT_IMPORTED and (r.group.endswith("istio.io") or r.group == "gateway.networking.k8s.io"):
            diags.append(diag("MP903", f"{r.label} is not imported: {_NOT_IMPORTED[kind]}", r.body.span))
        elif (kind not in _READ_ELSEWHERE and kind not in ("VirtualService", "DestinationRule", "PeerAuthentication",
                                                            "AuthorizationPolicy", "Telemetry", "HTTPRoute", "GRPCRoute",
                                                            "Gateway", "ServiceEntry", "RequestAuthentication",
                                                            "Sidecar")):
            diags.append(diag("MP903", f"{r.label} is not imported: meshc does not read `{r.api_version}` "
                                       f"`{kind}` resources", r.body.span))
    return Imported(cx.mesh, diags, coverage, dict(cx.extra_files))


def _sidecars(cx: Context, sidecars: list[Resource]) -> None:
    """Sidecars are not imported (MP903), but two that apply to the same
    workloads leave Istio's choice undefined: more than one without a
    selector in a namespace (IST0111), or selectors matching one workload (IST0110)."""
    from .inventory import labels_of

    bare: dict[str, Resource] = {}
    claimed: dict[int, Resource] = {}
    for res in sorted(sidecars, key=lambda r: r.sort_key()):
        for key in ("egress", "ingress", "inboundConnectionPool"):
            if key in res.spec:
                cx.refuse(res, f"spec.{key}", res.spec.key_at(key), "Sidecar scoping is not imported; every "
                          "caller is taken to see every service" if key == "egress" else "the language has no "
                          "equivalent")
        sel = res.spec.get("workloadSelector")
        labels = labels_of(sel.get("labels")) if isinstance(sel, YMap) else {}
        if not labels:
            if res.namespace in bare:
                cx.diags.append(diag("MP919", f"{res.label} and {bare[res.namespace].label} both have no "
                                              "workloadSelector in one namespace", res.body.key_at("spec")))
            bare.setdefault(res.namespace, res)
            continue
        for w in cx.inv.workloads_in(res.namespace, labels):
            first = claimed.setdefault(id(w), res)
            if first is not res:
                cx.diags.append(diag("MP919", f"{res.label} and {first.label} both select {w.resource.label}",
                                     res.spec.at("workloadSelector")))
                break


def _trust_domain(resources: list[Resource]) -> str:
    """Istio's trust domain is MeshConfig, not a resource: take the one the
    AuthorizationPolicies' principals name most (`cluster.local` if none)."""
    from collections import Counter

    seen: Counter = Counter()
    for r in resources:
        if r.kind != "AuthorizationPolicy":
            continue
        for rule in r.spec.get("rules") or []:
            for entry in (rule.get("from") or []) if isinstance(rule, dict) else []:
                src = entry.get("source") if isinstance(entry, dict) else None
                for p in (src.get("principals") or []) if isinstance(src, dict) else []:
                    td = str(p).removeprefix("spiffe://").split("/", 1)[0]
                    if "/ns/" in str(p) and td != "*":
                        seen[td] += 1
    return seen.most_common(1)[0][0] if seen else "cluster.local"


def _telemetry(cx: Context, items: list[Resource], root_ns: str) -> None:
    """The root namespace's Telemetry sets mesh-wide tracing and metrics; the
    others (per namespace or workload) cannot be expressed."""
    for res in items:
        spec = res.spec
        if res.namespace != root_ns or "selector" in spec:
            cx.refuse(res, "spec", res.body.at("spec"), "only the mesh-wide Telemetry (root namespace, no "
                      "selector) is expressible")
            continue
        cx.coverage.imported[res.kind] += 1
        tracing = spec.get("tracing")
        if isinstance(tracing, YSeq) and tracing and isinstance(tracing[0], YMap):
            sample = tracing[0].get("randomSamplingPercentage")
            disabled = tracing[0].get("disableSpanReporting") is True
            cx.mesh.settings.tracing = t.Tracing.make(
                enabled=not disabled, formats=["b3"],
                sample_percent=float(sample) if isinstance(sample, (int, float)) else 1.0,
                span=spec.at("tracing"), spans={})
            cx.approximate(res, "spec.tracing", spec.at("tracing"), "imported as B3 propagation (Istio's default "
                           "with Zipkin); the provider is not imported")
        metrics = spec.get("metrics")
        if isinstance(metrics, YSeq) and metrics:
            overrides = [m for m in metrics if isinstance(m, YMap) and m.get("overrides")]
            cx.mesh.settings.metrics = not any(o.get("disabled") is True for m in overrides
                                               for o in m["overrides"] if isinstance(o, YMap))
            cx.imported(res, "spec.metrics")
