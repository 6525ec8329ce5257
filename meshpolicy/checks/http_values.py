"""MP213: values that end up on the wire must be valid there: header match
values without control characters (CR/LF would split headers), and
redirect targets that are a path or an absolute http(s) URL."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 3986 characters allowed in a URI (percent-escapes included); no spaces, quotes or controls.
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_ABSOLUTE = re.compile(r"^https?://[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]@]+(/.*)?$")


def _redirect_problem(uri: str) -> str | None:
    if not uri:
        return "is empty"
    if not _URI_CHARS.match(uri):
        bad = next(c for c in uri if not _URI_CHARS.match(c))
        return f"contains {bad!r}, which a URL cannot hold unescaped"
    if uri.startswith("/") and not uri.startswith("//"):
        return None
    if _ABSOLUTE.match(uri):
        return None
    return "is neither a path starting with `/` nor an absolute http(s) URL"


@rule("MP213")
def http_values(mesh: Mesh):
    for route in mesh.routes:
        for r in route.rules:
            for h in r.match.headers:
                if h.value is not None and h.kind in ("exact", "prefix") and _CONTROL.search(h.value):
                    yield diag("MP213", f"the value for header `{h.name}` contains a control character", h.span)
            if r.action.kind == "redirect":
                problem = _redirect_problem(r.action.uri)
                if problem:
                    yield diag("MP213", f"redirect target `{r.action.uri!r}` {problem}", r.action.span)
