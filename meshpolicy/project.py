"""Finding and reading the files of one mesh.

The mesh root rule (docs/language.md, "Files and projects"): walking up from
a given file or directory, the nearest directory holding `meshc.toml` is the
root. Every `.mesh` file under the root, at any depth, belongs to the mesh;
hidden directories are skipped. Without a `meshc.toml`, a directory argument
is its own root, and a file's mesh is the `.mesh` files beside it (not below
it: a stray file in a home or temp folder must not pull in every mesh under
that), up to ROOTLESS_LIMIT of them, past which the file is a mesh of its own.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .codes import diag
from .diagnostics import Diagnostic
from .span import SourceFile

MARKER = "meshc.toml"
# A file with no meshc.toml above it takes the .mesh files of its directory
# as its mesh only while there are at most this many (docs/language.md).
ROOTLESS_LIMIT = 100


@dataclass
class Project:
    root: Path
    files: dict[str, SourceFile] = field(default_factory=dict)  # display path -> source
    config: dict[str, Any] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    # display path -> the file on disk, where they differ (a git revision's
    # files extracted to a temporary directory and shown as `REV:file`)
    origins: dict[str, str] = field(default_factory=dict)


def find_root(path: Path) -> Path:
    start = path if path.is_dir() else path.parent
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / MARKER).is_file():
            return d
    return start


def mesh_files(root: Path, nested: bool = False) -> list[Path]:
    """Every `.mesh` file of the mesh rooted at root: those below it, except
    under a subdirectory with a meshc.toml of its own (another mesh) unless
    `nested`. Hidden directories are skipped; directory symlinks are not
    followed, so a link loop cannot trap the walk."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (nested or not (Path(dirpath) / d / MARKER).is_file()))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".mesh"))
    return out


MANIFEST_SUFFIXES = (".yaml", ".yml")


