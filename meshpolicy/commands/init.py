"""`meshc init`: start a mesh in a directory, ready for checks and hooks."""

from __future__ import annotations

import os
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import click

from .common import EXIT_OK, EXIT_USAGE

CONFIG = """\
# The root of this mesh: every .mesh file below this directory belongs to it.
[verify]
# Worst-case latency adds this per hop (two sidecars per hop).
sidecar_ms = 3
sidecars_per_hop = 2
"""

STARTER = """\
# A starter mesh: a web front end (called by any workload with a mesh
# identity, such as an ingress gateway) and the API it calls.
#   meshc check .      parse and type-check
#   meshc verify .     prove properties, with witness requests
#   meshc compile . --target istio -o out/istio
mesh {name} {{
  trust_domain "example.org"
  mtls strict
  default deny
}}

service web {{
  namespace edge
  port 8080 http
  version v1
  timeout 2s
}}

service api {{
  namespace demo
  port 8080 http
  version v1
  timeout 1s
}}

route api {{
  GET /api/** -> v1 retry 2 per_try 300ms on 5xx, connect-failure
  *           -> v1
}}

allow authenticated -> web GET /, /static/**
deny namespace demo -> web
allow web -> api GET, POST /api/**

assert never api -> web
assert only web -> api
"""

LOCAL_HOOKS = """\
# pre-commit hooks (https://pre-commit.com): `pre-commit install` to run them on
# every commit. They use the meshc installed in this environment; to let
# pre-commit install meshc itself, use the hooks of the meshc repository:
#   - repo: <meshc repository URL>
#     rev: <tag>
#     hooks: [{id: meshc-verify}, {id: meshc-fmt}]
repos:
  - repo: local
    hooks:
      - id: meshc-verify
        name: meshc verify
        entry: meshc verify
        language: system
        files: \\.mesh$
        require_serial: true
      - id: meshc-fmt
        name: meshc fmt
        entry: meshc fmt --check
        language: system
        files: \\.mesh$
"""

REMOTE_HOOKS = """\
# pre-commit hooks (https://pre-commit.com): `pre-commit install` to run them on
# every commit; pre-commit installs meshc from the repository below.
repos:
  - repo: {repo}
    rev: {rev}
    hooks:
      - id: meshc-verify
      - id: meshc-fmt
"""


GITIGNORE = """\
# meshc's generated state (certificates and keys, configs, logs) when a
# `meshc up --workdir` points inside the policy folder; never commit it.
.meshc/
"""


def _mesh_name(directory: Path) -> str:
    """The directory's name as a mesh name: accents dropped (`ünï` -> `uni`),
    other runs of characters a name cannot hold become `-`."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", directory.resolve().name)
                    if not unicodedata.combining(c))
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", plain).strip("-_")
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(-[A-Za-z0-9_]+)*", name or "") else "starter"


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--hooks-repo", metavar="URL", help="Point the pre-commit config at meshc's repository "
              "(with --hooks-rev) instead of the meshc installed locally.")
@click.option("--hooks-rev", metavar="REV", help="Tag or commit for --hooks-repo (default: main).")
def command(directory: Path, hooks_repo, hooks_rev):
    """Start a mesh in DIRECTORY (default: here): a meshc.toml marking the
    mesh root, a small starter mesh (mesh.mesh) that checks and verifies
    clean, a .pre-commit-config.yaml running `meshc verify` and
    `meshc fmt --check` on changed .mesh files, and a .gitignore keeping
    meshc's generated state (.meshc/) out of commits.

    Existing files are never overwritten: if any of the first three exists,
    nothing is written and the exit status is 2; an existing .gitignore is
    kept as it is.

    \b
    Examples:
      meshc init policy/
      meshc init --hooks-repo https://example.org/meshpolicy.git --hooks-rev v0.1.0
    """
    if hooks_rev is not None and not hooks_repo:
        raise click.UsageError("--hooks-rev needs --hooks-repo (the repository the revision is of)")
    hooks = REMOTE_HOOKS.format(repo=hooks_repo, rev=hooks_rev or "main") if hooks_repo else LOCAL_HOOKS
    files = {
        "meshc.toml": CONFIG,
        "mesh.mesh": STARTER.format(name=_mesh_name(directory)),
        ".pre-commit-config.yaml": hooks,
    }
    # lexists: a dangling symlink is something there too, never written through
    existing = [name for name in files if os.path.lexists(directory / name)]
    if existing:
        for name in existing:
            click.echo(f"meshc init: {directory / name} already exists; not overwriting", err=True)
        click.echo("meshc init: nothing written", err=True)
        sys.exit(EXIT_USAGE)
    written: list[Path] = []
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            with open(directory / name, "x", encoding="utf-8") as f:  # "x": never clobber a file made meanwhile
                written.append(directory / name)
                f.write(text)
    except OSError as exc:
        for path in written:  # all or nothing: only what this run created is removed
            path.unlink(missing_ok=True)
        click.echo(f"meshc init: cannot write in {directory}: {exc.strerror or exc}; nothing written", err=True)
        sys.exit(EXIT_USAGE)
    try:
        with open(directory / ".gitignore", "x", encoding="utf-8") as f:
            f.write(GITIGNORE)
        files[".gitignore"] = GITIGNORE
    except FileExistsError:
        click.echo(f"meshc init: kept the existing {directory / '.gitignore'} (add `.meshc/` to it)", err=True)
    except OSError as exc:
        click.echo(f"meshc init: cannot write {directory / '.gitignore'}: {exc.strerror or exc}", err=True)
    for name in files:
        click.echo(f"created {directory / name}")
    click.echo(f"next: meshc check {shlex.quote(str(directory))}")  # a command to paste: quoted
    sys.exit(EXIT_OK)
