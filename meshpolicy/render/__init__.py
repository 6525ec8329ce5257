"""Diagnostics out: one renderer per output format, all from the same Diagnostic."""

from __future__ import annotations

import importlib
from typing import TextIO

from ..diagnostics import Diagnostic
from ..span import SourceFile

FORMATS = ("text", "json", "sarif", "github")


def render(fmt: str, diags: list[Diagnostic], sources: dict[str, SourceFile], out: TextIO, **opts) -> None:
    """Write diags in `fmt` to out. `sources` maps display paths to their text
    (the text renderer quotes source lines; SARIF embeds snippets)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    mod = importlib.import_module(f"{__name__}.{fmt}_format")
    mod.render(diags, sources, out, **opts)
