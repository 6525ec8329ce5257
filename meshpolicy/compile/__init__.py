"""Lowering a checked model to a target's files, and writing them safely.

A target is a module `meshpolicy.targets.<name>` exposing TARGET, an object
with `name`, `lower(mesh, options) -> (outputs, diagnostics)` and
`validate(outputs) -> diagnostics`. What is specific to a target as data
(templates, schemas) lives in the top-level `targets/<name>/` folder.
Nothing here reaches back into parsing or checking.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..codes import diag
from ..diagnostics import Diagnostic, has_errors
from ..model.types import Mesh

TARGETS = ("istio", "envoy", "meshproxy")


@dataclass(frozen=True)
class Output:
    path: str  # relative, '/'-separated
    content: str


@dataclass
class CompileOptions:
    # Where workloads find their certificates at run time (Envoy, meshproxy).
    certs_dir: str = "/etc/meshpolicy/certs"
    # The target's table from meshc.toml ([compile.<target>]), e.g. port conventions.
    settings: dict[str, Any] = field(default_factory=dict)


class Target(Protocol):
    name: str

    def lower(self, mesh: Mesh, options: CompileOptions) -> tuple[list[Output], list[Diagnostic]]: ...

    def validate(self, outputs: list[Output]) -> list[Diagnostic]: ...


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}")
    return importlib.import_module(f"meshpolicy.targets.{name}").TARGET


def compile_mesh(mesh: Mesh, target: str, options: CompileOptions | None = None) -> tuple[list[Output], list[Diagnostic]]:
    """Lower and then validate. Outputs come back sorted by path; with any
    error diagnostic the outputs must not be written."""
    t = get_target(target)
    outputs, diags = t.lower(mesh, options or CompileOptions())
    outputs = sorted(outputs, key=lambda o: o.path)
    if not has_errors(diags):
        diags = diags + t.validate(outputs)
    return outputs, diags


def write_atomic(outdir: Path, outputs: list[Output]) -> list[Diagnostic]:
    """Replace outdir's contents with outputs, all or nothing: files are
    written to a sibling temporary directory, which then takes outdir's place.
    When outdir is a symlink, the directory it points to is the one replaced
    (the link stays: it may point at a mounted volume or a checkout)."""
    outdir = Path(outdir)
    if outdir.is_symlink():
        outdir = outdir.resolve()
    parent = outdir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.new-", dir=parent))
    except OSError as exc:
        return [diag("MP703", f"cannot create `{outdir}`: {exc.strerror or exc}")]
    try:
        for o in outputs:
            target = tmp / o.path
            if tmp.resolve() not in target.resolve().parents:
                raise OSError(f"output path {o.path!r} escapes the output directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(o.content)
        os.chmod(tmp, 0o755)
        old = None
        if outdir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=parent))
            os.rmdir(old)
            os.rename(outdir, old)
        os.rename(tmp, outdir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return [diag("MP703", f"cannot write `{outdir}`: {exc.strerror or exc}")]
    return []
