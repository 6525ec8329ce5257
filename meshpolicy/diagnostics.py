"""The one diagnostic type that every stage reports and every output renders."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from .span import Span


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True, slots=True)
class Label:
    """A secondary span with a short note, e.g. "first declared here"."""

    span: Span
    message: str


@dataclass(frozen=True, slots=True)
class Fix:
    """A machine-applicable replacement (editor code actions use these)."""

    title: str
    span: Span
    replacement: str


@dataclass(slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span | None = None
    labels: list[Label] = field(default_factory=list)
    help: str | None = None
    notes: list[str] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    # A concrete request (or call path) that shows a verifier finding.
    witness: dict[str, Any] | None = None
    # Set when a `# meshc: ignore[CODE] reason` comment suppresses this finding: the
    # reason. Suppressed findings count for nothing; SARIF still lists them, marked.
    suppressed: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR and self.suppressed is None

    def sort_key(self) -> tuple:
        s = self.span
        return (s.file if s else "", s.start if s else -1, self.code, self.message)


def has_errors(diags: list[Diagnostic]) -> bool:
    return any(d.is_error for d in diags)


def shown(diags: list[Diagnostic]) -> list[Diagnostic]:
    """The findings a user sees: all but the suppressed ones."""
    return [d for d in diags if d.suppressed is None]


def sorted_diagnostics(diags: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=Diagnostic.sort_key)
