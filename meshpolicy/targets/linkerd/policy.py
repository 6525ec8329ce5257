"""Linkerd's inbound policy: Servers, authorizations and rate limits.

Per service port a Server (`<service>-<port>`) whose accessPolicy is the
default stance (deny, or all-authenticated / all-unauthenticated for
default allow under strict / permissive mTLS); per allow rule an
AuthorizationPolicy on each of the service's Servers requiring a
MeshTLSAuthentication of the callers' service accounts (`*` for
`authenticated`) or, for `*` on a permissive service, a
NetworkAuthentication of every address. Linkerd only allows, so a deny
rule is written by leaving its callers out of the allows. Who the plan
admits is the reference for each identity list (tests/test_target_linkerd.py).
A destination whose rules name methods or paths is authorized per inbound
route instead (route_authz.py, tests/test_linkerd_authz.py).
"""

from __future__ import annotations

from ...model.types import AuthRule, Mesh, RateLimit, Service, Source
from ...plan import ServicePlan, plan_of
from ..base import cannot_express
from ..kube import APP_LABEL
from . import route_authz

POLICY = "policy.linkerd.io"
PROTOCOLS = {"http": "HTTP/1", "http2": "HTTP/2", "grpc": "gRPC", "tcp": "opaque"}
ALL_NETWORKS = "all-networks"
TARGET = "linkerd"


def default_policy(mesh: Mesh, mtls: str) -> str:
    if mesh.settings.default == "deny":
        return "deny"
    return "all-authenticated" if mtls == "strict" else "all-unauthenticated"


def server_name(svc: Service, port: int) -> str:
    return f"{svc.name}-{port}"


def denies_everyone(mesh: Mesh, sp: ServicePlan) -> bool:
    """A `deny *` for every method and path: nobody may call, whatever the default."""
    return any(r.effect == "deny" and not r.methods and not r.paths and any(s.kind == "any" for s in r.sources)
               for r in mesh.rules_by_target.get(sp.name, []))


def servers(mesh: Mesh, sp: ServicePlan) -> list[dict]:
    svc = sp.service
    # With route-scoped rules every request is authorized by its inbound
    # route's class, the default stance included (route_authz.py), so the
    # Server itself admits nobody.
    closed = denies_everyone(mesh, sp) or route_authz.route_scoped(mesh, sp.name)
    access = "deny" if closed else default_policy(mesh, sp.mtls)
    return [{
        "apiVersion": f"{POLICY}/v1beta3",
        "kind": "Server",
        "metadata": {"name": server_name(svc, p.number), "namespace": svc.namespace},
        "spec": {"podSelector": {"matchLabels": {APP_LABEL: svc.name}}, "port": p.number,
                 "proxyProtocol": PROTOCOLS[p.protocol], "accessPolicy": access},
    } for p in svc.ports]


def namespaces(mesh: Mesh) -> list[dict]:
    """The mesh-wide default for pods' other ports, on each namespace."""
    policy = default_policy(mesh, mesh.settings.mtls)
    return [{"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": ns, "annotations": {"config.linkerd.io/default-inbound-policy": policy}}}
            for ns in sorted({s.namespace for s in mesh.service_map.values()})]


