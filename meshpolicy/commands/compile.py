"""`meshc compile`: lower a checked mesh to a target and write it atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..compile import TARGETS, CompileOptions, compile_mesh, write_atomic
from ..diagnostics import has_errors
from ..pipeline import check_project
from ..project import load
from .common import EXIT_ERRORS, EXIT_OK, emit, exit_code, report_options


def unsafe_output(outdir: Path, root: Path) -> str | None:
    """The output directory is replaced as a whole: never let that be the
    sources (the mesh root, a folder above it, or one holding .mesh files)."""
    out = outdir.resolve()
    root = root.resolve()
    if out == root or out in root.parents:
        return f"--output {outdir} would replace the mesh's own folder; write to a folder of its own"
    if out.is_dir():
        for p in out.rglob("*"):
            if p.name == "meshc.toml" or p.suffix == ".mesh":
                return f"--output {outdir} holds mesh sources ({p.relative_to(out)}); it would be replaced as a whole"
    return None


@click.command("compile")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--target", "-t", type=click.Choice(TARGETS), required=True, help="What to generate.")
@click.option("--output", "-o", "outdir", type=click.Path(file_okay=False), help="Directory to (re)write.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the files instead of writing a directory.")
@click.option("--certs-dir", default=None, help="Where workloads find their certificates at run time.")
@report_options
def command(paths, target, outdir, to_stdout, certs_dir, fmt, color, quiet):
    """Compile the mesh that PATHS belong to into TARGET's configuration.

    Output is deterministic and sorted. The output directory is replaced as a
    whole, only when the policy has no errors and the output validated; a
    failed compile leaves the previous output untouched.

    \b
    Examples:
      meshc compile examples/shop --target istio -o out/istio
      meshc compile examples/bookinfo --target envoy --stdout
    """
    if bool(outdir) == bool(to_stdout):
        raise click.UsageError("give exactly one of --output DIR and --stdout")
    checked = check_project(load(list(paths)))
    if outdir:
        refusal = unsafe_output(Path(outdir), checked.project.root)
        if refusal:
            raise click.UsageError(refusal)
    diags = list(checked.diagnostics)
    outputs = []
    if checked.ok:
        settings = checked.project.config.get("compile", {}).get(target, {})
        options = CompileOptions(settings=settings)
        if certs_dir:
            options.certs_dir = certs_dir
        outputs, cdiags = compile_mesh(checked.mesh, target, options)
        diags += cdiags
    if not has_errors(diags):
        if to_stdout:
            for o in outputs:
                sys.stdout.write(f"# ---- {o.path}\n{o.content}")
                if not o.content.endswith("\n"):
                    sys.stdout.write("\n")
        else:
            diags += write_atomic(Path(outdir), outputs)
    # Diagnostics go to stderr when the files go to stdout.
    stream = sys.stderr if to_stdout else sys.stdout
    if diags or not quiet:
        if not (to_stdout and not diags):
            emit(diags, checked.project.files, fmt, color=color, quiet=quiet, out=stream, tool_command="compile")
    code = exit_code(diags)
    if code == EXIT_OK and not to_stdout and not quiet and fmt == "text":
        click.echo(f"wrote {len(outputs)} file{'s' * (len(outputs) != 1)} to {outdir}")
    sys.exit(code if code != EXIT_OK or not has_errors(diags) else EXIT_ERRORS)
