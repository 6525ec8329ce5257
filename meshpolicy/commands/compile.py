"""`meshc compile`: lower a checked mesh to a target and write it atomically."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..compile import TARGETS, CompileOptions, compile_mesh, write_atomic
from ..diagnostics import has_errors
from ..pipeline import check_project
from ..project import load
from ..triage import VERIFY_STAGES, compile_stages
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit, exit_code, fail_on_option, report_options


# Refusals of the output folder itself: bad input, so exit 2 like unreadable sources.
OUTPUT_REFUSED = ("MP704", "MP705")


def unsafe_output(outdir: Path, root: Path, force: bool) -> str | None:
    """The output directory is replaced as a whole: never let that be the
    sources (the mesh root, a folder above it, or, with --force, which skips
    the ownership check, one holding .mesh files)."""
    try:
        out = outdir.resolve()
    except RuntimeError:  # a symlink loop: write_atomic reports it (MP705)
        return None
    root = root.resolve()
    if out == root or out in root.parents:
        return f"--output {outdir} would replace the mesh's own folder; write to a folder of its own"
    if force and out.is_dir():
        for p in out.rglob("*"):
            if p.name == "meshc.toml" or p.suffix == ".mesh":
                return f"--output {outdir} holds mesh sources ({p.relative_to(out)}); it would be replaced as a whole"
    return None


def refused_output(outdir: Path, force: bool) -> list:
    """MP704/MP705 when -o is not a directory meshc may replace."""
    from ..codes import diag
    from ..compile.output_dir import OutputRefused, check_replaceable

    try:
        check_replaceable(outdir, force)
    except OutputRefused as exc:
        return [diag(exc.code, str(exc))]
    return []


def _verify(checked, progress=None) -> list:
    """What `meshc verify` adds for this mesh (its config's [verify] table)."""
    from ..verify import run

    return run(checked.mesh, checked.project.config, progress=progress)


@click.command("compile")
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--target", "-t", "target_arg", required=True, metavar="TARGET[,TARGET...]|all",
              help=f"What to generate: {', '.join(TARGETS)}; several, comma-separated, or `all` "
                   "write each target's files under a folder named after it.")
@click.option("--output", "-o", "outdir", type=click.Path(file_okay=False), help="Directory to (re)write.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the files instead of writing a directory.")
@click.option("--certs-dir", default=None, help="Where workloads find their certificates at run time.")
@click.option("--verify", "with_verify", is_flag=True,
              help="Run `meshc verify` first; write nothing when it finds an error (a refuted assert, ...).")
@click.option("--force", is_flag=True,
              help="Replace --output even when it holds files meshc did not write (they are deleted).")
@report_options
@fail_on_option
def command(paths, target_arg, outdir, to_stdout, certs_dir, with_verify, force, fmt, color, quiet, fail_on):
    """Compile the mesh that PATHS belong to into TARGET's configuration.

    Output is deterministic and sorted. The output directory is replaced as a
    whole (atomically), only when the policy has no errors and the output
    validated; a failed compile leaves the previous output untouched. It is
    only replaced when it is new, empty, or output meshc wrote (listed in its
    .meshc-output); otherwise exit 2, unless --force.

    Several targets (`--target istio,envoy` or `all`) read, check and plan
    the mesh once; DIR then holds a folder per target (DIR/istio/...), and
    is written only when every target compiled: one failing target writes
    nothing.

    \b
    Examples:
      meshc compile examples/shop --target istio -o out/istio
      meshc compile examples/bookinfo --target envoy --stdout
      meshc compile . --verify --target istio -o deploy/istio
      meshc compile examples/shop --target istio,envoy -o out/shop
    """
    if bool(outdir) == bool(to_stdout):
        raise click.UsageError("give exactly one of --output DIR and --stdout")
    from ..compile.several import parse_targets

    try:
        targets = parse_targets(target_arg)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--target'") from None
    several = "," in target_arg or target_arg.strip() == "all"  # a folder per target
    from .common import progress_bar

    project = load(list(paths))
    diags = []
    if outdir:
        refusal = unsafe_output(Path(outdir), project.root, force)
        if refusal:
            raise click.UsageError(refusal)
        diags += refused_output(Path(outdir), force)  # before the work, not after it
    outputs = []
    from ..gc_pause import gc_paused

    with progress_bar(project, quiet) as progress:
        with gc_paused():  # the model is built to stay: rescanning it is wasted (1.2 s at 10,000 services)
            checked = check_project(project, progress=progress)
        diags += checked.diagnostics
        if checked.ok and with_verify and not has_errors(diags):
            diags += checked.more(_verify(checked, progress), VERIFY_STAGES)
        if checked.ok and not has_errors(diags):
            options = {}
            for target in targets:
                options[target] = CompileOptions(settings=checked.project.config.get("compile", {}).get(target, {}))
                if certs_dir:
                    options[target].certs_dir = certs_dir
            if several:
                from ..compile.several import compile_targets

                outputs, cdiags = compile_targets(checked.mesh, targets, options, progress=progress)
                stages = frozenset().union(*(compile_stages(t) for t in targets))
            else:
                outputs, cdiags = compile_mesh(checked.mesh, targets[0], options[targets[0]], progress=progress)
                stages = compile_stages(targets[0])
            diags += checked.more(cdiags, stages)
        # --fail-on warning: a failing compile writes nothing, as with errors
        if not has_errors(diags) and exit_code(diags, fail_on) == EXIT_OK:
            if to_stdout:
                for o in outputs:
                    sys.stdout.write(f"# ---- {o.path}\n{o.content}")
                    if not o.content.endswith("\n"):
                        sys.stdout.write("\n")
            else:
                if progress:
                    progress("writing", 0, 1)
                diags += write_atomic(Path(outdir), outputs, force=force)
    # Diagnostics go to stderr when the files go to stdout.
    stream = sys.stderr if to_stdout else sys.stdout
    if diags or not quiet:
        if not (to_stdout and not diags):
            emit(diags, checked.project.files, fmt, color=color, quiet=quiet, out=stream, tool_command="compile")
    if fmt == "text" and not quiet:
        from ..targets.waivers import summary

        line = summary(diags)  # waived constructs: also recorded in the output itself
        if line:
            click.echo(line, err=to_stdout)
    code = EXIT_USAGE if any(d.code in OUTPUT_REFUSED for d in diags) else exit_code(diags, fail_on)
    if code == EXIT_OK and not to_stdout and not quiet and fmt == "text":
        click.echo(f"wrote {len(outputs)} file{'s' * (len(outputs) != 1)} to {outdir}")
    sys.exit(code if code != EXIT_OK or not has_errors(diags) else EXIT_ERRORS)
