"""The catalogue of diagnostic codes: one stable code per kind of finding.

Each stage (or target) keeps its codes in its own module here, so the catalogue is
complete without importing the stage itself (SARIF rule metadata, the
docs test and `meshc explain` read it; importing Z3 to list codes would
make every run slow).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from ..diagnostics import Severity


@dataclass(frozen=True)
class CodeInfo:
    code: str
    name: str  # kebab-case, e.g. "unknown-service"
    severity: Severity
    summary: str  # one line: what is wrong
    help: str  # one line: what to do about it
    stage: str


_catalogue: dict[str, CodeInfo] | None = None


def define(stage: str, *entries: tuple[str, str, str, str, str]) -> dict[str, CodeInfo]:
    """Build a stage's table from (code, name, severity, summary, help) rows."""
    out = {}
    for code, name, sev, summary, help_ in entries:
        out[code] = CodeInfo(code, name, Severity(sev), summary, help_, stage)
    return out


def catalogue() -> dict[str, CodeInfo]:
    global _catalogue
    if _catalogue is None:
        merged: dict[str, CodeInfo] = {}
        for mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):
            table = importlib.import_module(f"{__name__}.{mod}").CODES
            dup = merged.keys() & table.keys()
            if dup:
                raise RuntimeError(f"diagnostic codes defined twice: {sorted(dup)}")
            merged.update(table)
        _catalogue = dict(sorted(merged.items()))
    return _catalogue


def info(code: str) -> CodeInfo:
    return catalogue()[code]


# The published docs/diagnostics.md, one stable page per code. Every output that
# links a code (text, GitHub annotations, SARIF helpUri, the language server's
# codeDescription) takes its link from doc_url, so there is one scheme.
DOCS_URL = "https://meshpolicy.dev/diagnostics"


def doc_url(code: str) -> str:
    """Where a code is documented, e.g. https://meshpolicy.dev/diagnostics/MP301.
    Offline, `meshc explain CODE` prints the same text."""
    return f"{DOCS_URL}/{code}"


def diag(
    code: str,
    message: str,
    span=None,
    *,
    labels=(),
    help: str | None = None,
    notes=(),
    fixes=(),
    witness=None,
    severity: Severity | None = None,
):
    """A Diagnostic for a catalogued code; severity and help default from the catalogue."""
    from ..diagnostics import Diagnostic

    meta = info(code)
    return Diagnostic(
        code=code,
        severity=severity or meta.severity,
        message=message,
        span=span,
        labels=list(labels),
        help=meta.help if help is None else help,
        notes=list(notes),
        fixes=list(fixes),
        witness=witness,
    )
