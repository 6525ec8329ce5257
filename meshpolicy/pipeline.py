"""The front half every command shares: read -> parse -> build -> check."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .diagnostics import Diagnostic, has_errors, sorted_diagnostics
from .gc_pause import gc_paused  # noqa: F401  (re-exported for callers of the pipeline)
from .model.build import ModelCache, build
from .model.types import Mesh
from .project import MANIFEST_SUFFIXES, Project
from .syntax.nodes import SyntaxFile
from .syntax.parser import parse_text
from .triage import CHECK_STAGES, Triage

if TYPE_CHECKING:
    from .checks import CheckCache


@dataclass
class Checked:
    project: Project
    syntax: dict[str, SyntaxFile]
    mesh: Mesh
    diagnostics: list[Diagnostic] = field(default_factory=list)
    triage: Triage | None = None

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    def more(self, diags: list[Diagnostic], stages) -> list[Diagnostic]:
        """Findings of a later stage of the same run (verify, compile), after the
        same [diagnostics] settings and suppression comments as the checks."""
        if self.triage is None:
            return list(diags)
        return sorted_diagnostics(self.triage.apply(diags, stages))


# progress(step, done, total): called as work advances, for a progress bar.
Progress = Callable[[str, int, int], None]


def parse_project(project: Project, progress: Progress | None = None,
                  parser: Callable[[str, str], tuple[SyntaxFile, list[Diagnostic]]] | None = None,
                  ) -> tuple[dict[str, SyntaxFile], list[Diagnostic]]:
    """`parser(text, path)` replaces parse_text (the language server's re-parses only what changed)."""
    parse = parser or parse_text
    trees: dict[str, SyntaxFile] = {}
    diags: list[Diagnostic] = []
    total = len(project.files) + 2  # every file, then build and checks
    for i, (path, src) in enumerate(project.files.items()):
        if path.endswith(MANIFEST_SUFFIXES):  # Kubernetes YAML: read by the importer, not the parser
            continue
        if progress:
            progress(f"parsing {path}", i, total)
        tree, d = parse(src.text, path)
        origin = project.origins.get(path)
        if origin is not None and tree.origin != origin:
            tree.origin = origin
        trees[path] = tree
        diags.extend(d)
    return trees, diags


def check_project(project: Project, run_checks: bool = True, progress: Progress | None = None,
                  parser: Callable[[str, str], tuple[SyntaxFile, list[Diagnostic]]] | None = None,
                  model_cache: ModelCache | None = None, check_cache: CheckCache | None = None) -> Checked:
    """Parse, build and check a project. Checks still run after syntax errors
    (on what could be read), so one run reports as much as possible. The
    language server passes its incremental parser, a model cache and a check
    cache, so files whose text did not change are neither parsed, built nor
    checked again by the per-file rules (checks/__init__.py)."""
    from .checks import run_checks as _run

    n = len(project.files)
    with gc_paused():
        trees, diags = parse_project(project, progress, parser)
        if progress:
            progress("building the model", n, n + 2)
        mesh, bdiags = build(list(trees.values()), model_cache)
        parts = None  # the files' own models, for the check cache
        if any(path.endswith(MANIFEST_SUFFIXES) for path in project.files):
            mesh, bdiags = _imported(project, trees)
        elif model_cache is not None and check_cache is not None:
            parts = [model_cache[id(tree)][1] for tree in trees.values()]
        diags = list(project.diagnostics) + diags + bdiags
        if run_checks:
            if progress:
                progress("checking", n + 1, n + 2)
            diags.extend(_run(mesh, parts, check_cache))
        if progress:
            progress("done", n + 2, n + 2)
        # Settings and suppression comments, once, here: every command and the language server read this.
        triage = Triage(project.config, project.root, {path: tree.comments for path, tree in trees.items()})
        diags = triage.apply(_dedupe(diags), CHECK_STAGES if run_checks else CHECK_STAGES - {"check"})
    return Checked(project, trees, mesh, sorted_diagnostics(diags), triage)


def _imported(project: Project, trees: dict[str, SyntaxFile]) -> tuple[Mesh, list[Diagnostic]]:
    """The mesh that Kubernetes manifests describe (docs/import.md); every span
    points into the YAML. A mesh is either .mesh files or YAML, never both."""
    from .codes import diag
    from .importers import import_sources
    from .importers.inventory import mesh_name

    manifests = {p: s for p, s in project.files.items() if p.endswith(MANIFEST_SUFFIXES)}
    result = import_sources(manifests, mesh_name=mesh_name(project.root.name or "imported"))
    if trees:
        first = next(iter(trees))
        result.diagnostics.append(diag("MP001", f"`{next(iter(manifests))}` is Kubernetes YAML, but its mesh is "
                                                f"written in .mesh files (`{first}`, ...)",
                                       help="verify the YAML folder on its own (`meshc verify k8s/`), or import it "
                                            "with `meshc import istio`"))
    return result.mesh, result.diagnostics


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen = set()
    out = []
    for d in diags:
        key = (d.code, d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out
