"""`meshc certs`: the mesh CA and one certificate per service account."""

from __future__ import annotations

import sys

import click

from ..codes import diag
from ..pipeline import check_project
from ..project import load
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit, exit_code, report_options


@click.command("certs")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--output", "-o", "outdir", type=click.Path(file_okay=False), required=True,
              help="Directory for ca.pem and <namespace>/<account>/{cert,key}.pem.")
@click.option("--force", is_flag=True, help="Replace an existing CA (and so every workload certificate).")
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True,
              help="Validity of workload certificates.")
@click.option("--renew", is_flag=True,
              help="Re-issue every workload certificate under the existing CA (rotation; running sidecars "
                   "pick them up).")
@report_options
def command(paths, outdir, force, days, renew, fmt, color, quiet):
    """Issue the mesh CA and a SPIFFE certificate for every service account
    of the mesh that PATHS belong to.

    Idempotent: an existing CA is kept unless --force, and workload
    certificates are only (re)issued when missing, signed by another CA,
    naming another identity, or expiring within 30 days. Keys are written
    with mode 0600. Uses the mesh's trust_domain for the SPIFFE IDs.
    A certificate and its key are replaced together (one symlink swap), so
    a sidecar reloading them never sees a mismatched pair.

    \b
    Examples:
      meshc certs examples/shop -o certs/
      meshc certs examples/shop -o certs/ --renew
      meshc compile examples/shop --target envoy --certs-dir certs/ -o out/envoy
    """
    from ..certs import issue

    from ..compile.output_dir import OutputRefused, resolve_output

    checked = check_project(load(list(paths)))
    diags = list(checked.diagnostics)
    issued = None
    try:  # the same refusal as `compile -o`: a symlink loop or a file is no place for keys
        resolve_output(outdir)
    except OutputRefused as exc:
        emit(diags + [diag(exc.code, str(exc), help="give --output a directory, or a path where one can be created")],
             checked.project.files, fmt, color=color, quiet=quiet, tool_command="certs")
        sys.exit(EXIT_USAGE)
    if checked.ok:
        try:
            issued = issue(checked.mesh, outdir, force=force, days=days, renew=renew)
        except (OSError, ValueError) as exc:
            diags.append(diag("MP703", f"cannot issue certificates into `{outdir}`: {exc}",
                              help="check the directory, or pass --force to start a new CA"))
    if diags or not quiet:
        emit(diags, checked.project.files, fmt, color=color, quiet=quiet, tool_command="certs")
    code = exit_code(diags)
    if issued is not None and not quiet and fmt == "text":
        click.echo(f"{outdir}: {len(issued.created)} created, {len(issued.kept)} kept")
        for f in issued.created:
            click.echo(f"  created {f}")
    sys.exit(code if issued is not None or code != EXIT_OK else EXIT_ERRORS)
