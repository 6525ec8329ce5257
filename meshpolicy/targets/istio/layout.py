"""Files: one per namespace plus kustomization.yaml, rendered by the pack's
templates: the layout every Kubernetes target shares (targets/kube.py)."""

from __future__ import annotations

from ...compile import Output
from ..kube import files as kube_files

TARGET = "istio"


def files(mesh_name: str, documents: list[dict]) -> list[Output]:
    return kube_files(TARGET, mesh_name, documents)
