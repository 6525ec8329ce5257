"""Replacing an output directory safely: only one meshc wrote, all at once.

`meshc compile -o DIR` replaces DIR as a whole. Two things make that safe:

- Ownership. Every output directory gets a manifest (MANIFEST) listing the
  files meshc wrote with their SHA-256. A non-empty DIR is replaced only when
  its contents are exactly what its manifest lists; anything else (a `.git`
  folder, a file a person added or edited) is refused with MP704 unless the
  caller forces it.
- Atomicity. The new files are written to a sibling temporary directory
  which is exchanged with DIR by renameat2(RENAME_EXCHANGE) on Linux: DIR
  never goes missing. Where that call is unavailable (another OS, a file
  system without it) the fallback is two renames, with a moment in which DIR
  does not exist (docs/security.md, "Output folder").

Temporary directories carry the writer's pid in their name; ones whose
writer is dead (a killed run) are removed by the next write to that parent.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from ..codes import diag
from ..diagnostics import Diagnostic

# No .json/.yaml suffix: `kubectl apply -f DIR` and globs over the output read those.
MANIFEST = ".meshc-output"
_TMP = re.compile(r"\.(?P<name>.+)\.meshc-(?:new|old)-(?P<pid>[0-9]+)-[0-9a-f]{8}")


class OutputRefused(Exception):
    """DIR is not meshc's to replace; `code` is MP704 or MP705."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Target:
    path: Path  # the directory to replace (a symlink's target when -o names a link)
    exists: bool


def resolve_output(outdir: Path) -> Target:
    """Where -o writes: a symlink is followed (the link is kept and the
    directory it points to replaced). Raises OutputRefused (MP705) for a
    symlink loop or a path that is not a directory."""
    outdir = Path(outdir)
    try:
        real = outdir.resolve(strict=False)
        st = os.stat(real) if os.path.lexists(real) else None
    except RuntimeError:  # Python's resolve() reports a symlink loop this way
        raise OutputRefused("MP705", f"`{outdir}` is a symlink loop") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputRefused("MP705", f"`{outdir}` is a symlink loop") from None
        raise OutputRefused("MP705", f"`{outdir}` cannot be inspected: {exc.strerror or exc}") from None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise OutputRefused("MP705", f"`{outdir}` is not a directory")
    return Target(real, st is not None)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entries(root: Path) -> tuple[list[str], list[str], list[str]]:
    """(files, directories, other entries) under root, relative and
    '/'-separated; a symlink, special file or unreadable directory counts
    as other: meshc never writes one."""
    files, dirs, other = [], [], []

    def unreadable(exc: OSError) -> None:
        other.append(Path(exc.filename).relative_to(root).as_posix() + " (unreadable)")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                other.append((rel / d).as_posix())
                dirnames.remove(d)
            else:
                dirs.append((rel / d).as_posix())
        for f in filenames:
            p = os.path.join(dirpath, f)
            (files if stat.S_ISREG(os.lstat(p).st_mode) else other).append((rel / f).as_posix())
    return sorted(files), sorted(dirs), sorted(other)


def foreign_entries(root: Path) -> list[str]:
    """What in root meshc did not write (or that changed since): empty when
    root is empty or holds exactly the files its manifest lists, unchanged."""
    files, dirs, other = _entries(root)
    if not files and not dirs and not other:
        return []
    try:
        listed = json.loads((root / MANIFEST).read_text(encoding="utf-8"))["files"]
        if not isinstance(listed, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError):
        return [p for p in files + dirs + other if p != MANIFEST] or [MANIFEST]
    out = list(other)
    # a directory meshc wrote holds a listed file (an empty one is someone's)
    parents = {q.as_posix() for rel in listed for q in Path(rel).parents}
    out += [d for d in dirs if d not in parents]
    for rel in files:
        if rel == MANIFEST:
            continue
        want = listed.get(rel)
        if want is None:
            out.append(rel)
        elif _sha256(root / rel) != want:
            out.append(f"{rel} (changed since meshc wrote it)")
    return sorted(out)


