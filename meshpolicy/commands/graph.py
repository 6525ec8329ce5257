"""`meshc graph`: draw the allowed call graph."""

from __future__ import annotations

import sys

import click

from ..diagnostics import has_errors
from ..pipeline import check_project
from ..project import load
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit


@click.command("graph")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True)
def command(paths, fmt):
    """Draw who may call whom: edges are labelled with the methods and paths
    the allow rules admit; route rules for callers that may not call are
    drawn dashed ("routed, but denied"). `(outside)` is callers without a
    mesh identity; `internet` enters through the ingresses (trapezoids),
    whose edges show the rules that forward; externals are hexagons.

    \b
    Examples:
      meshc graph examples/shop > shop.mmd
      meshc graph examples/bookinfo --format dot | dot -Tsvg > bookinfo.svg
    """
    checked = check_project(load(list(paths)))
    if has_errors(checked.diagnostics):
        emit(checked.diagnostics, checked.project.files, "text", out=sys.stderr)
        sys.exit(EXIT_USAGE if any(d.code == "MP001" for d in checked.diagnostics) else EXIT_ERRORS)
    from ..verify import callgraph, drawing

    g = callgraph.build_graph(checked.mesh)
    sys.stdout.write(drawing.mermaid(checked.mesh, g) if fmt == "mermaid" else drawing.dot(checked.mesh, g))
    sys.exit(EXIT_OK)
