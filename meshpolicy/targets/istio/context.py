"""What every lowering step shares: the mesh, the options and the findings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...compile import CompileOptions
from ...diagnostics import Diagnostic
from ...model.types import Mesh
from ...span import Span
from ..base import refuse


@dataclass
class Lowering:
    mesh: Mesh
    options: CompileOptions
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # Indexes over the mesh that several lowering steps read (built once, on first use).
    cache: dict = field(default_factory=dict)

    def unsupported(self, construct: str, span: Span | None, why: str, key: str | None = None) -> bool:
        """MP701: name the construct, where it is (the span) and the target
        (once: a rule lowered in parts meets the same construct again).
        With `key` (its name in targets/constructs.py) waived in meshc.toml,
        MP706 instead; True then, and the caller leaves this use out."""
        d = refuse("istio", key or "", construct, span, why, self.options.waive if key else ())
        if not any(x.message == d.message and x.span == d.span for x in self.diagnostics):
            self.diagnostics.append(d)
        return d.code == "MP706"
