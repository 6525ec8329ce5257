"""Services from Kubernetes Services and workloads, refined by Istio's
DestinationRules (versions, connection pools, outlier detection, balancing)
and PeerAuthentications (mTLS, with workload > namespace > mesh precedence)."""

from __future__ import annotations

from ..codes import diag
from ..diagnostics import Label
from ..model import types as t
from .context import Context
from .inventory import K8sService, Resource, labels_of, mesh_name, selects
from .yamlmarks import YMap, YSeq

# Istio's default HTTP retry policy, applied to every route that sets no
# `retries` (istio/istio pilot/pkg/networking/core/route/retry: 2 retries).
ISTIO_DEFAULT_RETRY_ON = ["connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"]
_MTLS = {"STRICT": "strict", "PERMISSIVE": "permissive", "DISABLE": "off"}


def default_retry(span) -> t.Retry:
    """Istio's default retries repeat any method (a 503 after a POST included):
    `non_idempotent` says so, and keeps MP302 for retries a user wrote."""
    return t.Retry.make(attempts=2, on=list(ISTIO_DEFAULT_RETRY_ON), non_idempotent=True, span=span, spans={})


def build_services(cx: Context, istio_defaults: bool) -> None:
    for res, port, span in cx.inv.unnamed_ports:
        cx.approximate(res, "spec.ports.name", span, f"port {port.get('port')} names no protocol (`http-...`, "
                       "`grpc-...`, `tcp-...` or `appProtocol`): Istio sniffs it, taken here as HTTP "
                       "(istioctl: IST0118)")
    for svc in cx.inv.services.values():
        r = svc.resource
        cx.coverage.imported[r.kind] += 1
        ports = [t.Port.make(number=n, protocol=p, span=sp, spans={}) for n, p, sp in svc.ports]
        accounts = sorted({w.account for w in svc.workloads})
        account = accounts[0] if accounts else r.name
        if len(accounts) > 1:
            cx.approximate(r, "spec.selector", r.body.at("spec"),
                           f"selects workloads running as several service accounts ({', '.join(accounts)}); "
                           f"imported as `{account}`, so rules naming the others do not apply to this service")
        model = t.Service.make(name=svc.name, namespace=r.namespace, account=account, ports=ports,
                               span=r.body.span, spans={"name": _name_span(r)})
        for v in cx.inv.version_labels(svc):
            model.versions.append(t.Version.make(name=mesh_name(v), labels={"version": v}, span=r.body.span, spans={}))
        if istio_defaults and model.http:
            model.retry = default_retry(r.body.span)
        cx.services[svc.key] = model
        cx.mesh.services.append(model)


def _name_span(r: Resource):
    meta = r.body.get("metadata")
    return meta.at("name") if isinstance(meta, YMap) else r.body.span


# ---- DestinationRule
def destination_rules(cx: Context, rules: list[Resource]) -> None:
    for res in sorted(rules, key=lambda r: r.sort_key()):
        spec = res.spec
        host = spec.get("host")
        targets = cx.resolve(res, host, spec.at("host")) if host else []
        if not targets:
            continue
        cx.coverage.imported[res.kind] += 1
        for ksvc in targets:
            svc = cx.service_for(ksvc)
            policy = spec.get("trafficPolicy")
            if isinstance(policy, YMap):
                _traffic_policy(cx, res, policy, svc, "spec.trafficPolicy")
            subsets = spec.get("subsets")
            for i, sub in enumerate(subsets if isinstance(subsets, YSeq) else []):
                if isinstance(sub, YMap) and sub.get("name"):
                    _subset(cx, res, ksvc, svc, sub, subsets.at(i), f"spec.subsets[{i}]")
        for key in spec:
            if key not in ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector"):
                cx.refuse(res, f"spec.{key}", spec.key_at(key), "the language has no equivalent")
        if "workloadSelector" in spec:
            cx.refuse(res, "spec.workloadSelector", spec.key_at("workloadSelector"),
                      "a DestinationRule for some callers only cannot be expressed; imported for every caller")


