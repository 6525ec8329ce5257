"""What every lowering step shares: the mesh, the options and the findings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...compile import CompileOptions
from ...diagnostics import Diagnostic
from ...model.types import Mesh
from ...span import Span
from ..base import cannot_express


@dataclass
class Lowering:
    mesh: Mesh
    options: CompileOptions
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def unsupported(self, construct: str, span: Span | None, why: str) -> None:
        """MP701: name the construct, where it is (the span) and the target
        (once: a rule lowered in parts meets the same construct again)."""
        d = cannot_express("istio", construct, span, why)
        if not any(x.message == d.message and x.span == d.span for x in self.diagnostics):
            self.diagnostics.append(d)
