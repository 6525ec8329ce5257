"""`meshc fmt`: one canonical layout for .mesh files (docs/formatting.md).

The formatter prints a file from its syntax tree, re-inserting the comments
the tokenizer set aside. A file with syntax errors is never formatted, since
its tree does not hold everything that was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..diagnostics import Diagnostic, has_errors
from ..syntax.parser import parse_text
from .comments import Lines, arrange
from .layout import render


@dataclass
class Formatted:
    """text is None when the input has syntax errors (see diagnostics)."""

    text: str | None
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.text is not None


def format_text(text: str, path: str = "<stdin>") -> Formatted:
    """The canonical layout of one file's text."""
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the program
    tree, diags = parse_text(text, path)
    if has_errors(diags):
        return Formatted(None, diags)
    entries, _ = arrange(tree.items, tree.comments, Lines(text), top=True)
    lines: list[str] = []
    render(entries, 0, lines)
    out = "\n".join(lines)
    return Formatted(out + "\n" if out else "", diags)
