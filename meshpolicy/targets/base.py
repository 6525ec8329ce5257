"""What every target shares: the one MP701 wording, the pack manifest, and
the one place where a generator target rejects what it cannot express
(or, when the user waived it, reports it as not lowered: waivers.py).

A pack is the top-level folder targets/<name>/: its manifest.yaml (name,
summary, output layout, settings, and per construct of
meshpolicy/targets/constructs.py whether the target expresses it) and its
templates. A generator target (GeneratorTarget) turns the resolved plan
into Kubernetes documents; the base rejects every construct the manifest
says it cannot express (for the chosen mesh flavour) before generating, and
lays the documents out through the pack's template.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..codes import diag
from ..diagnostics import Diagnostic
from ..span import Span
from .constructs import CONSTRUCTS, constructs_used

SUPPORT = ("yes", "partial", "flavour", "no")


def cannot_express(target: str, construct: str, span: Span | None, why: str, help: str | None = None) -> Diagnostic:
    """MP701, worded once for every target: the target, the construct as
    written, where, and why."""
    return diag("MP701", f"the {target} target cannot express {construct}: {why}", span, help=help)


def refuse(target: str, key: str, construct: str, span: Span | None, why: str, waive=()) -> Diagnostic:
    """What a target says about a use of construct `key` it cannot lower
    (a partial construct's value): MP701, or MP706 when `key` is waived.
    Either way the caller leaves that use out of its output."""
    if key in waive:
        from .waivers import waived

        return waived(target, key, construct, span)
    return cannot_express(target, construct, span, why)


@dataclass(frozen=True)
class Support:
    support: str  # one of SUPPORT
    why: str = ""  # for partial, flavour and no: what cannot be expressed, and why
    flavours: tuple[str, ...] = ()  # for flavour: the mesh flavours that carry it

    def expressible(self, flavour: str | None) -> bool:
        if self.support == "flavour":
            return flavour in self.flavours
        return self.support != "no"


@dataclass(frozen=True)
class Manifest:
    name: str
    summary: str
    output: str  # the output layout, one sentence
    constructs: dict[str, Support]
    settings: dict[str, Any] = field(default_factory=dict)  # [compile.<name>] keys -> description
    resources: tuple[str, ...] = ()  # apiVersion/kind of every document it may write


def _support(name: str, raw) -> Support:
    if raw is True or raw == "yes":  # YAML reads a bare `yes` as true
        return Support("yes")
    support = {True: "yes", False: "no"}.get(raw.get("support"), raw.get("support")) if isinstance(raw, dict) else None
    if support not in SUPPORT:
        raise ValueError(f"construct {name!r}: expected one of {SUPPORT} or a table with `support`")
    return Support(support, raw.get("why", ""), tuple(raw.get("flavours", ())))


@lru_cache(maxsize=None)
def manifest(target: str) -> Manifest:
    """targets/<target>/manifest.yaml, checked: every construct listed once, no unknown ones."""
    import yaml

    from ..resources import target_dir

    raw = yaml.safe_load((target_dir(target) / "manifest.yaml").read_text(encoding="utf-8"))
    cons = raw.get("constructs") or {}
    unknown = sorted(set(cons) - set(CONSTRUCTS))
    missing = [c for c in CONSTRUCTS if c not in cons]
    if unknown or missing:
        raise ValueError(f"targets/{target}/manifest.yaml: unknown constructs {unknown}, missing {missing}")
    out = {}
    for name, value in cons.items():
        s = _support(name, value)
        if s.support != "yes" and not s.why:
            raise ValueError(f"targets/{target}/manifest.yaml: `{name}` is {s.support} but says no `why`")
        out[name] = s
    return Manifest(raw["name"], raw["summary"], raw["output"], out, raw.get("settings") or {},
                    tuple(raw.get("resources") or ()))


def rejections(target: str, mesh, flavour: str | None = None, waive=()) -> list[Diagnostic]:
    """MP701 for each use of a construct the manifest says the target (with
    this mesh flavour) cannot express; one per construct and place. A
    waived construct (`[compile.<target>] waive`, targets/waivers.py) is
    MP706 instead, a warning per use: the target does not lower it."""
    from .waivers import waived

    m = manifest(target)
    out, seen = [], set()
    for use in constructs_used(mesh):
        s = m.constructs[use.construct]
        if s.expressible(flavour):
            continue
        key = (use.construct, use.span)
        if key in seen:
            continue
        seen.add(key)
        if use.construct in waive:
            out.append(waived(target, use.construct, use.what, use.span))
            continue
        why = s.why
        help_ = None
        if s.support == "flavour":
            help_ = (f"set [compile.{target}] mesh = " + " or ".join(f'"{f}"' for f in s.flavours)
                     + " in meshc.toml if the cluster runs that mesh, or remove the construct")
        out.append(cannot_express(target, use.what, use.span, why, help_))
    return out
