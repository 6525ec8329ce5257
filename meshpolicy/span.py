"""Source files and spans: where in the text a thing was written."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import NamedTuple


# The one definition of a line end (the tokenizer's NL, the LSP's): CRLF, LF
# or a lone CR, and nothing else. Python's str.splitlines also splits at
# \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029, which may stand inside a
# string or a comment, so it is never used on source text.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_WITH_END = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


def split_lines(text: str, keepends: bool = False) -> list[str]:
    """text's lines. Without ends: n line ends give n + 1 parts (like str.split).
    With ends: each line keeps its end and a final empty line is dropped
    (like str.splitlines(True), but at line ends only)."""
    if keepends:
        return _LINE_WITH_END.findall(text)
    return _LINE_BREAK.split(text)


class Span(NamedTuple):
    """A range of characters in one file.

    Lines and columns are 1-based and count Unicode code points; `start` and
    `end` are 0-based character offsets (end exclusive). Editors that count
    UTF-16 units convert through `SourceFile.utf16_col`. A NamedTuple, since
    the parser makes one for nearly every token.
    """

    file: str
    line: int
    col: int
    end_line: int
    end_col: int
    start: int
    end: int

    def to(self, other: "Span") -> "Span":
        """The span from the start of self to the end of other."""
        return Span(self.file, self.line, self.col, other.end_line, other.end_col, self.start, other.end)

    def contains(self, offset: int) -> bool:
        return self.start <= offset <= self.end


@dataclass
class SourceFile:
    """One file's text with a line index for offset <-> line/column lookups."""

    path: str
    text: str
    _line_starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        starts = [0]
        text = self.text
        if "\r" in text:  # lone CR ends a line too, as in the tokenizer
            starts += [m.end() for m in _LINE_BREAK.finditer(text)]
        else:
            find = text.find
            i = find("\n")
            while i != -1:
                starts.append(i + 1)
                i = find("\n", i + 1)
        self._line_starts = starts

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line_text(self, line: int) -> str:
        """Text of 1-based `line`, without its newline."""
        if line < 1 or line > len(self._line_starts):
            return ""
        start = self._line_starts[line - 1]
        end = self._line_starts[line] if line < len(self._line_starts) else len(self.text)
        return self.text[start:end].rstrip("\r\n")

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a 0-based character offset."""
        offset = max(0, min(offset, len(self.text)))
        idx = bisect.bisect_right(self._line_starts, offset) - 1
        return idx + 1, offset - self._line_starts[idx] + 1

    def offset(self, line: int, col: int) -> int:
        """0-based offset of a 1-based (line, column)."""
        line = max(1, min(line, len(self._line_starts)))
        return min(self._line_starts[line - 1] + col - 1, len(self.text))

    def span(self, start: int, end: int) -> Span:
        line, col = self.position(start)
        end_line, end_col = self.position(end)
        return Span(self.path, line, col, end_line, end_col, start, end)

    def utf16_col(self, line: int, col: int) -> int:
        """0-based UTF-16 column of a 1-based code-point column (what LSP wants)."""
        prefix = self.line_text(line)[: col - 1]
        return sum(2 if ord(ch) > 0xFFFF else 1 for ch in prefix)

    def col_from_utf16(self, line: int, utf16: int) -> int:
        """1-based code-point column of a 0-based UTF-16 column."""
        units = 0
        for i, ch in enumerate(self.line_text(line)):
            if units >= utf16:
                return i + 1
            units += 2 if ord(ch) > 0xFFFF else 1
        return len(self.line_text(line)) + 1
