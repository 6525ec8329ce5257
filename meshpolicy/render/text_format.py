"""rustc-style terminal output: header, location, quoted source, carets, help.

Colour is plain ANSI SGR codes: the output needs five styles, and rich's
console cost a tenth of a pre-commit run just to import. (rich still draws
the progress bar, which only large meshes on a terminal get.)
"""

from __future__ import annotations

import os
from typing import TextIO

from rich.cells import cell_len

from ..codes import catalogue, doc_url
from ..diagnostics import Diagnostic, Severity, shown
from ..span import SourceFile, Span

TAB = "    "
_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "bold yellow", Severity.INFO: "bold cyan"}
_SGR = {"bold": "1", "bold red": "1;31", "bold yellow": "1;33", "bold cyan": "1;36", "bold blue": "1;34"}


def use_color(out: TextIO, color: bool | None = None) -> bool:
    """No colour when NO_COLOR is set, out is not a terminal or the terminal
    says it has none (TERM=dumb, as in Emacs buffers), unless forced."""
    if color is not None:
        return color
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") in ("dumb", "unknown"):
        return False
    return hasattr(out, "isatty") and out.isatty()


class _Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, style: str, text: str) -> str:
        if not self.color or not text:
            return text
        return f"\x1b[{_SGR[style]}m{text}\x1b[0m"


_PLAIN = _Paint(False)


def _cells(text: str) -> int:
    """Terminal columns text takes (wide CJK and emoji count two)."""
    return cell_len(text)


def _visible(text: str) -> str:
    """Control characters as their Unicode pictures (NUL -> U+2400, DEL ->
    U+2421; C1 controls, which have none, as U+FFFD), one character each so
    that columns stay right, and so that a stray byte in a file, path or
    string cannot move the cursor or restyle the terminal. Tabs stay."""
    if text.isprintable():
        return text
    return "".join(chr(0x2400 + ord(c)) if ord(c) < 32 and c != "\t" else "\u2421" if ord(c) == 127
                   else "\ufffd" if 0x80 <= ord(c) < 0xA0 else c for c in text)


WINDOW = 120  # characters of a long source line shown around the span


def _window(raw: str, start: int, end: int) -> tuple[str, int, int]:
    """A long line (minified YAML, a hostile file) cut to WINDOW characters
    from a little before the span, `…` marking what is left out, with start
    and end (1-based columns, end exclusive) moved to match: each diagnostic
    stays a few short lines however long its line is."""
    if len(raw) <= WINDOW:
        return raw, start, end
    lo = max(0, start - 1 - WINDOW // 4)
    hi = min(len(raw), lo + WINDOW)
    head = "\u2026" if lo else ""
    shift = len(head) - lo
    text = head + raw[lo:hi] + ("\u2026" if hi < len(raw) else "")
    return text, start + shift, min(end, hi + 1) + shift


def _snippet(src: SourceFile, span: Span, label: str, style: str, gutter: int, paint: _Paint) -> list[str]:
    """The spanned lines, each with carets under the spanned characters. Tabs
    are shown as four spaces and wide characters take two cells, so carets are
    placed by display width, not by character count."""
    lines = []
    pad = " " * gutter
    last = min(span.end_line, span.line + 3)
    for ln in range(span.line, last + 1):
        raw = _visible(src.line_text(ln))  # one character each: columns stay right
        start = span.col if ln == span.line else 1
        end = span.end_col if ln == span.end_line else len(raw) + 1
        raw, start, end = _window(raw, start, end)
        before = raw[: start - 1].replace("\t", TAB)
        marked = raw[start - 1 : max(start, end) - 1].replace("\t", TAB)
        lines.append(f"{paint('bold blue', f'{ln:>{gutter}} |')} {raw.replace(chr(9), TAB)}")
        marks = " " * _cells(before) + "^" * max(1, _cells(marked))
        note = f" {_visible(label)}" if label and ln == last else ""
        lines.append(f"{paint('bold blue', f'{pad} |')} {paint(style, marks + note)}")
    return lines


def format_one(d: Diagnostic, sources: dict[str, SourceFile], paint: _Paint = _PLAIN) -> str:
    style = _STYLE[d.severity]
    blue = lambda text: paint("bold blue", text)  # noqa: E731
    out = [f"{paint(style, f'{d.severity.value}[{d.code}]')}: {paint('bold', _visible(d.message))}"]
    spans = [s for s in [d.span, *(lb.span for lb in d.labels)] if s is not None and s.line > 0]
    gutter = max((len(str(s.end_line)) for s in spans), default=1)
    pad = " " * gutter
    if d.span is not None and d.span.line > 0:
        out.append(f"{pad}{blue('-->')} {_visible(d.span.file)}:{d.span.line}:{d.span.col}")
        src = sources.get(d.span.file)
        if src is not None:
            out.append(blue(f"{pad} |"))
            out += _snippet(src, d.span, "", style, gutter, paint)
    for lb in d.labels:
        src = sources.get(lb.span.file)
        if lb.span.line <= 0:
            continue
        out.append(f"{pad}{blue(':::')} {_visible(lb.span.file)}:{lb.span.line}:{lb.span.col}")
        if src is not None:
            out += _snippet(src, lb.span, lb.message, "bold blue", gutter, paint)
        else:
            out.append(f"{pad}   {_visible(lb.message)}")
    if d.witness:
        out.append(f"{pad} {blue('=')} {paint('bold', 'witness')}: {_visible(_witness_text(d.witness))}")
    for note in d.notes:
        out.append(f"{pad} {blue('=')} {paint('bold', 'note')}: {_visible(note)}")
    if d.help:
        out.append(f"{pad} {blue('=')} {paint('bold', 'help')}: {_visible(d.help)}")
    if d.code in catalogue():
        out.append(f"{pad} {blue('=')} {paint('bold', 'see')}: {doc_url(d.code)}")
    return "\n".join(out)


def _witness_text(w: dict) -> str:
    if "request" in w and isinstance(w["request"], str):
        return w["request"]
    if "path" in w and isinstance(w["path"], list):
        return " -> ".join(map(str, w["path"]))
    return ", ".join(f"{k}={v}" for k, v in w.items())


def summary(diags: list[Diagnostic]) -> str:
    hidden = len(diags) - len(diags := shown(diags))
    out = _counts(diags)
    return out + (f" ({hidden} suppressed)" if hidden else "")


def _counts(diags: list[Diagnostic]) -> str:
    errors = sum(d.severity is Severity.ERROR for d in diags)
    warnings = sum(d.severity is Severity.WARNING for d in diags)
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' * (errors != 1)}")
    if warnings:
        parts.append(f"{warnings} warning{'s' * (warnings != 1)}")
    infos = sum(d.severity is Severity.INFO for d in diags)
    if not parts:
        return "no problems" + (f" ({infos} note{'s' * (infos != 1)})" if infos else "")
    return ", ".join(parts) + (f", {infos} note{'s' * (infos != 1)}" if infos else "")


def render(diags: list[Diagnostic], sources: dict[str, SourceFile], out: TextIO, *, color: bool | None = None,
           quiet: bool = False, **_: object) -> None:
    paint = _Paint(use_color(out, color))
    for d in shown(diags):
        if quiet and d.severity is not Severity.ERROR:
            continue
        out.write(format_one(d, sources, paint) + "\n\n")
    if not quiet:
        out.write(paint("bold", summary(diags)) + "\n")
