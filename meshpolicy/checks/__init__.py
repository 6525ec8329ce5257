"""Checks on the typed model: one rule a module, each with stable codes.

A rule module defines functions decorated with `@rule("MPxxx", ...)` that
take the Mesh and yield Diagnostics. Rules never see syntax; they read the
model and its spans. `run_checks` imports every module in this package.

Scope, for the language server (which re-checks on every keystroke): a rule
is whole-mesh unless it says otherwise. `per_file=True` promises that its
findings about a file depend only on that file's own elements, so running it
on each file's model (`FileModel.mesh`) gives, file by file, what running it
on the whole mesh gives. A per-file rule may also read a summary of the
whole mesh, `context(mesh)` (hashable, cheap): it is then called as
`fn(mesh, context(mesh))`, and a file's findings stay valid while its model
and that summary are the same. When the summary is itself gathered file by
file, `merge` says how: `context(mesh) == merge([context(f) for f in files])`,
and the language server keeps each file's part. `CheckCache` keeps those
findings per file, so an edit re-runs the per-file rules on the edited file
only.
tests/test_lsp_incremental.py checks that incremental and full runs agree.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from ..diagnostics import Diagnostic
from ..model.types import Mesh

CheckFn = Callable[..., Iterable[Diagnostic]]
Context = Callable[[Mesh], Hashable]
_RULES: list[tuple[tuple[str, ...], CheckFn]] = []
_loaded = False


@dataclass(frozen=True)
class Scope:
    per_file: bool = False
    context: Context | None = None
    merge: Callable[[list], Hashable] | None = None


_SCOPES: dict[CheckFn, Scope] = {}


def rule(*codes: str, per_file: bool = False, context: Context | None = None,
         merge: Callable[[list], Hashable] | None = None) -> Callable[[CheckFn], CheckFn]:
    """Register a check that may report the given codes (scope: see the module doc)."""

    def deco(fn: CheckFn) -> CheckFn:
        _RULES.append((codes, fn))
        _SCOPES[fn] = Scope(per_file, context, merge)
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


def scope(fn: CheckFn) -> Scope:
    return _SCOPES[fn]


def _call(fn: CheckFn, mesh: Mesh, sc: Scope, ctx: Hashable = None) -> list[Diagnostic]:
    return list(fn(mesh, ctx) if sc.context is not None else fn(mesh))


def run_checks(mesh: Mesh, parts: list | None = None, cache: CheckCache | None = None) -> list[Diagnostic]:
    """Every rule's findings on mesh. With `parts` (the FileModels the mesh
    was built from, in order) and a cache, per-file rules run only on the
    files whose model (or context) changed since the cache last saw them."""
    if parts is None or cache is None:
        out: list[Diagnostic] = []
        for _codes, fn in rules():
            sc = _SCOPES[fn]
            out.extend(_call(fn, mesh, sc, sc.context(mesh) if sc.context is not None else None))
        return out
    return cache.run(mesh, parts)


class CheckCache:
    """Per-file findings of the per-file rules, keyed by the file's model
    object (a file whose text did not change keeps its FileModel, model/build.py).
    Use from one thread at a time."""

    def __init__(self) -> None:
        # id(FileModel) -> (the FileModel, {rule index: (context, findings),
        # (rule index, "context"): the file's part of a merged context})
        self._files: dict[int, tuple[object, dict]] = {}
        self.ran = 0  # per-file rule runs in the last run (for tests)

    def run(self, mesh: Mesh, parts: list) -> list[Diagnostic]:
        out: list[Diagnostic] = []
        fresh: dict[int, tuple[object, dict]] = {}
        kept = []
        for fm in parts:
            got = self._files.get(id(fm))
            entry = got if got is not None and got[0] is fm else (fm, {})
            fresh[id(fm)] = entry
            kept.append(entry)
        self.ran = 0
        for i, (_codes, fn) in enumerate(rules()):
            sc = _SCOPES[fn]
            if sc.context is None:
                ctx = None
            elif sc.merge is None:
                ctx = sc.context(mesh)
            else:
                ctx = sc.merge([_part(results, (i, "context"), sc.context, fm.mesh) for fm, results in kept])
            if not sc.per_file:
                out.extend(_call(fn, mesh, sc, ctx))
                continue
            # Findings come file by file: the order within each file is the
            # whole-mesh run's, and diagnostics are sorted by file afterwards.
            for fm, results in kept:
                res = results.get(i)
                if res is None or res[0] != ctx:
                    res = results[i] = (ctx, _call(fn, fm.mesh, sc, ctx))
                    self.ran += 1
                out.extend(res[1])
        self._files = fresh  # only the files of this mesh
        return out

    def forget(self, models: Iterable[object]) -> None:
        for fm in models:
            self._files.pop(id(fm), None)


def _part(results: dict, key, fn: Callable, mesh: Mesh):
    got = results.get(key)
    if got is None:
        got = results[key] = fn(mesh)
    return got
