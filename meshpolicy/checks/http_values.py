"""MP213: redirect targets must be a path or an absolute http(s) URL.

Control characters in header values and redirect targets (CR/LF would split
a header) are MP214's, reported once for every string (checks/controls.py).
Patterns are matched whole (fullmatch): `$` would let a trailing newline
through."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import route_rules
from .controls import control_char

# RFC 3986 characters allowed in a URI (percent-escapes included); no spaces, quotes or controls.
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_ABSOLUTE = re.compile(r"https?://[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]@]+(/.*)?", re.S)


def _redirect_problem(uri: str) -> str | None:
    if not uri:
        return "is empty"
    if control_char(uri):
        return None  # MP214
    if not _URI_CHARS.fullmatch(uri):
        bad = next(c for c in uri if not _URI_CHARS.fullmatch(c))
        return f"contains {bad!r}, which a URL cannot hold unescaped"
    if uri.startswith("/") and not uri.startswith("//"):
        return None
    if _ABSOLUTE.fullmatch(uri):
        return None
    return "is neither a path starting with `/` nor an absolute http(s) URL"


@rule("MP213", per_file=True)
def http_values(mesh: Mesh):
    for r in route_rules(mesh):
        if r.action.kind == "redirect":
            problem = _redirect_problem(r.action.uri)
            if problem:
                yield diag("MP213", f"redirect target `{r.action.uri!r}` {problem}", r.action.span)
