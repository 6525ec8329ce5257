"""`meshc diff`: which requests a policy change decides or routes differently."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import click

from ..diagnostics import has_errors
from ..pipeline import check_project
from ..diagnostics import Diagnostic, Label
from ..project import Project, display_path, find_root, load, mesh_files
from ..span import SourceFile, Span
from .common import EXIT_ERRORS, EXIT_OK, EXIT_USAGE, emit

EXIT_CHANGED = 1


@click.command("diff")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--git", "rev", metavar="REV", help="Compare the mesh at git revision REV with the working tree.")
@click.option("--against", "live", type=click.Path(), metavar="DIR",
              help="Compare live Kubernetes YAML (Istio, Gateway API) in DIR with the policy PATH: drift.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
              help="text for a terminal, json for tools, markdown for a pull-request comment.")
def command(paths, rev, live, fmt):
    """Show the requests whose authorization decision or route differs between
    two meshes, grouped into request classes with a witness request each, and
    the calls that became possible or impossible.

    Give OLD and NEW (files or directories), or `--git REV [NEW]` to compare
    the mesh as committed at REV with the working tree (NEW defaults to `.`).

    Exit 0 when nothing changed, 1 when something did, 2 when a mesh could not
    be read or has errors (like `diff`, so CI can tell "changed" from "broken").

    \b
    Examples:
      meshc diff old/ new/
      meshc diff --git origin/main examples/shop --format markdown > comment.md
      meshc diff --against k8s/ policy/     # what the live config decides differently
    """
    if live:  # the live config is the old side (docs/import.md, "Drift")
        if rev or len(paths) != 1:
            raise click.UsageError("with --against DIR give the policy path only (no --git)")
        paths = (live, paths[0])
    with tempfile.TemporaryDirectory(prefix="meshc-diff-") as tmp:
        if rev:
            if len(paths) > 1:
                raise click.UsageError("with --git give at most one path (the new mesh)")
            new_path = Path(paths[0] if paths else ".")
            try:
                old_path, label = _checkout(rev, new_path, Path(tmp) / "old")
            except RuntimeError as exc:
                click.echo(f"meshc diff: {exc}", err=True)
                sys.exit(EXIT_USAGE)
            # A mesh missing at REV (the pull request that adds it) is empty: everything is added.
            old_project = _relabel(load([old_path]), Path(tmp) / "old", label) \
                if mesh_files(Path(tmp) / "old", nested=True) else Project(old_path)
        else:
            if len(paths) != 2:
                raise click.UsageError("give OLD and NEW, or --git REV [NEW]")
            old_path, new_path = Path(paths[0]), Path(paths[1])
            old_project = load([old_path])
        old, new = check_project(old_project), check_project(load([new_path]))
        for side in (old, new):
            if has_errors(side.diagnostics):
                errors = [d for d in side.diagnostics if d.is_error]
                if fmt == "json":  # tools get JSON either way: the diagnostics document, as `meshc check` writes
                    emit(errors, side.project.files, "json", tool_command="diff")
                else:
                    emit(errors, side.project.files, "text", out=sys.stderr)
                sys.exit(EXIT_USAGE)
        from ..verify import diff as mdiff
        from ..verify.atoms import Undecided, Unsupported

        try:
            result = mdiff.diff(old.mesh, new.mesh)
        except (Unsupported, Undecided) as exc:
            click.echo(f"meshc diff: cannot compare exactly: {exc}", err=True)
            sys.exit(EXIT_ERRORS + 1)
    if fmt == "json":
        sys.stdout.write(json.dumps(result.as_json(), indent=2) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(mdiff.markdown(result))
    else:
        sys.stdout.write(mdiff.text(result))
    sys.exit(EXIT_CHANGED if result.changed else EXIT_OK)


def _checkout(rev: str, new_path: Path, dest: Path) -> tuple[Path, str]:
    """The mesh NEW belongs to, as committed at REV, extracted into dest, with
    the name users see for dest (`REV:dir`). A directory REV does not have is
    left empty."""
    if not new_path.exists():
        raise RuntimeError(f"`{display_path(new_path)}` does not exist")
    root = find_root(new_path)
    top = Path(_git(["rev-parse", "--show-toplevel"], root).decode().strip())
    try:
        _git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], top)
    except RuntimeError:
        raise RuntimeError(f"`{rev}` is not a commit of the repository at `{display_path(top)}`") from None
    rel = root.resolve().relative_to(top.resolve())
    dest.mkdir()
    spec = f"{rev}:{rel.as_posix()}" if rel.parts else f"{rev}:"
    if not rel.parts or _git(["ls-tree", "-d", "--name-only", rev, "--", rel.as_posix()], top).strip():
        data = _git(["archive", "--format=tar", spec], top)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest, filter="data")
    if new_path.resolve() != root.resolve():
        sub = new_path.resolve().relative_to(root.resolve())
        if (dest / sub).exists():
            return dest / sub, spec
    return dest, spec


def _relabel(project: Project, dest: Path, label: str) -> Project:
    """The old side's files and messages named `REV:dir/file`, never by the temporary directory."""
    prefix = display_path(dest)
    sep = "" if label.endswith(":") else "/"

    def name(shown: str) -> str:
        return label + sep + shown[len(prefix):].lstrip("/") if shown.startswith(prefix) else shown

    def span(s: Span | None) -> Span | None:
        return s._replace(file=name(s.file)) if s is not None and s.file else s

    def text(s: str) -> str:
        return s.replace(prefix + "/", label + sep).replace(prefix, label)

    files = {name(k): SourceFile(name(k), v.text) for k, v in project.files.items()}
    origins = {name(k): str(Path(k).resolve()) for k in project.files}
    diags = [Diagnostic(d.code, d.severity, text(d.message), span(d.span),
                        [Label(span(lb.span), lb.message) for lb in d.labels],
                        d.help and text(d.help), [text(n) for n in d.notes], [], d.witness)
             for d in project.diagnostics]
    return Project(project.root, files, project.config, diags, origins)


def _git(args: list[str], cwd: Path) -> bytes:
    try:
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("git is not installed") from None
    if res.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {res.stderr.decode(errors='replace').strip()}")
    return res.stdout
