"""Replacing a workload's certificate and key together, in one step.

Two renames (key, then certificate) leave a moment in which a sidecar that
reloads sees a new key with the old certificate. So each pair is written into
a fresh generation directory and published by swapping one symlink, the
layout Kubernetes uses for secret volumes (and that Envoy's
`watched_directory` is made for):

    <ns>/<sa>/..gen-XXXX/cert.pem, key.pem   one generation (the newest kept)
    <ns>/<sa>/..data -> ..gen-XXXX           swapped by rename: atomic
    <ns>/<sa>/cert.pem -> ..data/cert.pem    the paths configs name never change
    <ns>/<sa>/key.pem  -> ..data/key.pem

A watcher of `<ns>/<sa>` (Envoy's SDS `watched_directory`) sees one
moved-to event per rotation; meshproxy sees new files behind the same paths.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

DATA = "..data"
GEN_PREFIX = "..gen-"


def _point(link: Path, target: str) -> None:
    """Make `link` a symlink to `target`, replacing whatever is there in one rename."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.link-{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def publish_pair(base: Path, cert_name: str, key_name: str, cert_pem: bytes, key_pem: bytes,
                 write_private: Callable[[Path, bytes], None], write_public: Callable[[Path, bytes], None]) -> None:
    base.mkdir(parents=True, exist_ok=True)
    gen = Path(tempfile.mkdtemp(prefix=GEN_PREFIX, dir=base))
    try:
        os.chmod(gen, 0o755)  # the key inside stays 0600
        write_private(gen / key_name, key_pem)
        write_public(gen / cert_name, cert_pem)
        _point(base / DATA, gen.name)
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)
        raise
    for name in (cert_name, key_name):
        _point(base / name, f"{DATA}/{name}")
    for old in base.glob(GEN_PREFIX + "*"):
        if old.name != gen.name and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
