"""The host names a service answers to, one list for every target.

A caller may name a destination by its short name, `name.namespace`,
`name.namespace.svc` or the fully qualified `name.namespace.svc.cluster.local`
(Kubernetes' own search list). `cluster.local` is the cluster domain, not the
mesh's trust domain: the two are set independently. meshproxy, Envoy and
`meshc up` all answer to exactly this list; Istio and the Kubernetes targets
use `fqdn`, the last entry.
"""

from __future__ import annotations

from ..model.types import Service

CLUSTER_DOMAIN = "cluster.local"


def fqdn(svc: Service) -> str:
    return name_fqdn(svc.name, svc.namespace)


def name_fqdn(name: str, namespace: str) -> str:
    """The fully qualified host of any Service, e.g. a version's `<svc>-<version>`."""
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def version_service(service: str, version: str) -> str:
    """The Service of one version, `<service>-<version>`: what a route that
    weighs versions names (gateway-api, linkerd), and the host a per-workload
    Envoy or meshproxy sidecar dials for that version."""
    return f"{service}-{version}"


def upstream_host(svc: Service, version: str | None) -> str:
    """The fully qualified host of a service, or of one of its versions."""
    return fqdn(svc) if version is None else name_fqdn(version_service(svc.name, version), svc.namespace)


def hosts(svc: Service) -> list[str]:
    """Shortest first; the last one is `fqdn(svc)`."""
    return name_hosts(svc.name, svc.namespace)


def name_hosts(name: str, namespace: str) -> list[str]:
    """The same list for any Kubernetes Service (`meshc import` resolves against it)."""
    return [name, f"{name}.{namespace}", f"{name}.{namespace}.svc", name_fqdn(name, namespace)]
