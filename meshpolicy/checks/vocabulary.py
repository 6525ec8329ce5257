"""MP105 unknown HTTP methods, MP106 unknown retry conditions.

The grammar accepts any upper-case word as a method and any lower-case
word as a retry condition, so that a typo is reported here with a
suggestion instead of as a bare syntax error.
"""

from __future__ import annotations

from ..codes import diag
from ..model.types import HTTP_METHODS, RETRY_CONDITIONS, Mesh
from . import rule
from ._names import suggest
from ._walk import methods, retries

_METHODS = frozenset(HTTP_METHODS)
_CONDITIONS = frozenset(RETRY_CONDITIONS)


@rule("MP105", per_file=True)
def unknown_methods(mesh: Mesh):
    for name, span in methods(mesh):
        if name not in _METHODS:
            hint, fixes = suggest(name, HTTP_METHODS, span)
            yield diag("MP105", f"`{name}` is not an HTTP method{hint}", span, fixes=fixes)


@rule("MP106", per_file=True)
def unknown_retry_conditions(mesh: Mesh):
    for r in retries(mesh):
        for i, cond in enumerate(r.on):
            if cond not in _CONDITIONS:
                span = r.spans.get(f"on.{i}", r.span)
                hint, fixes = suggest(cond, RETRY_CONDITIONS, span)
                yield diag("MP106", f"`{cond}` is not a retry condition{hint}", span, fixes=fixes,
                           help="use one of: " + ", ".join(RETRY_CONDITIONS))
