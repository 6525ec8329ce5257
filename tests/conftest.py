"""Shared test helpers: check in-memory meshes and look at codes, not wording."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# Schemas that live beside the repository, not in it (a plain clone has no ../shared).
# MESHPOLICY_SHARED_DIR points elsewhere; tests use it to run as a plain clone would.
SHARED = Path(os.environ.get("MESHPOLICY_SHARED_DIR") or ROOT.parent / "shared")


def shared_path(*parts: str) -> Path:
    """Where a file under ../shared would be; every test that reads ../shared asks here."""
    return SHARED.joinpath(*parts)


def shared_missing(*parts: str) -> str | None:
    """A skip reason naming the file when it is absent, else None."""
    path = shared_path(*parts)
    if path.is_file():
        return None
    return f"needs ../shared/{'/'.join(parts)} (not found at {path})"


def shared_file(*parts: str) -> Path:
    """A file under ../shared; the calling test is skipped, naming the file, when it is absent."""
    reason = shared_missing(*parts)
    if reason:
        pytest.skip(reason)
    return shared_path(*parts)


def check_texts(texts: dict[str, str]):
    """Parse, build and check in-memory files; returns the Checked result."""
    return check_project(from_texts(texts))


def check_text(text: str, name: str = "test.mesh"):
    return check_texts({name: text})


def codes(diags) -> list[str]:
    return sorted(d.code for d in diags)


def run_meshc(*args: str, cwd: Path | None = None, input: str | None = None, env: dict | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real command line in a subprocess."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "meshpolicy.cli", *args], cwd=cwd or ROOT, input=input,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


@pytest.fixture
def shop_mesh():
    return check_project(__import__("meshpolicy.project", fromlist=["load"]).load([EXAMPLES / "shop"])).mesh


def free_port_base(count: int, step: int = 10) -> int:
    """A run of `count` free loopback ports, so parallel runs do not collide."""
    import random

    for _ in range(200):
        base = random.randrange(22000, 32000 - count, step)  # below the ephemeral range
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")
