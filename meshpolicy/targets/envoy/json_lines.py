"""Bootstraps as JSON with one listener or cluster per line.

JSON is a subset of YAML, so Envoy reads these `.yaml` files as they are,
and every string is a JSON string: no policy string can add structure. One
element per line keeps GitOps diffs readable, and it lets meshc parse every
file back with the C JSON parser: parsing YAML back cost ~30 ms a file,
most of compiling the 1000-service bench (docs/performance.md).
"""

from __future__ import annotations

import json

from ...compile.json_escape import yaml_safe

_ENC = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "))  # C encoder: no indent
_LIST_PER_LINE = ("listeners", "clusters")


def dump(cfg: dict) -> str:
    lines = ["{"]
    items = list(cfg.items())
    for i, (key, value) in enumerate(items):
        tail = "," if i < len(items) - 1 else ""
        if key == "static_resources" and isinstance(value, dict):
            lines.append(f"  {_ENC.encode(key)}: {{")
            inner = list(value.items())
            for j, (k2, v2) in enumerate(inner):
                tail2 = "," if j < len(inner) - 1 else ""
                if k2 in _LIST_PER_LINE and isinstance(v2, list) and v2:
                    lines.append(f"    {_ENC.encode(k2)}: [")
                    lines += [f"      {_ENC.encode(x)}{',' if n < len(v2) - 1 else ''}" for n, x in enumerate(v2)]
                    lines.append(f"    ]{tail2}")
                else:
                    lines.append(f"    {_ENC.encode(k2)}: {_ENC.encode(v2)}{tail2}")
            lines.append(f"  }}{tail}")
        else:
            lines.append(f"  {_ENC.encode(key)}: {_ENC.encode(value)}{tail}")
    lines.append("}")
    # Envoy reads these files as YAML: characters YAML 1.1 breaks or refuses are escaped.
    return yaml_safe("\n".join(lines) + "\n")


def load(text: str) -> dict:
    """Parse a bootstrap back: leading `#` comment lines, then JSON."""
    start = 0
    while text.startswith("#", start):
        nl = text.find("\n", start)
        start = len(text) if nl == -1 else nl + 1
    return json.loads(text[start:])


def element_lines(text: str, key: str) -> list[str] | None:
    """The JSON text of each element of static_resources[key], as dump wrote
    them (one per line); None when the text is not laid out that way."""
    start = text.find(f'\n    "{key}": [\n')
    if start == -1:
        return None
    out = []
    for line in text[start:].split("\n")[1:]:
        if line.startswith("      "):
            out.append(line[6:].rstrip(","))
        elif line.startswith("    ]"):
            return out
        else:
            return None
    return None
