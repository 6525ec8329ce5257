"""`meshc explain CODE`: what a diagnostic code means and what to do about it."""

from __future__ import annotations

import difflib
import sys

import click

from ..codes import CodeInfo, catalogue
from .common import EXIT_OK, EXIT_USAGE


def lookup(query: str) -> CodeInfo | None:
    """A code (`MP101`, `mp101`, `101`) or a code's name (`unknown-service`)."""
    cat = catalogue()
    q = query.strip()
    code = q.upper()
    if code.isdigit():
        code = f"MP{int(code):03d}"
    if code in cat:
        return cat[code]
    by_name = {i.name: i for i in cat.values()}
    return by_name.get(q.lower())


def suggestion(query: str) -> str | None:
    cat = catalogue()
    q = query.strip()
    close = difflib.get_close_matches(q.upper(), list(cat), n=1, cutoff=0.6)
    if close:
        return close[0]
    close = difflib.get_close_matches(q.lower(), [i.name for i in cat.values()], n=1, cutoff=0.6)
    return close[0] if close else None


def explanation(info: CodeInfo) -> str:
    return (f"{info.code} {info.name} ({info.severity.value}, {info.stage})\n"
            f"  {info.summary}\n"
            f"help: {info.help}\n"
            f"More, with an example and its fix: docs/diagnostics.md#{info.code.lower()}-{info.name}\n")


@click.command("explain")
@click.argument("code")
def command(code):
    """Explain a diagnostic CODE (such as MP301), or a code's name.

    \b
    Examples:
      meshc explain MP301
      meshc explain retry-exceeds-timeout
    """
    info = lookup(code)
    if info is None:
        hint = suggestion(code)
        more = f"; did you mean `{hint}`?" if hint else ""
        click.echo(f"meshc: unknown diagnostic code `{code}`{more}", err=True)
        click.echo("Codes are listed in docs/diagnostics.md.", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(explanation(info), nl=False)
    sys.exit(EXIT_OK)
