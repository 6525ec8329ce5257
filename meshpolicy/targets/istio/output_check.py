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


def _check_file(item: tuple[str, str]) -> list[str]:
    """Problems of one namespace file (everything but the kustomization)."""
    path, content = item
    try:
        docs = [d for d in yaml.load_all(content, Loader=_LOADER) if d is not None]
    except yaml.YAMLError as exc:
        return [f"`{path}` is not valid YAML: {exc}"]
    out = []
    for d in docs:
        out += [f"`{path}`: {problem}" for problem in check_document(d)]
        ns = d.get("metadata", {}).get("namespace") if isinstance(d, dict) else None
        if ns is not None and path != f"{ns}.yaml":
            out.append(f"`{path}` holds a resource of namespace `{ns}`")
    return out


PARALLEL_BYTES = 500_000


def check_outputs(outputs: list[Output]) -> list[Diagnostic]:
    from ...compile.parallel import map_files

    diags = []
    for o in outputs:
        if o.path != "kustomization.yaml":
            continue
        try:
            docs = [d for d in yaml.load_all(o.content, Loader=_LOADER) if d is not None]
        except yaml.YAMLError as exc:
            diags.append(diag("MP702", f"`{o.path}` is not valid YAML: {exc}"))
            continue
        files = {x.path for x in outputs} - {o.path}
        if len(docs) != 1 or sorted(docs[0].get("resources", [])) != sorted(files):
            diags.append(diag("MP702", "kustomization.yaml does not list exactly the generated files"))
    items = [(o.path, o.content) for o in outputs if o.path != "kustomization.yaml"]
    # Largest first, so the pool's workers finish together.
    items.sort(key=lambda x: -len(x[1]))
    # Parsing YAML back costs about 30x what JSON does per byte, so the pool
    # pays off at a smaller total than map_files' default.
    problems = map_files(_check_file, items, lambda x: len(x[1]), min_total=PARALLEL_BYTES)
    order = {o.path: i for i, o in enumerate(outputs)}
    problems.sort(key=lambda m: order.get(m[1:].split("`", 1)[0], 0))
    return diags + [diag("MP702", m) for m in problems]
