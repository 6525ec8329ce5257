"""The Kubernetes side of an import: resources, Services, workloads and hosts.

Istio and Gateway API resources refer to Services by host name and to
workloads by labels; this module answers both questions once, for every
resource kind the importers read (docs/import.md, "Services and workloads").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..codes import diag
from ..diagnostics import Diagnostic
from ..span import Span
from .yamlmarks import YMap, YSeq, empty_map

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod",
                  "ReplicationController", "DeploymentConfig", "Rollout"}
# Istio's protocol selection from a Service port's name (`http-web`, `grpc`)
# or `appProtocol`; anything else is sniffed by Istio, taken here as HTTP.
_PROTOCOLS = {"http": "http", "http2": "http2", "grpc": "grpc", "grpc-web": "http2", "h2c": "http2",
              "tcp": "tcp", "tls": "tcp", "https": "tcp", "mongo": "tcp", "mysql": "tcp", "redis": "tcp"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*")  # the grammar's NAME


@dataclass
class Resource:
    """One Kubernetes object: `body` is its mapping, `span` where it was written."""

    api_version: str
    kind: str
    name: str
    namespace: str
    body: YMap
    path: str
    order: int  # input order, the tie-break after creationTimestamp

    @property
    def group(self) -> str:
        return self.api_version.split("/", 1)[0] if "/" in self.api_version else ""

    @property
    def spec(self) -> YMap:
        spec = self.body.get("spec")
        return spec if isinstance(spec, YMap) else empty_map(self.body)

    @property
    def span(self) -> Span:
        return self.body.span

    @property
    def label(self) -> str:
        """`VirtualService bookinfo/reviews`, as messages name a resource."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def created(self) -> str:
        meta = self.body.get("metadata")
        stamp = meta.get("creationTimestamp") if isinstance(meta, YMap) else None
        return str(stamp) if stamp is not None else ""

    def sort_key(self) -> tuple:
        """Istio's precedence among conflicting resources: oldest first, then by name."""
        return (self.created or "~", self.order)


@dataclass
class Workload:
    resource: Resource
    labels: dict[str, str]
    account: str


@dataclass
class K8sService:
    resource: Resource
    name: str  # the meshc service name
    selector: dict[str, str]
    ports: list[tuple[int, str, Span]]  # (number, protocol, where)
    workloads: list[Workload] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource.namespace, self.resource.name)


