"""`meshc verify`: check, then prove properties over every request."""

from __future__ import annotations

import sys

import click

from ..diagnostics import has_errors
from ..pipeline import check_project
from ..triage import VERIFY_STAGES
from .common import emit, exit_code, fail_on_option, progress_bar, projects, report_options


@click.command("verify")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--timeout-ms", type=click.IntRange(min=1), default=None,
              help="Solver time limit per query (default 2000, or [verify] timeout_ms in meshc.toml).")
@click.option("--verbose", "-v", is_flag=True, help="Also report assertions that were proved.")
@click.option("--certify", is_flag=True,
              help="Re-decide every finding and verdict with an independent Z3 encoding; a disagreement is MP590.")
@report_options
@fail_on_option
def command(paths, timeout_ms, verbose, certify, fmt, color, quiet, fail_on):
    """Check the mesh that PATHS belong to, then verify it: dead, redundant and
    overlapping authorization rules, unreachable route rules, versions that get
    no traffic, routes that authorization always denies, the call graph
    (cycles, retry amplification, latency), mTLS, and every `assert`.

    Each finding carries a witness request, re-checked with the reference
    evaluator. Exit 0 when no errors (warnings allowed), 1 on any error or
    refuted assertion, 2 when input could not be read. With check errors the
    verifier does not run.

    \b
    Examples:
      meshc verify examples/shop
      meshc verify . --format sarif > verify.sarif
      meshc verify . --timeout-ms 10000 --verbose
      meshc verify . --certify
    """
    from ..gc_pause import gc_paused

    all_diags, sources = [], {}
    for project in projects(paths):  # files of several meshes: each mesh on its own
        # settle: the model, partitions and findings stay alive until exit; collections that rescan
        # them cost more than the analysis (15 s of CPU at 10,000 services, docs/performance.md)
        with progress_bar(project, quiet) as progress, gc_paused(settle=True):
            checked = check_project(project, progress=progress)
            diags = list(checked.diagnostics)
            sources.update(checked.project.files)
            if not has_errors(diags):
                from ..verify import run

                config = dict(checked.project.config)
                vcfg = dict(config.get("verify") or {})
                if timeout_ms is not None:
                    vcfg["timeout_ms"] = timeout_ms
                if verbose:
                    vcfg["verbose"] = True
                config["verify"] = vcfg
                found, stages = run(checked.mesh, config, progress=progress), VERIFY_STAGES
                if certify:
                    from ..verify.certify import certify as certify_findings

                    found, stages = found + certify_findings(checked.mesh, found, config), stages | {"certify"}
                diags.extend(checked.more(found, stages))
        all_diags += diags
    emit(all_diags, sources, fmt, color=color, quiet=quiet, tool_command="verify")
    sys.exit(exit_code(all_diags, fail_on))
