"""Checks on the typed model: one rule a module, each with stable codes.

A rule module defines functions decorated with `@rule("MPxxx", ...)` that
take the Mesh and yield Diagnostics. Rules never see syntax; they read the
model and its spans. `run_checks` imports every module in this package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable

from ..diagnostics import Diagnostic
from ..model.types import Mesh

CheckFn = Callable[[Mesh], Iterable[Diagnostic]]
_RULES: list[tuple[tuple[str, ...], CheckFn]] = []
_loaded = False


def rule(*codes: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check that may report the given codes."""

    def deco(fn: CheckFn) -> CheckFn:
        _RULES.append((codes, fn))
        return fn

    return deco


def rules() -> list[tuple[tuple[str, ...], CheckFn]]:
    global _loaded
    if not _loaded:
        for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{__name__}.{mod.name}")
        _loaded = True
    return _RULES


def run_checks(mesh: Mesh) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for _codes, fn in rules():
        out.extend(fn(mesh))
    return out
