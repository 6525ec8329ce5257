"""Options and output shared by the commands that report diagnostics."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from ..diagnostics import Diagnostic, Severity, has_errors, shown
from ..render import FORMATS, render
from ..span import SourceFile

if TYPE_CHECKING:
    from ..project import Project

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


def report_options(fn):
    """--format, --color/--no-color, --quiet."""
    fn = click.option("--quiet", "-q", is_flag=True, help="Print errors only, no summary.")(fn)
    fn = click.option("--color/--no-color", default=None,
                      help="Force colour on or off (default: on for terminals unless NO_COLOR is set).")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                      help="Output format: terminal text, JSON, SARIF 2.1.0 or GitHub annotations.")(fn)
    return fn


STDIN = "<stdin>"  # how standard input is named in messages


def projects(paths) -> Iterator[Project]:
    """The meshes PATHS stand for, each on its own (files of several meshes, as
    pre-commit passes them); `-` alone is standard input, a mesh of one file."""
    from ..project import group_by_mesh, load

    if "-" not in paths:
        for group in group_by_mesh(list(paths)):
            yield load(group)
        return
    if len(paths) > 1:
        raise click.UsageError("`-` (standard input) cannot be combined with other paths")
    yield stdin_project()


def stdin_project() -> Project:
    from ..codes import diag
    from ..project import Project

    project = Project(Path.cwd())
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        project.diagnostics.append(diag("MP001", f"standard input is not UTF-8 text (byte {exc.start})"))
    else:
        project.files[STDIN] = SourceFile(STDIN, text.removeprefix("\ufeff"))
    return project


def fail_on_option(fn):
    """--fail-on: the lowest severity that makes the exit code 1."""
    return click.option("--fail-on", "fail_on", type=click.Choice(["error", "warning"]), default="error",
                        show_default=True,
                        help="Exit 1 on errors only, or on warnings too (suppressed findings never count).")(fn)


def emit(diags: list[Diagnostic], sources: dict[str, SourceFile], fmt: str, *, color=None, quiet=False,
         out: TextIO | None = None, tool_command: str = "check") -> None:
    render(fmt, diags, sources, out or sys.stdout, color=color, quiet=quiet, command=tool_command)


def exit_code(diags: list[Diagnostic], fail_on: str = "error") -> int:
    """2 when input could not be read at all, 1 for any error (or, with
    fail_on="warning", any warning), else 0. Suppressed findings never count."""
    if any(d.code == "MP001" for d in diags):
        return EXIT_USAGE
    if has_errors(diags):
        return EXIT_ERRORS
    if fail_on == "warning" and any(d.severity is Severity.WARNING for d in shown(diags)):
        return EXIT_ERRORS
    return EXIT_OK


def count(diags: list[Diagnostic], sev: Severity) -> int:
    return sum(d.severity is sev for d in shown(diags))


# A mesh this big gets a progress bar (when stderr is a terminal).
PROGRESS_MIN_FILES = 20
PROGRESS_MIN_CHARS = 256 * 1024


@contextmanager
def progress_bar(project, quiet: bool = False, stream: TextIO | None = None):
    """Yield a progress callback `(step, done, total)` drawing a rich bar on
    stderr (each phase, check then verify, brings its own total), or None:
    only for large meshes, never with --quiet or when stderr is not a
    terminal (so pipes, CI logs and editors never see it)."""
    stream = stream or sys.stderr
    size = sum(len(s.text) for s in project.files.values())
    big = len(project.files) >= PROGRESS_MIN_FILES or size >= PROGRESS_MIN_CHARS
    if quiet or not big or not (hasattr(stream, "isatty") and stream.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("reading", total=None)

        def update(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        yield update