class Authorizations:
    """AuthorizationPolicies and their authentications for one mesh; MP701s in `diags`."""

    def __init__(self, mesh: Mesh, target: str = TARGET):
        self.mesh = mesh
        self.plan = plan_of(mesh)
        self.target = target
        self.diags = []
        self.network_namespaces: set[str] = set()

    def reject(self, construct: str, span, why: str) -> None:
        self.diags.append(cannot_express(self.target, construct, span, why))

    def _identities(self, s: Source) -> set[tuple[str, str]] | None:
        """The (namespace, account) keys a source names; None: any identity."""
        if s.kind == "service":
            ident = self.plan.service(s.name).identity
            return {(ident.namespace, ident.account)}
        if s.kind == "namespace":  # a service's identity is in its namespace: the index, not a scan per source
            return set(route_authz._identity_index(self.plan).by_namespace.get(s.name, ()))
        return None

    def _denied(self, sp: ServicePlan) -> set[tuple[str, str]] | None:
        """Identities shut out by deny rules (None: everyone); none names methods or paths here."""
        out: set[tuple[str, str]] = set()
        visible = sp.mtls != "off"
        for r in self.mesh.rules_by_target.get(sp.name, []):
            if r.effect != "deny":
                continue
            for s in r.sources:
                if s.kind == "any":
                    return None
                if not visible:
                    continue
                ids = self._identities(s)
                if ids is None:
                    ids = {(p.identity.namespace, p.identity.account) for p in self.plan.services.values()}
                out |= ids
        return out

    def documents(self, sp: ServicePlan) -> list[dict]:
        svc = sp.service
        if denies_everyone(self.mesh, sp):
            return []  # `deny *`: the Servers deny everyone (servers())
        if route_authz.route_scoped(self.mesh, sp.name):
            if self.target != TARGET:  # gateway-api's linkerd flavour: its manifest refuses these too
                r = next(r for r in self.mesh.rules_by_target.get(sp.name, []) if r.methods or r.paths)
                self.reject(f"the methods or paths of the rules for `{svc.name}`", r.span,
                            "only the linkerd target writes Linkerd's per-route authorization")
                return []
            return route_authz.route_documents(self, sp)
        rules = [r for r in self.mesh.rules_by_target.get(sp.name, []) if r.effect == "allow"]
        denied = self._denied(sp)
        if denied is None:
            return []
        if denied and self.mesh.settings.default == "allow":
            self.reject(f"a deny rule on `{svc.name}` in a mesh that allows by default", svc.at("name"),
                        "Linkerd only allows: everyone but the denied callers cannot be listed")
            return []
        out = []
        for r in rules:
            auth = self._authentication(sp, r, denied)
            if auth is None:
                continue
            ref, docs = auth
            out += docs
            for p in svc.ports:
                out.append({
                    "apiVersion": f"{POLICY}/v1alpha1",
                    "kind": "AuthorizationPolicy",
                    "metadata": {"name": f"{server_name(svc, p.number)}-rule-{r.index + 1}", "namespace": svc.namespace},
                    "spec": {"targetRef": {"group": POLICY, "kind": "Server", "name": server_name(svc, p.number)},
                             "requiredAuthenticationRefs": [ref]},
                })
        return out

    def _authentication(self, sp: ServicePlan, r: AuthRule, denied: set) -> tuple[dict, list[dict]] | None:
        svc = sp.service
        visible = sp.mtls != "off"
        if any(s.kind == "any" for s in r.sources) and sp.mtls != "strict":
            if denied:
                self.reject(f"`*` in allow rule #{r.index + 1} next to a deny rule", r.span,
                            "callers without an identity are allowed by address, which cannot leave denied "
                            "identities out")
                return None
            self.network_namespaces.add(svc.namespace)
            return {"group": POLICY, "kind": "NetworkAuthentication", "name": ALL_NETWORKS}, []
        if not visible:
            return None  # identity sources never match without mTLS (and the checks say so)
        ids: set[tuple[str, str]] | None = set()
        for s in r.sources:
            got = self._identities(s)
            if got is None:  # authenticated, or `*` where strict mTLS leaves only identities
                ids = None
                break
            ids |= got
        name = f"{svc.name}-rule-{r.index + 1}"
        if ids is None and not denied:
            spec: dict = {"identities": ["*"]}
        else:
            if ids is None:
                ids = {(p.identity.namespace, p.identity.account) for p in self.plan.services.values()}
            ids = ids - denied
            if not ids:
                return None
            spec = {"identityRefs": [{"kind": "ServiceAccount", "name": a, "namespace": ns}
                                     for ns, a in sorted(ids)]}
        doc = {"apiVersion": f"{POLICY}/v1alpha1", "kind": "MeshTLSAuthentication",
               "metadata": {"name": name, "namespace": svc.namespace}, "spec": spec}
        return {"group": POLICY, "kind": "MeshTLSAuthentication", "name": name}, [doc]

    def network_authentications(self) -> list[dict]:
        return [{"apiVersion": f"{POLICY}/v1alpha1", "kind": "NetworkAuthentication",
                 "metadata": {"name": ALL_NETWORKS, "namespace": ns},
                 "spec": {"networks": [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]}}
                for ns in sorted(self.network_namespaces)]


def rate_limits(mesh: Mesh, sp: ServicePlan, reject) -> list[dict]:
    """One HTTPLocalRateLimitPolicy per Server: a bucket per named caller
    (overrides), or per identity for `*`."""
    svc = sp.service
    if not sp.rate_limits:
        return []
    overrides, per_identity = [], None
    plan = plan_of(mesh)
    for lim in sp.rate_limits:
        rps = _per_second(lim)
        if rps is None:
            reject(f"the rate limit {lim.requests}/{lim.per} on `{svc.name}`", lim.span,
                   "Linkerd limits whole requests per second")
            continue
        if lim.burst is not None:
            reject(f"the burst of the rate limit on `{svc.name}`", lim.at("burst"), "Linkerd limits have no burst")
            continue
        for s in lim.sources:
            if s.kind == "any":
                per_identity = rps
            elif s.kind == "service":
                ident = plan.service(s.name).identity
                overrides.append({"requestsPerSecond": rps, "clientRefs": [
                    {"kind": "ServiceAccount", "name": ident.account, "namespace": ident.namespace}]})
            else:
                reject(f"the source `{s.name or s.kind}` of the rate limit on `{svc.name}`", s.span,
                       "Linkerd buckets per named service account or per identity, not per namespace")
    if not overrides and per_identity is None:
        return []
    spec_base: dict = {}
    if per_identity is not None:
        spec_base["identity"] = {"requestsPerSecond": per_identity}
    if overrides:
        spec_base["overrides"] = overrides
    return [{
        "apiVersion": f"{POLICY}/v1alpha1",
        "kind": "HTTPLocalRateLimitPolicy",
        "metadata": {"name": server_name(svc, p.number), "namespace": svc.namespace},
        "spec": {"targetRef": {"group": POLICY, "kind": "Server", "name": server_name(svc, p.number)}, **spec_base},
    } for p in svc.ports if p.protocol != "tcp"]


def _per_second(lim: RateLimit) -> int | None:
    n, d = lim.requests, lim.per_seconds
    return n // d if n % d == 0 and n // d > 0 else None