def manifest_files(root: Path) -> list[Path]:
    """Kubernetes YAML below root (docs/import.md), read only where a mesh has
    no `.mesh` file: a policy folder's compiled output is never mistaken for input."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames)
                   if f.endswith(MANIFEST_SUFFIXES) and not f.startswith("."))
    return out


def rootless_siblings(directory: Path) -> list[Path] | None:
    """The mesh of a file in `directory` when no meshc.toml is above it: the
    `.mesh` files directly in the directory, sorted; None when there are more
    than ROOTLESS_LIMIT (the file is then a mesh of its own)."""
    out = []
    try:
        with os.scandir(directory) as entries:
            for e in entries:
                if e.name.endswith(".mesh") and not e.is_dir():
                    out.append(Path(directory) / e.name)
                    if len(out) > ROOTLESS_LIMIT:
                        return None
    except OSError:
        return []
    return sorted(out)


def too_many_rootless(directory: Path, file_shown: str) -> Diagnostic:
    from .diagnostics import Severity

    return diag("MP001", f"`{display_path(directory)}` has more than {ROOTLESS_LIMIT} `.mesh` files and no "
                         f"`meshc.toml` above it; `{file_shown}` is checked on its own",
                help="mark the mesh's root directory with a `meshc.toml`", severity=Severity.WARNING)


def nested_roots(directory: Path) -> list[Path]:
    """The roots of the meshes below directory (not directory itself)."""
    out = []
    for dirpath, dirnames, _ in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if Path(dirpath) != Path(directory) and (Path(dirpath) / MARKER).is_file():
            out.append(Path(dirpath).resolve())
    return out


def display_path(p: Path, base: Path | None = None) -> str:
    """A path as users see it: relative to the working directory when inside it."""
    base = base or Path.cwd()
    try:
        full = Path(os.path.abspath(p))
    except OSError:
        return str(p)
    try:
        return full.relative_to(Path(os.path.abspath(base))).as_posix()
    except ValueError:
        return full.as_posix()


def load_config(root: Path) -> tuple[dict[str, Any], list[Diagnostic]]:
    """meshc.toml, checked (bad settings reported and dropped)."""
    from .config import check_config

    marker = root / MARKER
    if not marker.is_file():
        return {}, []
    try:
        text = marker.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, [diag("MP001", f"cannot read `{display_path(marker)}`: {exc}")]
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        return {}, [diag("MP001", f"cannot read `{display_path(marker)}`: values are nested too deeply")]
    return check_config(raw, SourceFile(display_path(marker), text))


# One file of a mesh, at most (meshc.toml [limits] max_file_mb): a policy file is
# kilobytes; 10 MB took 30 s to check and buried real findings in 300k others.
MAX_FILE_MB = 4


def read_source(path: Path, shown: str, max_mb: float = MAX_FILE_MB) -> tuple[SourceFile | None, Diagnostic | None]:
    import stat

    try:
        st = os.stat(path)  # follows links; a link loop raises here
        if not stat.S_ISREG(st.st_mode):
            return None, diag("MP001", f"`{shown}` is not a regular file")
        if st.st_size > max_mb * 1_000_000:
            return None, diag("MP001", f"`{shown}` is {st.st_size / 1e6:.1f} MB, over the limit of {max_mb:g} MB "
                                       "for one file; it is not read",
                              help="split it into several files, or raise `max_file_mb` under [limits] in meshc.toml")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, diag("MP001", f"`{shown}` is not UTF-8 text (byte {exc.start})")
    except (OSError, RuntimeError) as exc:
        return None, diag("MP001", f"cannot read `{shown}`: {getattr(exc, 'strerror', None) or exc}")
    if text.startswith("\ufeff"):
        text = text[1:]
    return SourceFile(shown, text), None


def read_sources(files: list[Path], diags: list[Diagnostic], max_mb: float = MAX_FILE_MB) -> dict[str, SourceFile]:
    """Each file by the path users see; one that cannot be read is a diagnostic."""
    out = {}
    for f in files:
        shown = display_path(f)
        src, err = read_source(f, shown, max_mb)
        if err:
            diags.append(err)
        else:
            out[shown] = src
    return out


def group_by_mesh(paths: list[str | Path]) -> list[list[str | Path]]:
    """The paths, grouped by the mesh they belong to (in first-seen order), so a
    command given files of several meshes (as pre-commit does) checks each.
    A directory also stands for the meshes below it (`meshc verify .` in a
    repository of meshes checks them all); it stands for its own mesh only
    when that has files of its own. Paths that do not exist join the first
    group, whose load reports them."""
    groups: dict[Path | None, list[str | Path]] = {}
    for raw in paths:
        p = Path(raw)
        try:
            root = find_root(p) if p.exists() else None
            below = nested_roots(p) if p.is_dir() else []
        except OSError:
            root, below = None, []
        if not below or root is None or mesh_files(root):
            groups.setdefault(root, []).append(raw)
        for r in below:
            groups.setdefault(r, []).append(r)
    missing = groups.pop(None, [])
    out = list(groups.values()) or [[]]
    out[0] = missing + out[0]
    return out


def load(paths: list[str | Path], whole_mesh: bool = True) -> Project:
    """Read the mesh that `paths` belong to.

    With whole_mesh, each path stands for its whole mesh (found by the root
    rule), which is what `meshc check changed.mesh` needs. All paths must
    share one root. Missing paths are reported as MP001.
    """
    diags: list[Diagnostic] = []
    roots: dict[Path, None] = {}
    explicit: list[Path] = []
    for raw in paths:
        p = Path(raw)
        try:
            exists = p.exists()
        except OSError:
            exists = False
        if not exists and not p.is_symlink():
            diags.append(diag("MP001", f"`{raw}` does not exist"))
            continue
        if p.is_file() and p.suffix not in (".mesh", *MANIFEST_SUFFIXES):
            diags.append(diag("MP001", f"`{raw}` is not a `.mesh` file or Kubernetes YAML"))
            continue
        roots[find_root(p)] = None
        explicit.append(p)
    if len(roots) > 1:
        shown = ", ".join(f"`{display_path(r)}`" for r in roots)
        diags.append(diag("MP001", f"the paths belong to different meshes ({shown}); check one mesh at a time",
                          help="pass paths of one mesh, or mark each mesh's root with a `meshc.toml`"))
        return Project(Path.cwd(), diagnostics=diags)
    root = next(iter(roots), Path.cwd().resolve())
    config, cdiags = load_config(root)
    diags.extend(cdiags)
    if whole_mesh:
        files = mesh_files(root) if roots else []
        if roots and not (root / MARKER).is_file() and not any(p.is_dir() for p in explicit):
            siblings = rootless_siblings(root)  # files without a meshc.toml: those beside them
            if siblings is None:
                diags.append(too_many_rootless(root, display_path(explicit[0])))
            files = explicit[:] if siblings is None else siblings
        if roots and not files:  # no .mesh files: the mesh is the Kubernetes YAML below the root
            files = manifest_files(root)
        # A file named on the command line is read even where the walk skips it (hidden folders).
        seen = {os.path.abspath(f) for f in files}
        files += [p for p in explicit if not p.is_dir() and os.path.abspath(p) not in seen]
    else:
        files = []
        for p in explicit:
            files.extend((mesh_files(p) or manifest_files(p)) if p.is_dir() else [p])
    project = Project(root, config=config, diagnostics=diags)
    project.files.update(read_sources(files, diags, config.get("limits", {}).get("max_file_mb", MAX_FILE_MB)))
    if roots and not project.files and not diags:
        inner = nested_roots(root)
        if inner:
            names = ", ".join(f"`{display_path(r)}`" for r in inner[:5]) + (", ..." if len(inner) > 5 else "")
            diags.append(diag("MP001", f"`{display_path(root)}` has no `.mesh` files of its own; the meshes "
                                       f"below it are {names}", help="name one of them"))
        else:
            diags.append(diag("MP001", f"no `.mesh` files (or Kubernetes YAML) under `{display_path(root)}`"))
    return project


def from_texts(texts: dict[str, str], root: Path | None = None) -> Project:
    """A project from in-memory texts (the language server's open buffers)."""
    project = Project(root or Path.cwd())
    for name, text in texts.items():
        project.files[name] = SourceFile(name, text)
    return project
