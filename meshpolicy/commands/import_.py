"""`meshc import`: Kubernetes YAML (Istio, Gateway API) -> .mesh files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..diagnostics import has_errors
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit, report_options


@click.command("import")
@click.argument("source", type=click.Choice(["istio", "gateway-api"]))
@click.argument("paths", nargs=-1, type=click.Path(), required=True)
@click.option("--output", "-o", "outdir", type=click.Path(file_okay=False), required=True,
              help="Directory to write the .mesh files and meshc.toml to.")
@click.option("--report", "with_report", is_flag=True,
              help="Print what was imported, approximated and refused, per kind and field.")
@click.option("--root-namespace", default="istio-system", show_default=True,
              help="Istio's root namespace (meshConfig.rootNamespace): its policies apply mesh-wide.")
@click.option("--name", "name", default="imported", show_default=True, help="The mesh's name.")
@click.option("--trust-domain", default=None,
              help="Istio's trust domain (meshConfig.trustDomain); default: the one the principals name, else cluster.local.")
@click.option("--force", is_flag=True, help="Replace --output even when it holds files meshc did not write.")
@report_options
def command(source, paths, outdir, with_report, root_namespace, name, trust_domain, force, fmt, color, quiet):
    """Read Istio or Gateway API manifests and write them as a mesh.

    PATHS are YAML files or folders of them (plain multi-document YAML, or
    `kustomize build` / `helm template` output). Every field that cannot be
    carried over is reported with its file, line and column; nothing is
    dropped silently. Nothing is written when the input has errors (a
    subset no DestinationRule defines, a host that names no Service, ...).

    \b
    Examples:
      meshc import istio k8s/ -o policy/ --report
      kustomize build overlays/prod > prod.yaml && meshc import istio prod.yaml -o policy/
      meshc import gateway-api routes/ -o policy/
    """
    from ..compile import Output, write_atomic
    from ..importers import import_sources
    from ..importers.emit import files_for
    from ..importers.inventory import mesh_name
    from ..importers.report import coverage_table
    from ..project import manifest_files, read_sources
    from .compile import refused_output

    sources, diags = {}, []
    for raw in paths:
        p = Path(raw)
        files = manifest_files(p) if p.is_dir() else [p] if p.exists() else []
        if not files:
            from ..codes import diag

            diags.append(diag("MP001", f"`{raw}` " + ("holds no YAML files" if p.is_dir() else "does not exist")))
        sources.update(read_sources(files, diags))
    diags += refused_output(Path(outdir), force)
    if has_errors(diags):
        emit(diags, sources, fmt, color=color, quiet=quiet, tool_command="import")
        sys.exit(EXIT_USAGE)
    result = import_sources(sources, root_namespace=root_namespace, mesh_name=mesh_name(name), flavour=source,
                            trust_domain=trust_domain, emitting=True)
    diags += result.diagnostics
    if not has_errors(diags):
        # The same checks `meshc check k8s/` runs: a name no .mesh file can hold (a namespace
        # `../x`, a label value with quotes) is reported at its YAML line, and nothing is written.
        from ..checks import run_checks

        # The files the mesh names do not exist yet: JWKS files are written below, TLS files
        # are the user's to provide (MP920 says where); their checks run on the written policy.
        diags += [d for d in run_checks(result.mesh) if d.is_error and d.code not in ("MP223", "MP232")]
    written = 0
    if not has_errors(diags):
        files = files_for(result.mesh)
        files["meshc.toml"] = (f"# Imported by `meshc import {source}` from {len(sources)} YAML file"
                               f"{'s' * (len(sources) != 1)}; see docs/import.md.\n")
        # inline JWKS from the YAML, only under the output directory (names meshc made: jwks/<provider>.json)
        files.update(result.files or {})
        outputs = [Output(path, text) for path, text in sorted(files.items())]
        diags += write_atomic(Path(outdir), outputs, force=force)
        written = len(outputs)
    emit(diags, sources, fmt, color=color, quiet=quiet, tool_command="import")
    if with_report:
        (sys.stderr if fmt != "text" else sys.stdout).write(coverage_table(result.coverage))
    code = EXIT_USAGE if any(d.code in ("MP704", "MP705") for d in diags) else \
        EXIT_ERRORS if has_errors(diags) else EXIT_OK
    if code == EXIT_OK and not quiet and fmt == "text":
        click.echo(f"wrote {written} files to {outdir}")
    sys.exit(code)