def _subset(cx: Context, res: Resource, ksvc: K8sService, svc: t.Service, sub: YMap, span, where: str) -> None:
    name = mesh_name(str(sub["name"]))
    labels = labels_of(sub.get("labels"))
    version = svc.version(name)
    if version is None:
        # a subset over a version label the workloads already gave: one version, the subset's name
        same = [v for v in svc.versions if v.labels == labels]
        if same:
            version = same[0]
            version.name = name
        else:
            version = t.Version.make(name=name, labels=labels, span=span, spans={"name": sub.at("name")})
            svc.versions.append(version)
    version.span, version.spans = span, {"name": sub.at("name")}
    version.labels = labels
    pods = ksvc.workloads
    if pods and not any(selects({**ksvc.selector, **labels}, w.labels) for w in pods):
        cx.diags.append(diag("MP908", f"{res.label}: subset `{sub['name']}` selects none of the workloads of "
                                      f"Service `{ksvc.resource.name}`", sub.at("labels") if "labels" in sub else span,
                             labels=[Label(w.resource.body.span, f"{w.resource.label} has labels "
                                           + ", ".join(f"{k}={v}" for k, v in sorted(w.labels.items())))
                                     for w in pods[:3]]))
    policy = sub.get("trafficPolicy")
    if isinstance(policy, YMap):
        _traffic_policy(cx, res, policy, version, f"{where}.trafficPolicy")


def _traffic_policy(cx: Context, res: Resource, policy: YMap, target, where: str) -> None:
    """Connection pool, outlier detection and balancing on a service or a version."""
    pool = policy.get("connectionPool")
    if isinstance(pool, YMap):
        kw = {}
        tcp, http = pool.get("tcp"), pool.get("http")
        for part, names in ((tcp, {"maxConnections": "max_connections"}),
                            (http, {"http1MaxPendingRequests": "max_pending", "http2MaxRequests": "max_requests",
                                    "maxRetries": "max_retries"})):
            if not isinstance(part, YMap):
                continue
            for key, value in part.items():
                if key in names and isinstance(value, int):
                    kw[names[key]] = value
                    cx.imported(res, f"{where}.connectionPool.{key}")
                else:
                    cx.refuse(res, f"{where}.connectionPool.{key}", part.key_at(key), "the language has no equivalent")
        if kw:
            target.circuit = t.CircuitBreaker.make(span=pool.span, spans={}, **kw)
    od = policy.get("outlierDetection")
    if isinstance(od, YMap):
        kw = {}
        for key, value in od.items():
            if key in ("consecutive5xxErrors", "consecutiveErrors", "consecutiveGatewayErrors"):
                n = value.get("value") if isinstance(value, dict) else value
                if isinstance(n, int):
                    kw["consecutive_gateway" if key == "consecutiveGatewayErrors" else "consecutive_5xx"] = n
                    cx.imported(res, f"{where}.outlierDetection.{key}")
            elif key in ("interval", "baseEjectionTime"):
                ms = cx.duration_ms(res, od, key, f"{where}.outlierDetection")
                if ms is not None:
                    kw["interval_ms" if key == "interval" else "eject_ms"] = ms
            elif key == "maxEjectionPercent" and isinstance(value, (int, float)):
                kw["max_percent"] = float(value)
                cx.imported(res, f"{where}.outlierDetection.{key}")
            else:
                cx.refuse(res, f"{where}.outlierDetection.{key}", od.key_at(key), "the language has no equivalent")
        if kw:
            target.outlier = t.Outlier.make(span=od.span, spans={}, **kw)
    lb = policy.get("loadBalancer")
    if isinstance(lb, YMap):
        simple = lb.get("simple")
        hashed = lb.get("consistentHash")
        mapping = {"ROUND_ROBIN": "round_robin", "LEAST_REQUEST": "least_request", "LEAST_CONN": "least_request",
                   "RANDOM": "random"}
        if simple in mapping:
            target.balance = t.LoadBalancer.make(policy=mapping[simple], span=lb.span, spans={})
            cx.imported(res, f"{where}.loadBalancer.simple")
        elif isinstance(hashed, YMap) and isinstance(hashed.get("httpHeaderName"), str):
            target.balance = t.LoadBalancer.make(policy="hash_header", header=hashed["httpHeaderName"].lower(),
                                                 span=lb.span, spans={})
            cx.imported(res, f"{where}.loadBalancer.consistentHash")
        elif isinstance(hashed, YMap) and hashed.get("useSourceIp") is True:
            target.balance = t.LoadBalancer.make(policy="hash_source_ip", span=lb.span, spans={})
            cx.imported(res, f"{where}.loadBalancer.consistentHash")
        else:
            cx.refuse(res, f"{where}.loadBalancer", policy.at("loadBalancer"), "only simple policies, header and "
                      "source-IP hashing are expressible")
    tls = policy.get("tls")
    if isinstance(tls, YMap) and tls.get("mode") not in (None, "ISTIO_MUTUAL"):
        cx.tls_overrides.append((res, tls, target))
    for key in policy:
        if key not in ("connectionPool", "outlierDetection", "loadBalancer", "tls"):
            cx.refuse(res, f"{where}.{key}", policy.key_at(key), "the language has no equivalent")


