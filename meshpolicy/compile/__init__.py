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


# The record of waivers for targets without a kustomization.yaml (envoy,
# meshproxy): a note next to their files, not one of them.
WAIVED_FILE = "WAIVED.txt"


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
    # Constructs the user waived ([compile.<target>] waive; targets/waivers.py):
    # compile_mesh moves them here from settings, so targets never see the key.
    waive: tuple[str, ...] = ()


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
    options, diags = _split_waivers(target, options or CompileOptions())
    if has_errors(diags):
        return [], diags
    with gc_paused():
        outputs, lowered = t.lower(mesh, options)
        diags = diags + lowered
        diags = diags + _manifest_rejections(target, mesh, options, diags)
        if options.waive and not has_errors(diags):  # a failed lowering may stop before some uses
            diags = diags + _needless_waivers(target, options.waive, diags)
        outputs = sorted(outputs, key=lambda o: o.path)
        if not has_errors(diags):
            if progress:
                progress(f"checking {len(outputs)} {target} files", 1, 2)
            diags = diags + t.validate(outputs)
        if options.waive and not has_errors(diags):
            # after validation: the record is meshc's note, not one of the target's files
            outputs = sorted(_record_waivers(outputs, diags, mesh.files), key=lambda o: o.path)
    return outputs, diags


def _manifest_rejections(target: str, mesh: Mesh, options: CompileOptions,
                         diags: list[Diagnostic]) -> list[Diagnostic]:
    """MP701 for each use of a construct the target's manifest says it
    cannot express and its lowering did not already reject at that place:
    a construct a target does not handle is refused, never dropped."""
    from ..targets.base import rejections

    flavour = options.settings.get("mesh") if isinstance(options.settings, dict) else None
    done = {d.span for d in diags if d.code in ("MP701", "MP706")}
    return [d for d in rejections(target, mesh, flavour, options.waive) if d.span not in done]


def _split_waivers(target: str, options: CompileOptions) -> tuple[CompileOptions, list[Diagnostic]]:
    """`waive` out of the target's settings into options.waive, checked again
    for callers that did not read meshc.toml through config.py."""
    from dataclasses import replace

    settings = options.settings if isinstance(options.settings, dict) else {}
    if "waive" not in settings:
        return options, []
    from ..codes import diag
    from ..targets.waivers import check

    kept, problems = check(settings["waive"], f"[compile.{target}]")
    rest = {k: v for k, v in settings.items() if k != "waive"}
    return (replace(options, settings=rest, waive=tuple(dict.fromkeys(options.waive + kept))),
            [diag(code, message) for code, _name, message in problems])


def _needless_waivers(target: str, waive: tuple[str, ...], diags: list[Diagnostic]) -> list[Diagnostic]:
    """MP709 for each waived construct no use of which was left out."""
    from ..codes import diag
    from ..targets.waivers import construct_of

    used = {construct_of(d) for d in diags if d.code == "MP706"}
    return [diag("MP709", f"`{c}` is waived for the {target} target, but no use of it needed the waiver "
                          "(the policy does not use it, or the target expresses it)") for c in waive if c not in used]


def _record_waivers(outputs: list[Output], diags: list[Diagnostic], files: list[str]) -> list[Output]:
    """The output says what was waived: comment lines after the first line
    of kustomization.yaml (where a reviewer of Kubernetes output starts),
    else a WAIVED.txt next to the other files."""
    from ..targets.waivers import record

    lines = record(diags, files)
    if not lines:
        return outputs
    head = ["Waived by meshc.toml (not in this output; meshc compile reports each use as MP706):"]
    out = [o for o in outputs if o.path != "kustomization.yaml"]
    kust = next((o for o in outputs if o.path == "kustomization.yaml"), None)
    if kust is None:
        return out + [Output(WAIVED_FILE, "\n".join(head + [f"- {x}" for x in lines]) + "\n")]
    first, _, rest = kust.content.partition("\n")
    comment = "".join(f"# {x}\n" for x in head + [f"  {x}" for x in lines])
    return out + [Output(kust.path, f"{first}\n{comment}{rest}")]


def write_atomic(outdir: Path, outputs: list[Output], *, force: bool = False) -> list[Diagnostic]:
    """Replace outdir's contents with outputs, all or nothing, and only when
    outdir is new, empty or meshc's own output (see compile/output_dir.py;
    force replaces any directory). When outdir is a symlink, the directory
    it points to is the one replaced (the link stays: it may point at a
    mounted volume or a checkout)."""
    from .output_dir import write

    return write(Path(outdir), outputs, force=force)
