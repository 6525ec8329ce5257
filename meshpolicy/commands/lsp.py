"""`meshc lsp`: the language server, over stdio."""

from __future__ import annotations

import logging
import sys

import click

from ..lsp import DEFAULT_DEBOUNCE_MS


@click.command("lsp")
@click.option("--stdio", is_flag=True, help="Talk LSP over stdin/stdout (the default; accepted for editors that pass it).")
@click.option("--debounce-ms", type=click.IntRange(0, 5000), default=DEFAULT_DEBOUNCE_MS, show_default=True,
              help="Wait this long after an edit before re-checking.")
@click.option("--no-verify", is_flag=True, help="Only parse and check; skip the verifier's findings.")
@click.option("--log-level", type=click.Choice(["error", "warning", "info", "debug"]), default="warning",
              show_default=True, help="How much to log to stderr.")
def command(stdio, debounce_ms, no_verify, log_level):
    """Run the meshc language server for editors, over stdin/stdout.

    Diagnostics (parse, check and, when the mesh checks clean, verifier
    findings) for every file of the mesh an open file belongs to; hover,
    go to definition, references, completion, outline, quick fixes and
    formatting. stdout carries the protocol; logs go to stderr.

    \b
    Examples:
      meshc lsp                      # what an editor runs
      meshc lsp --log-level debug 2> meshc-lsp.log
    See docs/editors.md for VS Code and Neovim setups.
    """
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, log_level.upper()),
                        format="meshc lsp %(levelname)s %(name)s: %(message)s")
    from ..lsp.server import serve  # pygls loads only here

    serve(debounce_ms, run_verifier=not no_verify)
