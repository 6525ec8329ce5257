"""Runtime validation of rendered output: parse it back and check each
document against strict models of the resources we emit (crd_models.py)."""

from __future__ import annotations

import yaml
from pydantic import ValidationError

from ...codes import diag
from ...compile import Output
from ...diagnostics import Diagnostic
from .crd_models import MODELS

# libyaml's safe loader when PyYAML was built with it (same documents, ~20x faster).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _where(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"])


def check_document(doc) -> list[str]:
    """Problems with one document, as short strings; [] when it is valid."""
    if not isinstance(doc, dict):
        return ["a document is not a mapping"]
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        return [f"unexpected resource {doc.get('apiVersion')}/{doc.get('kind')}"]
    try:
        model.model_validate(doc, strict=False)
    except ValidationError as exc:
        return [f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}: {_where(e)}: {e['msg']}"
                for e in exc.errors()]
    return []


def check_outputs(outputs: list[Output]) -> list[Diagnostic]:
    diags = []
    for o in outputs:
        try:
            docs = [d for d in yaml.load_all(o.content, Loader=_LOADER) if d is not None]
        except yaml.YAMLError as exc:
            diags.append(diag("MP702", f"`{o.path}` is not valid YAML: {exc}"))
            continue
        if o.path == "kustomization.yaml":
            files = {x.path for x in outputs} - {o.path}
            if len(docs) != 1 or sorted(docs[0].get("resources", [])) != sorted(files):
                diags.append(diag("MP702", "kustomization.yaml does not list exactly the generated files"))
            continue
        for d in docs:
            for problem in check_document(d):
                diags.append(diag("MP702", f"`{o.path}`: {problem}"))
            ns = d.get("metadata", {}).get("namespace") if isinstance(d, dict) else None
            if ns is not None and o.path != f"{ns}.yaml":
                diags.append(diag("MP702", f"`{o.path}` holds a resource of namespace `{ns}`"))
    return diags
