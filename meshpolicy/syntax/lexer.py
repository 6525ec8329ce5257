"""Tokenizer for .mesh files.

The tokenizer only knows lexical classes (a word, a string, a duration...).
Which grammar terminal a token becomes (keyword, service name, HTTP method,
retry condition) is decided by the parser from what its current state can
accept, so keywords are reserved only where the grammar uses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class Tok:
    """A token: lexical class (later the grammar terminal) in `type`, text in `value`.

    Lighter than lark.Token (not a str subclass): the parser makes one per token.
    A token never spans lines, so its end line and column are derived, not stored.
    """

    __slots__ = ("type", "value", "start_pos", "end_pos", "line", "column")

    def __init__(self, type_, value, start, end, line, col):
        self.type = type_
        self.value = value
        self.start_pos = start
        self.end_pos = end
        self.line = line
        self.column = col

    @property
    def end_line(self) -> int:
        return self.line

    @property
    def end_column(self) -> int:
        return self.column + (self.end_pos - self.start_pos)

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Tok({self.type}, {self.value!r}, {self.line}:{self.column})"

# Order matters: numbers with units before bare integers, integers before words
# (`5xx` and `retriable-4xx` are words), `->` before `-`.
_END = r"(?![A-Za-z0-9_])"
_TOKEN_RE = re.compile(
    "|".join(
        [
            r"(?P<NL>\r\n|\r|\n)",
            r"(?P<WS>[ \t\f]+)",
            # A line ends at CRLF, LF or a lone CR, for comments and strings too.
            r"(?P<COMMENT>\#[^\r\n]*)",
            r'(?P<STRING>"(?:\\[^\r\n]|[^"\\\r\n])*")',
            r'(?P<BADSTRING>"(?:\\[^\r\n]|[^"\\\r\n])*\\?)',  # to the line end
            r"(?P<DURATION>[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h)" + _END + ")",
            r"(?P<RATE>[0-9]+/(?:s|m|h)" + _END + ")",
            r"(?P<PERCENT>[0-9]+(?:\.[0-9]+)?%)",
            r"(?P<INT>[0-9]+(?![A-Za-z0-9_.-]))",
            r"(?P<WORD>[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*)",
            r"(?P<PATH>/[^\s,#\"]*)",
            r"(?P<PUNCT>->|~>|<=|[{}:,=~*;])",
            r"(?P<BAD>.)",
        ]
    )
)
# What tokenize() runs: the same classes with the blanks before a token taken in the
# same match (half as many matches). A blank run before the end of the text
# matches nothing and is skipped; BAD never matches a blank, as above.
_SCAN_RE = re.compile(
    r"[ \t\f]*(?:"
    + _TOKEN_RE.pattern.replace(r"(?P<WS>[ \t\f]+)|", "").replace(r"(?P<BAD>.)", r"(?P<BAD>[^ \t\f\n])")
    + ")"
)


@dataclass(slots=True)
class Comment:
    text: str
    line: int
    col: int
    start: int
    end: int
    own_line: bool  # nothing but whitespace before it on its line


@dataclass(slots=True)
class LexError:
    kind: str  # "BAD" or "BADSTRING"
    token: Tok


def tokenize(text: str) -> tuple[list[Tok], list[Comment], list[LexError]]:
    """Split text into tokens; comments and lexical errors are returned aside.

    Token.type holds the lexical class: NL, STRING, DURATION, RATE, PERCENT,
    INT, WORD, PATH or PUNCT (braces, arrows, `;` etc. keep their text as
    value). The parser maps each to a grammar terminal.
    """
    tokens: list[Tok] = []
    comments: list[Comment] = []
    errors: list[LexError] = []
    append = tokens.append
    line = 1
    line_start = 0
    last_nl_or_start = True
    for m in _SCAN_RE.finditer(text):
        kind = m.lastgroup
        start, end = m.span(kind)
        if kind == "NL":
            append(Tok("NL", "\n", start, end, line, start - line_start + 1))
            line += 1
            line_start = end
            last_nl_or_start = True
            continue
        value = text[start:end]
        if kind == "COMMENT":
            comments.append(Comment(value, line, start - line_start + 1, start, end, last_nl_or_start))
            continue
        last_nl_or_start = False
        if kind == "BAD" or kind == "BADSTRING":
            errors.append(LexError(kind, Tok(kind, value, start, end, line, start - line_start + 1)))
            continue
        append(Tok(kind, value, start, end, line, start - line_start + 1))
    return tokens, comments, errors


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def unquote(s: str) -> str:
    """The value of a STRING token (escapes \\n \\t \\r \\" \\\\; others kept literally)."""
    body = s[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def quote(s: str) -> str:
    """A STRING token whose value is s (inverse of unquote)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'
