"""`meshc check`: parse and type-check a mesh."""

from __future__ import annotations

import sys

import click

from ..cli import LazyGroup
from ..gc_pause import gc_paused, keep_until_exit
from ..pipeline import check_project
from .common import emit, exit_code, fail_on_option, progress_bar, projects, report_options


@click.command("check")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@report_options
@fail_on_option
def command(paths, fmt, color, quiet, fail_on):
    """Parse and type-check the mesh that PATHS belong to.

    A file stands for its whole mesh: the nearest directory above it with a
    meshc.toml (else its own directory). Exit 0 when clean (warnings allowed),
    1 when errors were found, 2 when input could not be read.

    \b
    Examples:
      meshc check examples/shop
      meshc check services/orders.mesh --format sarif > meshc.sarif
    """
    diags, sources = [], {}
    for project in projects(paths):  # files of several meshes: each mesh on its own
        # settle: the trees and model stay alive until exit, so no collection needs to scan them
        # (in meshc's own process only: a test's in-process CliRunner goes on living)
        with progress_bar(project, quiet) as progress, gc_paused(settle=LazyGroup.settle_imports):
            checked = check_project(project, progress=progress)
        diags += checked.diagnostics
        sources.update(checked.project.files)
        if LazyGroup.settle_imports:
            keep_until_exit(checked)  # frozen above: the process ends without freeing it
    emit(diags, sources, fmt, color=color, quiet=quiet)
    sys.exit(exit_code(diags, fail_on))
