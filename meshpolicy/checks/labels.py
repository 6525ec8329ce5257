"""MP211: version labels select pods, so they must be valid Kubernetes labels."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule
from .controls import control_char

_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _name_problem(s: str, what: str) -> str | None:
    if len(s) > 63:
        return f"{what} is {len(s)} characters long (at most 63)"
    if not _NAME.fullmatch(s):
        return f"{what} must be letters, digits, `-`, `_` and `.`, starting and ending with a letter or digit"
    return None


def key_problem(key: str) -> str | None:
    if key.count("/") > 1:
        return "a key may contain at most one `/`"
    prefix, slash, name = key.partition("/")
    if not slash:
        prefix, name = "", key
    elif not prefix:
        return "the key's prefix before `/` is empty"
    elif len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix):
        return f"the key's prefix `{prefix}` is not a DNS subdomain"
    if not name:
        return "the key's name is empty"
    return _name_problem(name, "the key's name")


def value_problem(value: str) -> str | None:
    return None if value == "" else _name_problem(value, "the value")


@rule("MP211", per_file=True)
def invalid_labels(mesh: Mesh):
    for svc in mesh.services:
        for v in svc.versions:
            span_default = v.at("name")  # `version v1` alone: the label comes from the name
            for key, value in v.labels.items():
                span = v.spans.get(f"label.{key}", span_default)
                if control_char(key) or control_char(value):
                    continue  # MP214
                problem = key_problem(key)
                if problem:
                    yield diag("MP211", f"label key `{key}` of version `{v.name}` is invalid: {problem}", span)
                problem = value_problem(value)
                if problem:
                    yield diag("MP211", f"label value `{value}` (key `{key}`) of version `{v.name}` is invalid: "
                                        f"{problem}", span)
