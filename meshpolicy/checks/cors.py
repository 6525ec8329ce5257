"""CORS: MP245 (`*` with credentials), MP246 (an origin that is not
`scheme://host[:port]`), MP247 (no origins). Browsers compare the Origin
header with each allowed origin as a whole string, so anything with a path,
a trailing `/` or no scheme never matches."""

from __future__ import annotations

import re

from ..codes import diag
from ..model.types import Mesh
from . import rule
from ._walk import cors_policies
from .controls import control_char

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ORIGIN = re.compile(
    rf"[A-Za-z][A-Za-z0-9+.-]*://(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")


@rule("MP245", "MP246", "MP247", per_file=True)
def cors_origins(mesh: Mesh):
    for c in cors_policies(mesh):
        if not c.origins:
            yield diag("MP247", "this `cors` allows no origin", c.span)
            continue
        for i, origin in enumerate(c.origins):
            span = c.spans.get(f"origins.{i}", c.span)
            if origin == "*":
                if c.credentials:
                    yield diag("MP245", "CORS allows any origin (`*`) with `credentials`: browsers refuse it", span)
            elif not control_char(origin) and not ORIGIN.fullmatch(origin):
                hint = " (no trailing `/`)" if origin.endswith("/") else ""
                yield diag("MP246", f"CORS origin `{origin}` is not `scheme://host[:port]`{hint}", span)
