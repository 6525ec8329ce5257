"""GitHub Actions workflow commands (`--format github`): one annotation a diagnostic.

    ::error file=F,line=L,col=C,endLine=L2,endColumn=C2,title=MP101::message

GitHub decodes `%25`, `%0D`, `%0A` in the message (data), and additionally
`%3A` and `%2C` in property values, where a raw `:` or `,` would end the
value. Anything else is passed through, so escaping `%` first is what makes
the encoding reversible.
"""

from __future__ import annotations

from typing import TextIO

from ..codes import catalogue, doc_url
from ..diagnostics import Diagnostic, Severity, shown
from ..span import SourceFile

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(d: Diagnostic) -> str:
    props: list[tuple[str, str]] = []
    s = d.span
    if s is not None and s.line > 0 and s.file:
        props += [("file", s.file), ("line", str(s.line)), ("col", str(s.col))]
        if s.end_line > 0:
            props += [("endLine", str(s.end_line)), ("endColumn", str(s.end_col))]
    props.append(("title", d.code))
    message = d.message
    for note in d.notes:
        message += f"\nnote: {note}"
    if d.help:
        message += f"\nhelp: {d.help}"
    if d.code in catalogue():
        message += f"\nsee: {doc_url(d.code)}"
    head = ",".join(f"{k}={escape_property(v)}" for k, v in props)
    return f"::{COMMANDS[d.severity]} {head}::{escape_data(message)}"


def render(diags: list[Diagnostic], sources: dict[str, SourceFile], out: TextIO, *, quiet: bool = False,
           **_: object) -> None:
    for d in shown(diags):  # suppressed findings are not annotated
        if quiet and d.severity is not Severity.ERROR:
            continue
        out.write(annotation(d) + "\n")