def check_tls_overrides(cx: Context) -> None:
    """A DestinationRule sending plaintext (`tls.mode: DISABLE`) to a STRICT
    destination: the destination refuses every request (MP913). Other modes
    (SIMPLE, MUTUAL) originate TLS with the user's own certificates, which
    the mesh's mTLS replaces: not imported."""
    for res, tls, target in cx.tls_overrides:
        svc = target if isinstance(target, t.Service) else next(
            (s for s in cx.mesh.services if target in s.versions), None)
        if svc is None:
            continue
        if tls.get("mode") == "DISABLE":
            if cx.mesh.mtls_of(svc) == "strict":
                cx.diags.append(diag("MP913", f"{res.label}: `tls.mode: DISABLE` sends plaintext to `{svc.name}`, "
                                              f"whose mTLS mode is STRICT: every request fails", tls.at("mode")))
            else:
                cx.approximate(res, "trafficPolicy.tls.mode", tls.at("mode"),
                               f"DISABLE: callers reach `{svc.name}` without an identity; imported as the "
                               f"destination's own mode, so rules naming callers may admit more than Istio does")
        else:
            cx.refuse(res, "trafficPolicy.tls", tls.span, f"mode {tls.get('mode')} originates TLS with user certificates")


# ---- PeerAuthentication
def peer_authentications(cx: Context, policies: list[Resource], root_ns: str) -> None:
    """Mesh mode from the root namespace's selector-less policy (Istio's default
    when there is none: PERMISSIVE); then namespace, then workload policies,
    each overriding the wider one (UNSET inherits)."""
    mesh_mode = "permissive"
    by_ns: dict[str, str] = {}
    workload: dict[tuple[str, str], tuple[str, Resource]] = {}
    for res in sorted(policies, key=lambda r: r.sort_key()):
        spec = res.spec
        mode_raw = spec.get("mtls", {}).get("mode") if isinstance(spec.get("mtls"), dict) else None
        mode = _MTLS.get(str(mode_raw)) if mode_raw not in (None, "UNSET") else None
        if mode_raw not in (None, "UNSET") and mode is None:
            cx.refuse(res, "spec.mtls.mode", spec.at("mtls"), f"unknown mode `{mode_raw}`")
            continue
        cx.coverage.imported[res.kind] += 1
        if "portLevelMtls" in spec:
            cx.refuse(res, "spec.portLevelMtls", spec.key_at("portLevelMtls"),
                      "per-port mTLS cannot be expressed; the workload-level mode is used for every port",
                      "plaintext callers on those ports")
        selector = labels_of(spec.get("selector", {}).get("matchLabels")) if isinstance(spec.get("selector"), dict) else {}
        if not selector:
            if mode is None:
                continue
            if res.namespace == root_ns:
                mesh_mode = mode
            else:
                by_ns.setdefault(res.namespace, mode)
            continue
        for ksvc in cx.policy_scope(res, root_ns):
            if ksvc.key in workload:
                cx.diags.append(diag("MP917", f"{res.label} and {workload[ksvc.key][1].label} both select "
                                              f"`{ksvc.name}`; Istio uses the oldest", spec.at("selector")))
                continue
            if mode is not None:
                workload[ksvc.key] = (mode, res)
    cx.mesh.settings.mtls = mesh_mode
    for ksvc in cx.inv.services.values():
        svc = cx.service_for(ksvc)
        mode = workload.get(ksvc.key, (None,))[0] or by_ns.get(ksvc.resource.namespace)
        if mode is not None and mode != mesh_mode:
            svc.mtls = mode
