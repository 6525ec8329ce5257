"""`meshc explain CODE`: what a diagnostic code means and what to do about it."""

from __future__ import annotations

import difflib
import os
import re
import sys

import click

from ..codes import CodeInfo, catalogue, doc_url
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


def _typos(code: str) -> set[str]:
    """What one slip of the keyboard makes of a code: a character dropped,
    doubled, or two neighbours swapped. A changed digit is another code, not
    a typo of this one (MP553 is not a misspelt MP552), so it is not undone."""
    out = {code[:i] + code[i + 1:] for i in range(len(code))}
    out |= {code[:i] + code[i + 1] + code[i] + code[i + 2:] for i in range(len(code) - 1)}
    return out


def suggestion(query: str) -> str | None:
    """A close match, or None: codes only by the slips in _typos (and only
    one clear candidate), names by spelling."""
    cat = catalogue()
    q = query.strip()
    code = q.upper()
    if re.fullmatch(r"(?:MP)?\d+", code):
        code = code if code.startswith("MP") else f"MP{code}"
        near = [c for c in cat if code in _typos(c) or c in _typos(code)]
        if not near:
            return None
        # several: the one that keeps most of what was typed first (MP3011: MP301, not MP011)
        common = {c: len(os.path.commonprefix([c, code])) for c in near}
        best = max(common.values())
        top = [c for c in near if common[c] == best]
        return top[0] if len(top) == 1 else None
    close = difflib.get_close_matches(q.lower(), [i.name for i in cat.values()], n=1, cutoff=0.8)
    return close[0] if close else None


def explanation(info: CodeInfo) -> str:
    """The catalogue entry, the paragraph, and the example with its fix: what
    docs/diagnostics.md shows, as terminal text, from the installed package."""
    from ..codes.explanations import explanation as example

    ex = example(info.code)
    out = [f"{info.code} {info.name} ({info.severity.value}, {info.stage})",
           f"  {info.summary}", f"help: {info.help}", ""]
    if ex.readme:
        out += [ex.readme, ""]

    def block(title: str, text: str | None) -> None:
        if text is not None:
            out.extend([title, *(f"    {line}" for line in text.splitlines()), ""])

    block(f"Reported by `{ex.command}` on:", ex.bad)
    block("With this meshc.toml:", ex.bad_toml)
    block("Fixed:", ex.good)
    block("Fixed meshc.toml:", ex.good_toml)
    out.append(f"Online: {doc_url(info.code)}")
    return "\n".join(out) + "\n"


def listing() -> str:
    cat = catalogue().values()
    width = max(len(i.name) for i in cat)
    return "".join(f"{i.code}  {i.name:<{width}}  {i.severity.value:<7}  {i.summary}\n" for i in cat)


@click.command("explain")
@click.argument("code", required=False)
@click.option("--list", "list_all", is_flag=True, help="List every code with its name, severity and summary.")
def command(code, list_all):
    """Explain a diagnostic CODE (such as MP301), or a code's name: what it
    means, what to do, and an example that reports it with its fix.

    \b
    Examples:
      meshc explain MP301
      meshc explain retry-exceeds-timeout
      meshc explain --list
    """
    if list_all:
        if code:
            raise click.UsageError("give a CODE or --list, not both")
        click.echo(listing(), nl=False)
        sys.exit(EXIT_OK)
    if not code:
        raise click.UsageError("give a CODE (such as MP301), or --list")
    info = lookup(code)
    if info is None:
        hint = suggestion(code)
        more = f"; did you mean `{hint}`?" if hint else ""
        click.echo(f"meshc: unknown diagnostic code `{code}`{more}", err=True)
        click.echo("`meshc explain --list` lists every code.", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(explanation(info), nl=False)
    sys.exit(EXIT_OK)
