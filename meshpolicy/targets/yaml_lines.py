"""Kubernetes documents as lines a template places, every key and value
escaped there with `j` (a JSON scalar), so no name or string of the policy
can add YAML structure. Shared by the Istio, Gateway API and Linkerd packs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Words YAML 1.1 readers (PyYAML among them) take as booleans or null when unquoted.
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


@dataclass(frozen=True)
class Line:
    pad: str  # indentation and list dashes only: never policy text
    key: str | None
    value: Any = None
    leaf: bool = True  # key: value on one line (else a nested block follows)

    @property
    def plain(self) -> bool:
        return self.key is not None and self.key.isidentifier() and self.key.isascii() \
            and self.key.lower() not in _YAML_WORDS


def _lines(node: Any, first: str, rest: str, out: list[Line]) -> None:
    if isinstance(node, dict):
        for i, (k, v) in enumerate(node.items()):
            pad = first if i == 0 else rest
            if isinstance(v, dict) and v:
                out.append(Line(pad, k, leaf=False))
                _lines(v, rest + "  ", rest + "  ", out)
            elif isinstance(v, list) and v:
                out.append(Line(pad, k, leaf=False))
                _items(v, rest, out)
            else:
                out.append(Line(pad, k, v))
    else:
        out.append(Line(first, None, node))


def _items(items: list, pad: str, out: list[Line]) -> None:
    for item in items:
        if isinstance(item, dict) and item:
            _lines(item, pad + "- ", pad + "  ", out)
        else:
            out.append(Line(pad + "- ", None, item))  # scalars; nested lists as JSON flow


def document_lines(doc: dict) -> list[Line]:
    out: list[Line] = []
    _lines(doc, "", "", out)
    return out
