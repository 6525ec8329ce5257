"""Which files form the mesh of an open document, and one analysis of it.

The root rule is the command line's (meshpolicy.project): the nearest
directory above with a meshc.toml, else the document's own directory. Open
buffers override the files on disk, so diagnostics follow unsaved edits in
every file of the mesh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..diagnostics import Diagnostic, has_errors
from ..model.build import ModelCache
from ..pipeline import Checked, check_project, gc_paused
from ..project import Project, find_root, load_config, mesh_files, read_source
from ..span import SourceFile
from .incremental import IncrementalParser
from .index import SymbolIndex

log = logging.getLogger("meshc.lsp")


def root_of(key: str) -> str:
    """The mesh a document belongs to; an unsaved buffer (not a file) is a mesh of its own."""
    if not Path(key).is_absolute():
        return key
    return str(find_root(Path(key)))


def _buffer_text(text: str) -> str:
    """An open buffer as the checker reads it. A byte-order mark is not part
    of the program (as for files on disk); it becomes a space rather than
    going, so that columns stay the client's."""
    return " " + text[1:] if text.startswith("\ufeff") else text


def build_project(root: str, buffers: dict[str, str]) -> Project:
    """The mesh at `root`: its files on disk, with open buffers in their place."""
    buffers = {k: _buffer_text(v) for k, v in buffers.items()}
    if not Path(root).is_absolute():
        project = Project(Path.cwd())
        project.files[root] = SourceFile(root, buffers.get(root, ""))
        return project
    rootp = Path(root)
    config, diags = load_config(rootp)
    project = Project(rootp, config=config, diagnostics=diags)
    mine = {k: v for k, v in buffers.items() if Path(k).is_absolute() and root_of(k) == root}
    for p in mesh_files(rootp):
        key = str(p.resolve())
        if key in mine:
            project.files[key] = SourceFile(key, mine.pop(key))
            continue
        src, err = read_source(p, key)
        if err:
            project.diagnostics.append(err)
        else:
            project.files[key] = src
    for key in sorted(mine):  # open but not (yet) on disk, or in a hidden folder
        project.files[key] = SourceFile(key, mine[key])
    return project


@dataclass
class Analysis:
    """One parse-and-check of a mesh, plus what the verifier said (if it ran)."""

    root: str
    generation: int
    checked: Checked
    seconds: float
    verified: list[Diagnostic] | None = None
    verify_error: str | None = None
    files: list[str] = field(default_factory=list)

    @cached_property
    def index(self) -> SymbolIndex:
        """Built on the first request that needs it, not on every edit."""
        with gc_paused():
            return SymbolIndex(self.checked.mesh)

    @property
    def sources(self) -> dict[str, SourceFile]:
        return self.checked.project.files

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.checked.diagnostics + (self.verified or [])


class ParseCache:
    """One IncrementalParser per file, and the model each file built; use
    from one thread at a time."""

    def __init__(self) -> None:
        self.parsers: dict[str, IncrementalParser] = {}
        self.models: ModelCache = {}

    def __call__(self, text: str, path: str):
        parser = self.parsers.get(path)
        if parser is None:
            parser = self.parsers[path] = IncrementalParser(path)
        return parser.parse(text)


def analyse(root: str, buffers: dict[str, str], generation: int, cache: ParseCache | None = None) -> Analysis:
    t0 = time.perf_counter()
    with gc_paused():  # a full collection over every tree would cost more than the analysis
        project = build_project(root, buffers)
        checked = check_project(project, parser=cache, model_cache=cache.models if cache is not None else None)
    return Analysis(root, generation, checked, time.perf_counter() - t0, files=list(project.files))


class Cancelled(Exception):
    """A newer edit made a verifier run stale; it stopped early."""


def verify(analysis: Analysis, stale: Callable[[], bool] = lambda: False) -> list[Diagnostic] | None:
    """Verifier findings for a mesh that checked clean (None: not run).
    `stale()` is asked between destinations; once it is true the run stops
    with Cancelled, so a long verification never holds up the next one."""
    if has_errors(analysis.checked.diagnostics):
        return None
    from ..verify import run

    def progress(_step: str, _done: int, _total: int) -> None:
        if stale():
            raise Cancelled

    return list(run(analysis.checked.mesh, analysis.checked.project.config, progress=progress))