def check_replaceable(outdir: Path, force: bool = False) -> Target:
    """The directory -o will replace, after refusing (OutputRefused) what
    meshc must not touch."""
    target = resolve_output(outdir)
    if target.exists and not force:
        foreign = foreign_entries(target.path)
        if foreign:
            shown = ", ".join(f"`{p}`" for p in foreign[:3]) + (f" and {len(foreign) - 3} more"
                                                               if len(foreign) > 3 else "")
            raise OutputRefused("MP704", f"`{outdir}` holds files meshc did not write ({shown}); "
                                         "it would be replaced as a whole")
    return target


# ---- atomic exchange -----------------------------------------------------------

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2); False when the
    system cannot, so the caller falls back to two renames."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _renameat2 = fn
        except (OSError, AttributeError):  # glibc < 2.28, musl
            _renameat2 = False
    if not _renameat2:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system lacks it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _tmp_name(name: str, kind: str) -> str:
    return f".{name}.meshc-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(parent: Path, name: str) -> list[Path]:
    """Remove temporary directories a killed meshc left beside `name`: only
    recognisably named ones, owned by this user, whose writer is gone."""
    removed = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for e in entries:
        m = _TMP.fullmatch(e.name)
        if not m or m.group("name") != name:
            continue
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or _pid_alive(int(m.group("pid"))):
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        removed.append(Path(e.path))
    return removed


def _remove_own(old: Path, force: bool) -> None:
    """Delete a replaced directory: what its manifest lists (everything when
    forced). Anything else, e.g. added between the check and the swap, stays,
    renamed so that clean_leftovers never takes it for a temporary."""
    if force:
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        listed = json.loads((old / MANIFEST).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        listed = {}
    for rel in [*listed, MANIFEST]:
        p = old / rel
        if old.resolve() in p.resolve().parents and p.is_file() and not p.is_symlink():
            p.unlink()
    for dirpath, _dirs, _files in sorted(os.walk(old), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
    if old.exists():
        name = _TMP.fullmatch(old.name).group("name")
        os.rename(old, old.with_name(f"{name}.meshc-kept-{secrets.token_hex(4)}"))


def write(outdir: Path, outputs, *, force: bool = False) -> list[Diagnostic]:
    """Replace outdir with outputs (objects with .path and .content), all or
    nothing. Diagnostics: MP704/MP705 refusals, MP703 I/O failures."""
    try:
        target = check_replaceable(Path(outdir), force)
    except OutputRefused as exc:
        help_ = ("write to an empty or new folder, or pass --force to replace it anyway"
                 if exc.code == "MP704" else None)
        return [diag(exc.code, str(exc), help=help_)]
    real = target.path
    parent = real.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(parent, real.name)
        tmp = parent / _tmp_name(real.name, "new")
        os.mkdir(tmp, 0o700)
    except OSError as exc:
        return [diag("MP703", f"cannot create `{outdir}`: {exc.strerror or exc}")]
    try:
        manifest = {}
        for o in outputs:
            dest = tmp / o.path
            if o.path == MANIFEST or tmp.resolve() not in dest.resolve().parents:
                raise OSError(f"output path {o.path!r} escapes the output directory or names the manifest")
            dest.parent.mkdir(parents=True, exist_ok=True)
            data = o.content.encode("utf-8")
            with open(dest, "wb") as fh:
                fh.write(data)
            manifest[o.path] = hashlib.sha256(data).hexdigest()
        (tmp / MANIFEST).write_text(json.dumps({"written_by": "meshc", "files": dict(sorted(manifest.items()))},
                                               indent=1) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755)
        if os.path.isdir(real) and _exchange(tmp, real):
            _remove_own(tmp, force)  # tmp now holds the old contents
            return []
        old = None
        if os.path.isdir(real):
            # Fallback: real is briefly missing between these two renames.
            old = parent / _tmp_name(real.name, "old")
            os.rename(real, old)
        os.rename(tmp, real)
        if old is not None:
            _remove_own(old, force)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        return [diag("MP703", f"cannot write `{outdir}`: {exc.strerror or exc}")]
    return []
