"""`meshc trace`: one trace's hops, from the collector of a mesh `meshc up` runs."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import EXIT_ERRORS, EXIT_OK


@click.command("trace")
@click.argument("trace_id", required=False)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The work directory of `meshc up` (default: the mesh's own).")
@click.option("--list", "listing", is_flag=True, help="List the traces collected so far, newest last.")
def command(trace_id, paths, workdir, listing):
    """Print the hops of trace TRACE_ID (as in `x-b3-traceid` or `traceparent`)
    that the sidecars of `meshc up` (Envoy or meshproxy) reported to meshc's
    collector (the mesh's `tracing` on).

    \b
    Examples:
      meshc trace --list examples/shop
      meshc trace 4bf92f3577b34da6a3ce929d0e0e4736 examples/shop
    """
    from ..run.collector import render_trace, spans_of
    from .stat import _workdir

    if listing and trace_id is not None:  # `meshc trace --list PATH`: no id, the first word is a path
        paths, trace_id = (trace_id, *paths), None
    wd = _workdir(paths, workdir)
    spans = spans_of(wd)
    if listing or trace_id is None:
        seen: dict[str, tuple[int, int]] = {}
        for s in spans:
            start, n = seen.get(s["trace_id"], (s["start_us"], 0))
            seen[s["trace_id"]] = (min(start, s["start_us"]), n + 1)
        for tid, (_, n) in sorted(seen.items(), key=lambda kv: kv[1][0]):
            click.echo(f"{tid}  {n} span{'s' * (n != 1)}")
        if not seen:
            click.echo(f"no traces collected in {wd} (is the mesh's tracing on?)", err=True)
        sys.exit(EXIT_OK)
    if not all(c in "0123456789abcdefABCDEF" for c in trace_id) or not 1 <= len(trace_id) <= 32:
        raise click.UsageError(f"a trace id is up to 32 hex digits, not {trace_id!r}")
    mine = spans_of(wd, trace_id)
    if not mine:
        click.echo(f"meshc trace: no spans of trace {trace_id} in {wd}", err=True)
        sys.exit(EXIT_ERRORS)
    click.echo(render_trace(mine))
    sys.exit(EXIT_OK)