def labels_of(value) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels) holds for labels: every pair is present."""
    return all(labels.get(k) == v for k, v in selector.items())


class Inventory:
    """Services, workloads and host resolution for one set of manifests."""

    def __init__(self, resources: list[Resource], diags: list[Diagnostic]) -> None:
        self.resources = resources
        self.diags = diags
        self.workloads = [w for r in resources if r.kind in WORKLOAD_KINDS and not r.group.endswith("istio.io")
                          for w in [self._workload(r)] if w]
        self.unnamed_ports: list[tuple[Resource, YMap, Span]] = []  # ports whose protocol Istio must sniff
        services = [r for r in resources if r.kind == "Service" and r.api_version == "v1"]
        counts: dict[str, int] = {}
        for r in services:
            counts[r.name] = counts.get(r.name, 0) + 1
        self.services: dict[tuple[str, str], K8sService] = {}
        for r in sorted(services, key=Resource.sort_key):
            if (r.namespace, r.name) in self.services:
                continue
            name = r.name if counts[r.name] == 1 else f"{r.namespace}-{r.name}"
            if name != r.name:
                diags.append(diag("MP916", f"Service `{r.name}` exists in several namespaces; the one in "
                                           f"`{r.namespace}` is imported as `{name}`", r.body.span))
            spec = r.spec
            svc = K8sService(r, name, labels_of(spec.get("selector")), self._ports(r))
            svc.workloads = [w for w in self.workloads
                             if svc.selector and w.resource.namespace == r.namespace and selects(svc.selector, w.labels)]
            self.services[svc.key] = svc

    # ---- workloads
    @staticmethod
    def _workload(r: Resource) -> Workload | None:
        spec = r.spec
        if r.kind == "Pod":
            meta, pod = r.body.get("metadata"), spec
        else:
            template = spec.get("template")
            if r.kind == "CronJob":
                job = spec.get("jobTemplate")
                template = job.get("spec", {}).get("template") if isinstance(job, dict) else None
            if not isinstance(template, dict):
                return None
            meta, pod = template.get("metadata"), template.get("spec")
        labels = labels_of(meta.get("labels") if isinstance(meta, dict) else None)
        pod = pod if isinstance(pod, dict) else {}
        account = pod.get("serviceAccountName") or pod.get("serviceAccount") or "default"
        return Workload(r, labels, str(account))

    def _ports(self, r: Resource) -> list[tuple[int, str, Span]]:
        out = []
        ports = r.spec.get("ports")
        for i, p in enumerate(ports if isinstance(ports, YSeq) else []):
            if not isinstance(p, YMap) or not isinstance(p.get("port"), int):
                continue
            out.append((p["port"], port_protocol(p), ports.at(i)))
            if not port_protocol_named(p) and p.get("protocol") not in ("UDP", "SCTP"):
                self.unnamed_ports.append((r, p, ports.at(i)))
        return out

    # ---- who a policy's selector picks
    def workloads_in(self, namespace: str | None, selector: dict[str, str]) -> list[Workload]:
        return [w for w in self.workloads
                if (namespace is None or w.resource.namespace == namespace) and selects(selector, w.labels)]

    def services_selected(self, namespace: str | None, selector: dict[str, str]) -> list[K8sService]:
        """Services a workload selector applies to: those with a selected workload;
        for a Service whose workloads are not in the inputs, its pods are taken
        to carry at least the Service's own selector labels."""
        out = []
        for svc in self.services.values():
            if namespace is not None and svc.resource.namespace != namespace:
                continue
            pods = [w.labels for w in svc.workloads] or ([svc.selector] if svc.selector else [])
            if any(selects(selector, labels) for labels in pods):
                out.append(svc)
        return out

    def namespaces(self) -> set[str]:
        """Namespaces the inputs show to exist: Namespace objects, and where Services and workloads live."""
        if not hasattr(self, "_namespaces"):
            self._namespaces = ({r.name for r in self.resources if r.kind == "Namespace"}
                                | {k[0] for k in self.services} | {w.resource.namespace for w in self.workloads})
        return self._namespaces

    def in_namespace(self, namespace: str | None) -> list[K8sService]:
        return [s for s in self.services.values() if namespace is None or s.resource.namespace == namespace]

    # ---- hosts
    def resolve_host(self, host: str, namespace: str) -> list[K8sService] | None:
        """The Services a host names, read relative to `namespace` as Istio
        reads a short name; a `*` wildcard names every Service it covers.
        None: the host is not a cluster Service (an external or unknown host)."""
        host = host.strip().lower()
        if host == "*":
            return list(self.services.values())
        if host.startswith("*."):
            suffix = host[1:]
            hits = [s for s in self.services.values() if any(h.endswith(suffix) for h in self.hosts_of(s))]
            return hits or None
        parts = host.split(".")
        if len(parts) == 1:
            key = (namespace, parts[0])
        elif len(parts) == 2 or (len(parts) >= 3 and parts[2] == "svc"):
            key = (parts[1], parts[0])
        else:
            return None
        svc = self.services.get(key)
        return [svc] if svc else None

    @staticmethod
    def hosts_of(svc: K8sService) -> list[str]:
        from ..plan.hosts import name_hosts

        return name_hosts(svc.resource.name, svc.resource.namespace)

    # ---- versions
    def version_labels(self, svc: K8sService, key: str = "version") -> list[str]:
        seen = []
        for w in svc.workloads:
            v = w.labels.get(key)
            if v is not None and v not in seen:
                seen.append(v)
        return seen


def port_protocol_named(port: YMap) -> bool:
    """Whether the port says its protocol (`appProtocol`, or a name like `http-web`),
    as Istio's protocol selection asks (istioctl: IST0118)."""
    app = port.get("appProtocol")
    if isinstance(app, str) and app.lower().split("/")[-1] in _PROTOCOLS:
        return True
    return str(port.get("name") or "").lower().split("-", 1)[0] in _PROTOCOLS


def port_protocol(port: YMap) -> str:
    app = port.get("appProtocol")
    if isinstance(app, str):
        key = app.lower().split("/")[-1]
        if key in _PROTOCOLS:
            return _PROTOCOLS[key]
    name = str(port.get("name") or "").lower()
    prefix = name.split("-", 1)[0]
    if prefix in _PROTOCOLS:
        return _PROTOCOLS[prefix]
    if port.get("protocol") in ("UDP", "SCTP"):
        return "tcp"
    return "http"


def mesh_name(text: str) -> str:
    """A name the language accepts, from a Kubernetes name (dots become dashes)."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    cleaned = re.sub(r"-{2,}", "-", cleaned)
    if cleaned[:1].isdigit():
        cleaned = "v" + cleaned  # a version label like `1.0` becomes `v1-0`
    return cleaned if _NAME.fullmatch(cleaned) else "x-" + (cleaned or "unnamed")
