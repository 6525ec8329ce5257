"""How model names become Istio names: hosts, principals, labels, durations.

Workloads are selected by the `app: <service>` pod label (the Kubernetes
convention Istio's own samples use), so every selector, sourceLabels and
Sidecar scope below assumes each service's pods carry that label.
"""

from __future__ import annotations

import re

from ...model.types import Mesh, Service
from ...plan import fqdn  # noqa: F401  (the plan's host name; re-exported for the Istio modules)

ROOT_NAMESPACE = "istio-system"  # Istio's default root (mesh-config) namespace
APP_LABEL = "app"

# Kubernetes object and DNS-1123 label names (hosts, subsets, resource names).
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")  # use fullmatch: `$` passes "a\n"


def principal(mesh: Mesh, svc: Service) -> str:
    """Istio principals are SPIFFE IDs without the `spiffe://` scheme."""
    return f"{mesh.settings.trust_domain}/ns/{svc.namespace}/sa/{svc.account}"


def selector(svc: Service) -> dict:
    return {"matchLabels": {APP_LABEL: svc.name}}


def duration(ms: int) -> str:
    """Seconds with an `s` suffix: valid both as a protobuf JSON Duration and
    as a Go duration (the CRDs' CEL `duration()`), e.g. 800 -> "0.8s"."""
    whole, frac = divmod(ms, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s"


def percent(value: float) -> float:
    """A percentage as a float with no binary noise beyond what was written."""
    return float(round(value, 6))
