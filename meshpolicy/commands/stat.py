"""`meshc stat` and `meshc top`: RED metrics of a mesh that `meshc up` runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from .common import EXIT_OK, EXIT_USAGE


def _workdir(paths, workdir: Path | None) -> Path:
    from ..project import find_root
    from ..run.state import up_workdir

    if workdir is not None:
        return workdir
    return up_workdir(find_root(Path(paths[0]) if paths else Path(".")))


def _sidecars_or_exit(paths, workdir):
    from ..run.telemetry import sidecars

    wd = _workdir(paths, workdir)
    cars = sidecars(wd)
    if not cars or none_answers(cars):
        click.echo(f"meshc: no mesh is running from {wd} (start one with `meshc up`)", err=True)
        sys.exit(EXIT_USAGE)
    return cars


def none_answers(cars) -> bool:
    """A stopped `meshc up` leaves its configs in the work directory: a mesh of
    which no sidecar answers is not running (one scrape, refused at once)."""
    from ..run.telemetry import scrape

    return len(set(scrape(cars).unreachable)) >= len(cars)


def _window(cars, seconds: float, where: dict | None = None):
    """Pair rows, rule rows and the sidecars that did not answer, over one window."""
    from ..run.telemetry import red, rule_rows, scrape

    before = scrape(cars)
    time.sleep(seconds)
    after = scrape(cars)
    return red(before, after), rule_rows(before, after, where), sorted(set(after.unreachable))


def _rule_locations(paths) -> dict:
    """(destination, rule name) -> `file:line` from the policy at PATHS; empty
    when it cannot be read (the figures still name each rule)."""
    from ..pipeline import check_project
    from ..project import load
    from ..run.telemetry import rule_locations

    try:
        return rule_locations(check_project(load(list(paths) or ["."]), run_checks=False).mesh)
    except Exception:  # the rows keep their rule names; `at` is left out
        return {}


@click.command("stat")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The work directory of `meshc up` (default: the mesh's own).")
@click.option("--window", type=click.FloatRange(0.1, 3600), default=5.0, show_default=True,
              help="Seconds between the two scrapes the rates and latencies are computed over.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def stat_command(paths, workdir, window, fmt):
    """Request rate, success rate and latency per service pair (at the caller
    and at the callee, by the caller's verified identity) and per route rule,
    from every sidecar of the mesh that `meshc up` runs for PATHS.

    \b
    Examples:
      meshc stat examples/shop
      meshc stat examples/shop --window 30 --format json
    """
    from ..run.telemetry import as_json, as_table

    cars = _sidecars_or_exit(paths, workdir)
    rows, rules, unreachable = _window(cars, window, _rule_locations(paths))
    if fmt == "json":
        click.echo(as_json(rows, window, unreachable, rules))
    else:
        click.echo(as_table(rows, rules))
        if unreachable:
            click.echo(f"not answering: {', '.join(unreachable)}", err=True)
    sys.exit(EXIT_OK)


@click.command("top")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The work directory of `meshc up` (default: the mesh's own).")
@click.option("--every", type=click.FloatRange(0.2, 600), default=2.0, show_default=True,
              help="Seconds between refreshes.")
def top_command(paths, workdir, every):
    """`meshc stat`, refreshed in place until Ctrl-C.

    \b
    Examples:
      meshc top examples/shop
      meshc top examples/shop --every 5
    """
    from ..run.telemetry import as_table

    cars = _sidecars_or_exit(paths, workdir)
    try:
        where = _rule_locations(paths)
        if sys.stdout.isatty():
            _top_live(cars, every, where)
        while True:  # not a terminal: one plain table per refresh
            rows, rules, unreachable = _window(cars, every, where)
            screen = as_table(rows, rules) + (f"\nnot answering: {', '.join(unreachable)}" if unreachable else "")
            sys.stdout.write(f"{time.strftime('%H:%M:%S')}  every {every:g}s\n{screen}\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(EXIT_OK)


def _top_live(cars, every: float, where: dict) -> None:
    """Tables redrawn in place (rich), until Ctrl-C."""
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    from ..run.telemetry import figure as fmt

    def table(title, rows, rule_columns):
        t = Table(title=title, title_justify="left", expand=False)
        heads = ["side", "source", "destination"] + (["rule", "at"] if rule_columns else []) + \
            ["req", "rps", "success", "p50 ms", "p95 ms", "p99 ms"]
        for h in heads:
            t.add_column(h, justify="right" if h in ("req", "rps", "success") or h.endswith("ms") else "left")
        for r in rows:
            ok = r.success is None or r.success >= 99.0
            cells = [r.side, r.source, r.destination] + ([r.rule or "", r.at or "-"] if rule_columns else []) + \
                [str(r.requests), f"{r.rate:.1f}", Text(fmt(r.success, "%"), style=None if ok else "bold red"),
                 fmt(r.p50_ms), fmt(r.p95_ms), fmt(r.p99_ms)]
            t.add_row(*cells)
        return t

    with Live(Text("first window..."), auto_refresh=False, screen=False) as live:
        while True:
            rows, rules, unreachable = _window(cars, every, where)
            parts = [Text(f"{time.strftime('%H:%M:%S')}  every {every:g}s"),
                     table("per service pair", rows, False), table("per route rule (at the caller)", rules, True)]
            if not rows:
                parts.append(Text("(no requests in the window)"))
            if unreachable:
                parts.append(Text(f"not answering: {', '.join(unreachable)}", style="yellow"))
            live.update(Group(*parts), refresh=True)
