"""MP209: path patterns must be able to match a request path."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh, PathPattern
from . import rule
from ._walk import paths
from .controls import control_char


# The common case, checked in one step: a plain path, or globs made only of whole segments.
_PLAIN = re.compile(r"(/([^/?#*\s]*|\*|\*\*))+")
_SPACE = re.compile(r"\s")


def path_problem(p: PathPattern) -> str | None:
    """Why `p` is malformed, or None. Regexes are MP204's business."""
    if p.kind == "regex" or control_char(p.value):
        return None  # MP204's, MP214's
    v = p.value
    if _PLAIN.fullmatch(v) and (p.kind == "glob" or "*" not in v):
        return None
    if not v.startswith("/"):
        return "does not start with `/`"
    for ch, why in (("?", "the query string is not part of the path"),
                    ("#", "the fragment is never sent to the server")):
        if ch in v:
            return f"contains `{ch}`: {why}"
    if _SPACE.search(v):
        return "contains white space"
    if p.kind == "glob":
        for seg in v.split("/"):
            if "*" in seg and seg not in ("*", "**"):
                return (f"has `*` inside the segment `{seg}`; `*` and `**` must be whole segments "
                        "(use `regex` for partial matches)")
    return None


@rule("MP209", per_file=True)
def invalid_paths(mesh: Mesh):
    for p in paths(mesh):
        problem = path_problem(p)
        if problem:
            yield diag("MP209", f"path `{p.value}` {problem}", p.span)
