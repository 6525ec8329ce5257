"""Re-parse only what an edit touched.

A file splits into top-level chunks at line ends where no block is open
and no statement continues (a line ending in `,`, `->`, `=`...). The
parser's state is empty there, so parsing the chunks one by one gives the
same tree and diagnostics as parsing the whole file. Each chunk's result is
kept, keyed by its text; after an edit only new chunk texts are parsed, and
kept ones are moved (their spans shifted in place) to where they now stand.
tests/test_lsp_incremental.py checks the equivalence on the examples and on
generated and mutated programs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..diagnostics import Diagnostic, Fix, Label
from ..span import Span
from ..syntax.lexer import _TOKEN_RE, Comment
from ..syntax.nodes import Ident, Lit, Node, SyntaxFile
from ..syntax.parser import parse_text

_CONTINUES = {",", "->", "~>", "<=", "="}
# A plain line (no braces, strings or comments; starts with a word, so it
# has a token; ends in a word, `*` or a path, so its last token continues
# nothing) ends its statement. Any other line goes through the tokenizer:
# stray characters are no tokens and may hide a trailing `,`.
_PLAIN = re.compile(r'[ \t\f]*[A-Za-z0-9_](?:[^{}"#\n]*[A-Za-z0-9_*/])?[ \t\f\r]*\n?\Z')
_new = tuple.__new__
# A lone CR ends a line for the tokenizer (comments and strings included);
# chunks split at LF only, so such (rare) texts are parsed whole.
_LONE_CR = re.compile(r"\r(?!\n)")


Chunk = tuple[int, int, str]  # (start offset, 0-based start line, text)


def _scan(text: str, pos: int, line_no: int, stop: int) -> tuple[list[Chunk], int, int]:
    """Chunks from pos (a chunk start) on, until a chunk ends at or after
    `stop`; returns them and where scanning ended (offset, line)."""
    out = []
    depth = 0
    start, start_line = pos, line_no
    n = len(text)
    cont = False  # the statement so far ends in a continuation token
    while pos < n:
        nl = text.find("\n", pos)
        end = n if nl == -1 else nl + 1
        line = text[pos:end]
        if _PLAIN.match(line):
            cont = False
        elif line.strip():
            for m in _TOKEN_RE.finditer(line):
                kind = m.lastgroup
                if kind in ("WS", "NL", "COMMENT", "BAD", "BADSTRING"):
                    continue
                v = m.group()
                if kind == "PUNCT":
                    if v == "{":
                        depth += 1
                    elif v == "}":
                        depth = max(depth - 1, 0)
                cont = v in _CONTINUES
        # (a line without tokens, blank or only comments or stray characters,
        # leaves a continued statement open)
        line_no += 1
        pos = end
        if depth == 0 and not cont:
            out.append((start, start_line, text[start:end]))
            start, start_line = end, line_no
            if pos >= stop:
                return out, pos, line_no
    if start < n:
        out.append((start, start_line, text[start:]))
    return out, n, line_no


def chunks(text: str) -> list[Chunk]:
    """The top-level chunks of text, in order."""
    if _LONE_CR.search(text):
        return [(0, 0, text)]
    return _scan(text, 0, 0, len(text) + 1)[0]


def rechunk(old: list[Chunk], old_len: int, old_lines: int, text: str) -> list[Chunk]:
    """chunks(text), given the chunks of the previous text: the unchanged
    chunks before and after the edit are kept, only the middle is scanned."""
    if not old or _LONE_CR.search(text) or len(old) == 1:
        return chunks(text)
    # The last chunk may be a remainder (an open block, an unended line), so
    # it is never kept as part of the prefix; it may be kept as the suffix.
    i = 0
    while i < len(old) - 1 and text.startswith(old[i][2], old[i][0]):
        i += 1
    pos, line = old[i][0], old[i][1]
    shift, lshift = len(text) - old_len, text.count("\n") - old_lines
    j = len(old)
    while j > i and old[j - 1][0] + shift >= pos and text.startswith(old[j - 1][2], old[j - 1][0] + shift):
        j -= 1
    # scan the middle; it must end exactly where a kept suffix chunk starts
    starts = {old[k][0] + shift: k for k in range(j, len(old))}
    out = list(old[:i])
    while pos < len(text):
        if pos in starts:
            k = starts[pos]
            out.extend((o + shift, ln + lshift, t) for o, ln, t in old[k:])
            return out
        stop = min((p for p in starts if p > pos), default=len(text) + 1)
        part, pos, line = _scan(text, pos, line, stop)
        out.extend(part)
    return out


def _spanned(items: list) -> list:
    """Every Node, Ident and Lit under items: the objects whose spans move."""
    out = []
    stack: list = list(items)
    pop, extend = stack.pop, stack.extend
    while stack:
        o = pop()
        t = type(o)
        if t is list or t is tuple:
            extend(o)
        elif t is Node:
            out.append(o)
            extend(o.fields.values())
            extend(o.children)
        elif t is Ident or t is Lit:
            out.append(o)
    return out


def _move(objs: list, comments: list[Comment], dl: int, do: int) -> None:
    """Shift the spans of objs (and the comments) by dl lines, do characters."""
    for o in objs:
        s = o.span
        o.span = _new(Span, (s[0], s[1] + dl, s[2], s[3] + dl, s[4], s[5] + do, s[6] + do))
    for c in comments:
        c.line += dl
        c.start += do
        c.end += do


def _sp(s: Span | None, dl: int, do: int) -> Span | None:
    if s is None:
        return None
    return Span(s.file, s.line + dl, s.col, s.end_line + dl, s.end_col, s.start + do, s.end + do)


def _move_diag(d: Diagnostic, dl: int, do: int) -> Diagnostic:
    return Diagnostic(d.code, d.severity, d.message, _sp(d.span, dl, do),
                      [Label(_sp(lb.span, dl, do), lb.message) for lb in d.labels], d.help, list(d.notes),
                      [Fix(f.title, _sp(f.span, dl, do), f.replacement) for f in d.fixes], d.witness)


@dataclass
class _Chunk:
    items: list
    objs: list  # everything under items that has a span
    comments: list[Comment]
    diags: list[Diagnostic]
    line: int  # where its spans currently point (0-based line, offset)
    offset: int


class IncrementalParser:
    """Parses successive versions of one file, reusing unchanged chunks."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._kept: dict[str, list[_Chunk]] = {}
        self._chunks: list[Chunk] = []
        self._len = self._lines = 0
        self.reused = self.parsed = 0  # chunks, in the last parse
        self._text: str | None = None
        self._result: tuple[SyntaxFile, list[Diagnostic]] | None = None

    def parse(self, text: str) -> tuple[SyntaxFile, list[Diagnostic]]:
        if text == self._text and self._result is not None:
            self.reused, self.parsed = len(self._chunks), 0
            return self._result  # the same objects: the model built from them is reused too
        self._text = text
        kept, fresh = self._kept, {}
        items, comments, diags = [], [], []
        self.reused = self.parsed = 0
        parts = rechunk(self._chunks, self._len, self._lines, text)
        self._chunks, self._len, self._lines = parts, len(text), text.count("\n")
        for offset, line, chunk_text in parts:
            pool = kept.get(chunk_text)
            if pool:
                c = pool.pop()
                dl, do = line - c.line, offset - c.offset
                if dl or do:
                    _move(c.objs, c.comments, dl, do)
                    c.diags = [_move_diag(d, dl, do) for d in c.diags]
                    c.line, c.offset = line, offset
                self.reused += 1
            else:
                tree, d = parse_text(chunk_text, self.path)
                c = _Chunk(tree.items, _spanned(tree.items), tree.comments, d, 0, 0)
                if line or offset:
                    _move(c.objs, c.comments, line, offset)
                    c.diags = [_move_diag(x, line, offset) for x in d]
                    c.line, c.offset = line, offset
                self.parsed += 1
            fresh.setdefault(chunk_text, []).append(c)
            items.extend(c.items)
            comments.extend(c.comments)
            diags.extend(c.diags)
        self._kept = fresh
        self._result = (SyntaxFile(self.path, items, comments), diags)
        return self._result
