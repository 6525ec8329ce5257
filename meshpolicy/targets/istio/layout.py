"""Files: one per namespace plus kustomization.yaml, rendered by templates.

Each document is flattened here into lines of (indent, key, value), so the
template only places them and escapes every key and value with `j`.
"""

from __future__ import annotations

from ...compile import Output
from ...compile.templates import render
from ..yaml_lines import document_lines

TARGET = "istio"


def _order(doc: dict) -> tuple:
    return (doc["kind"], doc["metadata"]["name"])


def files(mesh_name: str, documents: list[dict]) -> list[Output]:
    by_ns: dict[str, list[dict]] = {}
    for d in documents:
        by_ns.setdefault(d["metadata"]["namespace"], []).append(d)
    outputs = []
    for ns in sorted(by_ns):
        docs = sorted(by_ns[ns], key=_order)
        text = render(TARGET, "namespace.yaml.j2", mesh=mesh_name, namespace=ns,
                      documents=[document_lines(d) for d in docs])
        outputs.append(Output(f"{ns}.yaml", text))
    outputs.append(Output("kustomization.yaml", render(TARGET, "kustomization.yaml.j2", mesh=mesh_name,
                                                        files=[o.path for o in outputs])))
    return outputs
