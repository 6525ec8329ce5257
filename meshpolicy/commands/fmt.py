"""`meshc fmt`: rewrite .mesh files in the canonical layout."""

from __future__ import annotations

import difflib
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

from ..codes import diag
from ..diagnostics import Diagnostic, sorted_diagnostics
from ..fmt import format_text
from ..project import display_path, mesh_files
from ..span import SourceFile, split_lines
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit, report_options


def _targets(paths) -> tuple[list[tuple[Path, str]], list[Diagnostic]]:
    """(path, shown) of every file to format: named files, and every .mesh
    file under named directories (hidden directories skipped)."""
    out, diags = [], []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend((f, display_path(f)) for f in mesh_files(p, nested=True))
        elif p.is_file():
            out.append((p, display_path(p)))
        else:
            diags.append(diag("MP001", f"`{raw}` does not exist"))
    return out, diags


def _read(path: Path, shown: str) -> tuple[str | None, Diagnostic | None]:
    try:
        return path.read_bytes().decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, diag("MP001", f"`{shown}` is not UTF-8 text (byte {exc.start})")
    except OSError as exc:
        return None, diag("MP001", f"cannot read `{shown}`: {exc.strerror or exc}")


def write_atomic(path: Path, text: str) -> None:
    """Replace path's content in one step: a reader sees the old file or the
    new one, never a half-written one. Keeps the file's permission bits, and
    a symlink stays a link: the file it points to is the one replaced."""
    path = path.resolve()
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def not_formatted(text: str, new: str, shown: str) -> tuple[Diagnostic, SourceFile]:
    """MP095 at the first line that the layout changes, for --check in a machine format."""
    src = SourceFile(shown, text.removeprefix("\ufeff"))
    old_lines, new_lines = split_lines(src.text), split_lines(new)
    line = next((i + 1 for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b),
                min(len(old_lines), len(new_lines)) + 1)
    line = max(1, min(line, src.line_count))
    start = src.offset(line, 1)
    span = src.span(start, start + len(src.line_text(line)))
    return diag("MP095", f"`{shown}` is not in meshc's layout (first change on line {line})", span), src


def _diff(old: str, new: str, shown: str) -> str:
    lines = difflib.unified_diff(split_lines(old, keepends=True), split_lines(new, keepends=True),
                                 f"a/{shown}", f"b/{shown}")
    return "".join(ln if ln.endswith(("\n", "\r")) else ln + "\n\\ No newline at end of file\n" for ln in lines)


@click.command("fmt")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--check", is_flag=True, help="Write nothing; list the files that would change and exit 1 if any.")
@click.option("--diff", "show_diff", is_flag=True, help="Write nothing; print a unified diff of the changes.")
@report_options
def command(paths, check, show_diff, fmt, color, quiet):
    """Rewrite .mesh files in PATHS (files or directories) in the canonical layout.

    Files are replaced atomically and only when they change; each changed
    file is listed. `-` formats standard input to standard output. A file
    with syntax errors is left alone and its errors reported. Exit 0 on
    success, 1 when a file has syntax errors (or, with --check, would
    change), 2 when input could not be read. The layout is described in
    docs/formatting.md.

    \b
    Examples:
      meshc fmt examples/shop
      meshc fmt --check .            # in CI
      meshc fmt - < orders.mesh
    """
    diags: list[Diagnostic] = []
    sources: dict[str, SourceFile] = {}
    changed: list[str] = []
    dry = check or show_diff
    # --check in json/sarif/github: one document on stdout, each file to reformat an MP095 finding
    report = check and not show_diff and fmt != "text"

    def would_change(text: str, new: str, shown: str) -> None:
        if report:
            d, sources[shown] = not_formatted(text, new, shown)
            diags.append(d)
        elif not quiet:
            click.echo(f"would reformat {shlex.quote(shown) if shown != '-' else '-'}",
                       err=shown == "-")

    def one(text: str, shown: str) -> str | None:
        result = format_text(text, shown)
        if not result.ok:
            sources[shown] = SourceFile(shown, text.removeprefix("\ufeff"))  # as parsed
            diags.extend(result.diagnostics)
            return None
        return result.text

    files = [p for p in paths if p != "-"]
    targets, diags_ = _targets(files)
    diags.extend(diags_)
    if "-" in paths:
        raw = sys.stdin.buffer.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            diags.append(diag("MP001", f"standard input is not UTF-8 text (byte {exc.start})"))
        else:
            new = one(text, "<stdin>")
            if new is not None:
                if new != text:
                    changed.append("-")
                    if check and not show_diff:
                        would_change(text, new, "<stdin>" if report else "-")
                if show_diff:
                    sys.stdout.write(_diff(text, new, "<stdin>"))
                elif not check:
                    sys.stdout.write(new)
    for path, shown in targets:
        text, err = _read(path, shown)
        if err is not None:
            diags.append(err)
            continue
        new = one(text, shown)
        if new is None or new == text:
            continue
        changed.append(shown)
        if show_diff:
            sys.stdout.write(_diff(text, new, shown))
        if not dry:
            try:
                write_atomic(path, new)
            except OSError as exc:
                diags.append(diag("MP001", f"cannot write `{shown}`: {exc.strerror or exc}"))
                changed.pop()
                continue
        if check and not show_diff:
            would_change(text, new, shown)
        elif not show_diff and not quiet:
            click.echo(f"reformatted {shlex.quote(shown)}")
    # Diagnostics on stderr: stdout carries formatted text, diffs or file lists.
    if report:  # the document, even when clean: CI uploads it either way
        emit(sorted_diagnostics(diags), sources, fmt, color=color, quiet=quiet, out=sys.stdout, tool_command="fmt")
    elif diags:
        # In `meshc check`'s order (file, offset, code), one ordering for both.
        emit(sorted_diagnostics(diags), sources, fmt, color=color, quiet=quiet, out=sys.stderr, tool_command="fmt")
    if any(d.code == "MP001" for d in diags):
        sys.exit(EXIT_USAGE)
    files_changed = [c for c in changed if c != "-"]
    if check and files_changed and not quiet and not report:
        click.echo(f"{len(files_changed)} file{'s' * (len(files_changed) != 1)} not in meshc's layout; fix with: "
                   f"meshc fmt {' '.join(shlex.quote(c) for c in files_changed)}", err=True)
    if diags or (check and changed):
        sys.exit(EXIT_ERRORS)
    sys.exit(EXIT_OK)
