"""Options and output shared by the commands that report diagnostics."""

from __future__ import annotations

import sys
from typing import TextIO

import click

from ..diagnostics import Diagnostic, Severity, has_errors
from ..render import FORMATS, render
from ..span import SourceFile

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def report_options(fn):
    """--format, --color/--no-color, --quiet."""
    fn = click.option("--quiet", "-q", is_flag=True, help="Print errors only, no summary.")(fn)
    fn = click.option("--color/--no-color", default=None,
                      help="Force colour on or off (default: on for terminals unless NO_COLOR is set).")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                      help="Output format: terminal text, JSON, SARIF 2.1.0 or GitHub annotations.")(fn)
    return fn


def emit(diags: list[Diagnostic], sources: dict[str, SourceFile], fmt: str, *, color=None, quiet=False,
         out: TextIO | None = None, tool_command: str = "check") -> None:
    render(fmt, diags, sources, out or sys.stdout, color=color, quiet=quiet, command=tool_command)


def exit_code(diags: list[Diagnostic]) -> int:
    """2 when input could not be read at all, 1 for any error, else 0."""
    if any(d.code == "MP001" for d in diags):
        return EXIT_USAGE
    return EXIT_ERRORS if has_errors(diags) else EXIT_OK


def count(diags: list[Diagnostic], sev: Severity) -> int:
    return sum(d.severity is sev for d in diags)
