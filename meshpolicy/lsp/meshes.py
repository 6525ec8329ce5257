"""Which files form the mesh of an open document, and one analysis of it.

The root rule is the command line's (meshpolicy.project): the nearest
directory above with a meshc.toml and every .mesh file below it; without
one, the .mesh files beside the document (not below it), or the document
alone when its directory holds more than ROOTLESS_LIMIT of them. Open
buffers override the files on disk, so diagnostics follow unsaved edits in
every file of the mesh. A file over MAX_FILE_BYTES is not parsed, and its
mesh is not checked (a 5 MB file took 844 MB to analyse): the file gets one
diagnostic saying so.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..checks import CheckCache
from ..codes import diag
from ..diagnostics import Diagnostic, has_errors, shown
from ..model.build import ModelCache, build
from ..pipeline import Checked, check_project, gc_paused
from ..project import (MARKER, Project, find_root, load_config, mesh_files, read_source, rootless_siblings,
                       too_many_rootless)
from ..span import SourceFile, Span
from . import MAX_FILE_BYTES
from .incremental import IncrementalParser
from .index import SymbolIndex

log = logging.getLogger("meshc.lsp")


def root_of(key: str) -> str:
    """The mesh a document belongs to: its root directory, or the document
    itself when it is a mesh of its own (an unsaved buffer, not a file; a
    root-less file among too many others)."""
    if not Path(key).is_absolute():
        return key
    root = find_root(Path(key))
    if not (root / MARKER).is_file() and rootless_siblings(root) is None:
        return key
    return str(root)


def _buffer_text(text: str) -> str:
    """An open buffer as the checker reads it. A byte-order mark is not part
    of the program (as for files on disk); it becomes a space rather than
    going, so that columns stay the client's."""
    return " " + text[1:] if text.startswith("\ufeff") else text


def _too_large(key: str, size: int) -> Diagnostic:
    return diag("MP001", f"this file is {size / 1e6:.1f} MB; the language server checks files up to "
                         f"{MAX_FILE_BYTES / 1e6:g} MB, so its mesh is not checked here",
                Span(key, 1, 1, 1, 1, 0, 0), help="run `meshc check` on it, or split it into smaller files")


# A file read from disk, by its path: what os.stat said then, and its text.
DiskCache = dict[str, tuple[tuple[int, int, int, int], SourceFile]]


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """Changes whenever the file's content may have: rewritten in place (mtime,
    ctime, size) or replaced by another file (inode), as git's index tells."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def build_project(root: str, buffers: dict[str, str], disk: DiskCache | None = None
                  ) -> tuple[Project, list[Diagnostic]]:
    """The mesh at `root`: its files on disk, with open buffers in their
    place; and a diagnostic for each file too large to analyse (such a file
    is in the project, empty). With `disk`, a file whose stat is what it
    was keeps the SourceFile read then: an edit no longer re-reads and
    re-indexes the other 52 files of the bench mesh (1.7 of the 4 ms this
    took per edit)."""
    buffers = {k: _buffer_text(v) for k, v in buffers.items()}
    too_large: list[Diagnostic] = []

    def add(project: Project, key: str, text: str) -> None:
        if len(text) > MAX_FILE_BYTES:  # characters: never more than its bytes
            too_large.append(_too_large(key, len(text.encode("utf-8", "surrogatepass"))))
            text = ""
        project.files[key] = SourceFile(key, text)

    if not Path(root).is_absolute():
        project = Project(Path.cwd())
        add(project, root, buffers.get(root, ""))
        return project, too_large
    rootp = Path(root)
    if rootp.is_dir():
        config, diags = load_config(rootp)
        paths = mesh_files(rootp) if (rootp / MARKER).is_file() else (rootless_siblings(rootp) or [])
    else:  # a root-less file with too many others beside it: a mesh of its own
        config, diags = {}, [too_many_rootless(rootp.parent, rootp.name)]
        paths = [rootp]
    project = Project(rootp, config=config, diagnostics=diags)
    mine = {k: v for k, v in buffers.items() if Path(k).is_absolute() and root_of(k) == root}
    for p in paths:
        key = str(p.resolve())
        if key in mine:
            add(project, key, mine.pop(key))
            continue
        try:
            st = os.stat(p)
            size, sig = st.st_size, _signature(st)
        except OSError:
            size, sig = 0, None  # read_source says what is wrong
        if size > MAX_FILE_BYTES:
            too_large.append(_too_large(key, size))
            project.files[key] = SourceFile(key, "")
            continue
        known = disk.get(key) if disk is not None and sig is not None else None
        if known is not None and known[0] == sig:
            project.files[key] = known[1]
            continue
        src, err = read_source(p, key)
        if err:
            project.diagnostics.append(err)
        elif src is not None:
            project.files[key] = src
            if disk is not None and sig is not None:
                disk[key] = (sig, src)
    for key in sorted(mine):  # open but not (yet) on disk, or in a hidden folder
        add(project, key, mine[key])
    return project, too_large


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
        return shown(self.checked.diagnostics + (self.verified or []))  # suppressed findings are not published


class ParseCache:
    """One IncrementalParser per file, the model each file built, and the
    per-file rules' findings on it; use from one thread at a time."""

    def __init__(self) -> None:
        self.parsers: dict[str, IncrementalParser] = {}
        self.models: ModelCache = {}
        self.checks = CheckCache()
        self.disk: DiskCache = {}

    def __call__(self, text: str, path: str):
        parser = self.parsers.get(path)
        if parser is None:
            parser = self.parsers[path] = IncrementalParser(path)
        return parser.parse(text)

    def forget(self, paths) -> None:
        """Drop what was kept for these files (their mesh was closed, or they are too large)."""
        paths = set(paths)
        for p in paths:
            self.parsers.pop(p, None)
            self.disk.pop(p, None)
        gone = [k for k, (sf, _) in self.models.items() if sf.path in paths]
        self.checks.forget(self.models[k][1] for k in gone)
        for k in gone:
            del self.models[k]


def analyse(root: str, buffers: dict[str, str], generation: int, cache: ParseCache | None = None) -> Analysis:
    t0 = time.perf_counter()
    with gc_paused():  # a full collection over every tree would cost more than the analysis
        project, too_large = build_project(root, buffers, cache.disk if cache is not None else None)
        if too_large:  # refused: nothing of the mesh is parsed, the large files say why
            if cache is not None:
                cache.forget(d.span.file for d in too_large)
            checked = Checked(project, {}, build([])[0], project.diagnostics + too_large)
        else:
            checked = check_project(project, parser=cache, model_cache=cache.models if cache is not None else None,
                                    check_cache=cache.checks if cache is not None else None)
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

    from ..triage import VERIFY_STAGES

    return analysis.checked.more(run(analysis.checked.mesh, analysis.checked.project.config, progress=progress),
                                 VERIFY_STAGES)
