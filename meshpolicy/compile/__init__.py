"""Lowering a checked model to a target's files, and writing them safely.

A target is a module `meshpolicy.targets.<name>` exposing TARGET, an object
with `name`, `lower(mesh, options) -> (outputs, diagnostics)` and
`validate(outputs) -> diagnostics`. What is specific to a target as data
(templates, schemas) lives in the top-level `targets/<name>/` folder.
Nothing here reaches back into parsing or checking.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..diagnostics import Diagnostic, has_errors
from ..model.types import Mesh
from ..targets import REGISTRY, TARGETS  # the target registry (names -> modules)


@dataclass(frozen=True)
class Output:
    path: str  # relative, '/'-separated
    content: str


@dataclass
class CompileOptions:
    # Where workloads find their certificates at run time (Envoy, meshproxy).
    certs_dir: str = "/etc/meshpolicy/certs"
    # Envoy: serve workload certificates through file-based SDS documents in
    # this (absolute) directory, so rotations apply without a restart
    # (targets/envoy/sds.py). None: static certificate files.
    sds_dir: str | None = None
    # The target's table from meshc.toml ([compile.<target>]), e.g. port conventions.
    settings: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    name: str

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]: ...

    def validate(self, outputs: list[Output]) -> list[Diagnostic]: ...


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}")
    return importlib.import_module(f"meshpolicy.targets.{REGISTRY[name]}").TARGET


def compile_mesh(mesh: Mesh, target: str, options: CompileOptions | None = None,
                 progress=None) -> tuple[list[Output], list[Diagnostic]]:
    """Lower and then validate. Outputs come back sorted by path; with any
    error diagnostic the outputs must not be written. `progress(step, done,
    total)`, when given, hears of each phase (a progress bar)."""
    from ..gc_pause import gc_paused

    t = get_target(target)
    if progress:
        progress(f"compiling to {target}", 0, 2)
    # Lowering and checking build millions of small, mostly acyclic objects
    # while the whole model stays alive: the cyclic GC would rescan it again
    # and again (istio at 1000 services: 22% of compile CPU, gateway-api 68%).
    options = options or CompileOptions()
    with gc_paused():
        outputs, diags = t.lower(mesh, options)
        diags = diags + _manifest_rejections(target, mesh, options, diags)
        outputs = sorted(outputs, key=lambda o: o.path)
        if not has_errors(diags):
            if progress:
                progress(f"checking {len(outputs)} {target} files", 1, 2)
            diags = diags + t.validate(outputs)
    return outputs, diags


def _manifest_rejections(target: str, mesh: Mesh, options: CompileOptions,
                         diags: list[Diagnostic]) -> list[Diagnostic]:
    """MP701 for each use of a construct the target's manifest says it
    cannot express and its lowering did not already reject at that place:
    a construct a target does not handle is refused, never dropped."""
    from ..targets.base import rejections

    flavour = options.settings.get("mesh") if isinstance(options.settings, dict) else None
    done = {d.span for d in diags if d.code == "MP701"}
    return [d for d in rejections(target, mesh, flavour) if d.span not in done]


def write_atomic(outdir: Path, outputs: list[Output], *, force: bool = False) -> list[Diagnostic]:
    """Replace outdir's contents with outputs, all or nothing, and only when
    outdir is new, empty or meshc's own output (see compile/output_dir.py;
    force replaces any directory). When outdir is a symlink, the directory
    it points to is the one replaced (the link stays: it may point at a
    mounted volume or a checkout)."""
    from .output_dir import write

    return write(Path(outdir), outputs, force=force)
