"""Whether the ports a `meshc up` run needs are free, and who holds those
that are not (Linux: /proc/net/tcp* and /proc/*/fd)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class Busy:
    port: int
    address: str
    what: str  # e.g. "app of api/v1"
    holder: str | None  # "pid 123 (python -m ...)", when it can be found


def in_use(address: str, port: int) -> bool:
    """Whether a listener could not bind address:port now. SO_REUSEADDR as
    the servers set it, so a connection in TIME_WAIT does not count."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return True
    return False


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    return inodes


def holder(port: int) -> str | None:
    """`pid N (command line)` of a process listening on port, if this user may see it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    with open(f"/proc/{pid}/cmdline", "rb") as fh:
                        cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    return f"pid {pid} ({cmd[:120]})"
            except OSError:
                continue
    return None


def busy(wanted: list[tuple[str, int, str]]) -> list[Busy]:
    """Which of (address, port, what) cannot be bound."""
    return [Busy(port, address, what, holder(port)) for address, port, what in wanted if in_use(address, port)]
