"""Shared helpers for checks: name suggestions."""

from __future__ import annotations

import difflib

from ..diagnostics import Fix
from ..span import Span


def suggest(name: str, choices, span: Span | None = None) -> tuple[str, list[Fix]]:
    """(" did you mean `x`?", [fix]) for the closest choice, or ("", [])."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        return "", []
    fixes = [Fix(f"Replace with `{close[0]}`", span, close[0])] if span is not None else []
    return f"; did you mean `{close[0]}`?", fixes
