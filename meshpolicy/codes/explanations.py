"""Each code's explanation: a paragraph and an example that reports it, with its fix.

They live in tests/fixtures/codes/<CODE>/ (README.md, bad.mesh, good.mesh, and
bad.toml/good.toml or `command` where needed), where the test suite checks
every example; the wheel carries that folder as meshpolicy/_data/explanations
(pyproject's force-include), so `meshc explain` works wherever meshc is
installed, and docs/diagnostics.md is generated from the same files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import CodeInfo

# The catalogue imports every module of this package for its table; this one adds none.
CODES: dict[str, CodeInfo] = {}

_PKG = Path(__file__).resolve().parents[1]


def root() -> Path:
    """The folder of per-code explanations, installed or in a checkout."""
    installed = _PKG / "_data" / "explanations"
    if installed.is_dir():
        return installed
    return _PKG.parent / "tests" / "fixtures" / "codes"


@dataclass(frozen=True)
class Explanation:
    readme: str | None
    bad: str | None  # a mesh (or, for the import codes, Kubernetes YAML) that reports the code
    good: str | None  # the same, fixed
    bad_toml: str | None  # codes about meshc.toml: the config beside the mesh
    good_toml: str | None
    command: str  # the command that reports it, e.g. "meshc verify"
    language: str = "mesh"  # of bad and good: "mesh", or "yaml" for the import codes


def _read(path: Path) -> str | None:
    if not path.is_file():
        return None
    # bad.mesh of MP001 is deliberately not UTF-8
    return path.read_bytes().decode("utf-8", "replace").rstrip("\n")


def explanation(code: str, folder: Path | None = None) -> Explanation:
    d = (folder or root()) / code
    readme, command = _read(d / "README.md"), _read(d / "command")
    language = "yaml" if (d / "bad.yaml").is_file() and not (d / "bad.mesh").is_file() else "mesh"
    return Explanation(readme.strip() if readme else None, _read(d / f"bad.{language}"),
                       _read(d / f"good.{language}"), _read(d / "bad.toml"), _read(d / "good.toml"),
                       f"meshc {command.strip()}" if command else "meshc check", language)
