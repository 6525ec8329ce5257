"""Verifier findings carried across edits.

The verifier runs only once typing pauses, so between an edit and its next
run the last findings would vanish and come back ~400 ms later (a flicker
on every keystroke). Instead they stay, their ranges moved by each edit the
client sends, until the next run replaces them; a finding whose range an
edit touched is dropped (it may no longer hold). Ranges are in the client's
position encoding, as the edits are.
"""

from __future__ import annotations

import re

import attrs
from lsprotocol import types as lsp

_NEWLINE = re.compile(r"\r\n|\r|\n")  # LSP counts all three as line ends


def _units(text: str, encoding: str) -> int:
    if encoding == lsp.PositionEncodingKind.Utf8:
        return len(text.encode("utf-8", "surrogatepass"))
    if encoding == lsp.PositionEncodingKind.Utf32:
        return len(text)
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _key(p: lsp.Position) -> tuple[int, int]:
    return (p.line, p.character)


class Edit:
    """One content change: the range it replaced and where its text ends."""

    def __init__(self, rng: lsp.Range, text: str, encoding: str) -> None:
        self.start, self.end = rng.start, rng.end
        lines = _NEWLINE.split(text)
        if len(lines) == 1:
            self.new_end = lsp.Position(rng.start.line, rng.start.character + _units(text, encoding))
        else:
            self.new_end = lsp.Position(rng.start.line + len(lines) - 1, _units(lines[-1], encoding))

    def touches(self, r: lsp.Range) -> bool:
        """The edit replaced or inserted text inside r (at its very edges is outside)."""
        return _key(r.start) < _key(self.end) and _key(self.start) < _key(r.end) or (
            _key(self.start) == _key(self.end) and _key(r.start) < _key(self.start) < _key(r.end))

    def move(self, p: lsp.Position) -> lsp.Position:
        if _key(p) < _key(self.end):
            return p  # before the edit (touching ranges were dropped)
        if p.line == self.end.line:
            return lsp.Position(self.new_end.line, self.new_end.character + p.character - self.end.character)
        return lsp.Position(p.line + self.new_end.line - self.end.line, p.character)

    def move_range(self, r: lsp.Range) -> lsp.Range:
        return lsp.Range(self.move(r.start), self.move(r.end))


def carry(diags: list[lsp.Diagnostic], file_uri: str, edited_uri: str, edit: Edit) -> list[lsp.Diagnostic]:
    """The findings published for file_uri after an edit of edited_uri: in
    the edited file, moved or (when touched) dropped; elsewhere, only their
    related spans in the edited file move (or go, when touched)."""
    out = []
    for d in diags:
        rng = d.range
        if file_uri == edited_uri:
            if edit.touches(rng):
                continue
            rng = edit.move_range(rng)
        related = d.related_information
        if related and any(ri.location.uri == edited_uri for ri in related):
            related = [ri if ri.location.uri != edited_uri else attrs.evolve(
                ri, location=lsp.Location(uri=edited_uri, range=edit.move_range(ri.location.range)))
                for ri in related if ri.location.uri != edited_uri or not edit.touches(ri.location.range)]
        out.append(attrs.evolve(d, range=rng, related_information=related or None))
    return out
