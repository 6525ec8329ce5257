"""Where `meshc up` keeps what it generates (CA and workload keys, configs,
logs): a per-user directory outside the policy tree, so that a `git add -A`
in the policy repository can never stage a private key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

IGNORE_ALL = "# written by meshc: generated state (keys, configs, logs), never to be committed\n*\n"


def state_root() -> Path:
    """$XDG_STATE_HOME/meshc, else ~/.local/state/meshc (the XDG default;
    a relative XDG_STATE_HOME is ignored, as the spec says)."""
    xdg = os.environ.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "meshc"


def private_dir(path: Path) -> Path:
    """mkdir -p with the new directories 0700, and path itself made 0700."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        os.mkdir(d, 0o700)
    os.chmod(path, 0o700)
    return path


def up_workdir(mesh_root: Path) -> Path:
    """The default `meshc up` work directory of the mesh at mesh_root:
    <state root>/up/<name>-<hash of the root's path>, mode 0700."""
    root = mesh_root.resolve()
    digest = hashlib.sha256(os.fsencode(root)).hexdigest()[:16]
    d = private_dir(state_root() / "up" / f"{root.name or 'root'}-{digest}")
    marker = d / "mesh-root"
    if not marker.exists():
        marker.write_text(f"{root}\n")
    return d


def ignore_in_tree(workdir: Path, mesh_root: Path) -> None:
    """A work directory placed inside the policy tree gets a .gitignore
    ignoring everything in it (and a .meshc/ folder on the way one too)."""
    wd, root = workdir.resolve(), mesh_root.resolve()
    if wd != root and root not in wd.parents:
        return
    targets = [wd] + [p for p in wd.parents if p.name == ".meshc" and root in p.parents]
    for d in targets:
        gi = d / ".gitignore"
        if d != root and not gi.exists():
            gi.write_text(IGNORE_ALL)
