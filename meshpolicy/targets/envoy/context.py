"""State shared while lowering one mesh: settings, and the diagnostics,
each reported once even when many workloads meet the same construct."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...codes import diag
from ...compile import CompileOptions
from ...diagnostics import Diagnostic
from ...model.types import Mesh, Service
from ...span import Span
from ..base import refuse
from .conventions import Settings
from .scope import callable_services


@dataclass
class Ctx:
    mesh: Mesh
    options: CompileOptions
    settings: Settings
    diags: list[Diagnostic] = field(default_factory=list)
    _seen: set = field(default_factory=set)
    # Per-destination pieces every caller shares (clusters.destination_cluster).
    cache: dict = field(default_factory=dict)

    def callable_from(self, caller: Service) -> list[Service]:
        """The destinations caller may call, sorted by name: the plan's scope."""
        return callable_services(self.mesh, caller)

    def report(self, code: str, message: str, span: Span | None) -> None:
        self.record(diag(code, message, span))

    def record(self, d: Diagnostic) -> None:
        """Keep d unless the same finding was reported already."""
        key = (d.code, d.message, d.span)
        if key not in self._seen:
            self._seen.add(key)
            self.diags.append(d)

    def unsupported(self, construct: str, span: Span | None, why: str, key: str | None = None) -> bool:
        """MP701: the construct, where it was written, and the target. With
        `key` (its name in targets/constructs.py) waived in meshc.toml, MP706
        instead; True then, and the caller leaves this use out."""
        d = refuse("envoy", key or "", construct, span, why, self.options.waive if key else ())
        self.record(d)
        return d.code == "MP706"
