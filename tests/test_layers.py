"""The wire format is shared by the compiler and meshproxy without either
reaching into the other: meshpolicy/wire imports nothing of the compiler,
and meshpolicy/proxy imports nothing of the compiler's targets or model."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "meshpolicy"


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved)."""
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - (node.level - 1)]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


FORBIDDEN = {
    "wire": ("meshpolicy.targets", "meshpolicy.model", "meshpolicy.compile", "meshpolicy.plan",
             "meshpolicy.proxy", "meshpolicy.checks", "meshpolicy.verify"),
    "proxy": ("meshpolicy.targets", "meshpolicy.model", "meshpolicy.compile", "meshpolicy.plan",
              "meshpolicy.checks", "meshpolicy.verify", "meshpolicy.syntax"),
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_reach_into_the_compiler(package):
    bad = []
    for path in sorted((PKG / package).rglob("*.py")):
        for mod in _imports(path):
            if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(PKG.parent)} imports {mod}")
    assert not bad, bad
