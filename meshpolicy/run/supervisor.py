"""Starting and stopping a set of processes with no orphans on any exit path.

Children run in their own process group and, on Linux, get SIGTERM if the
supervisor dies (PR_SET_PDEATHSIG). That signal reaches only the child
itself: a shell-wrapped app command (`sh -c "a; b"`) would leave its own
children running. So a small reaper process holds a pipe from the
supervisor and the list of process groups; when the pipe closes without a
"done" (the supervisor was killed, even by SIGKILL) it kills every group.

Each run starts with fresh logs; the previous run's are kept as *.log.1.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1

# The reaper: reads process-group ids, one per line. EOF without "done": the
# supervisor died, so every group gets SIGTERM, then SIGKILL.
_REAPER = """
import os, signal, sys, time
groups, done = set(), False
for line in sys.stdin:
    line = line.strip()
    if line == "done":
        done = True
        break
    if line.isdigit():
        groups.add(int(line))
if not done and groups:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in groups:
            try:
                os.killpg(g, sig)
            except OSError:
                pass
        time.sleep(1.0)
"""


def _own_group() -> None:  # the reaper: out of the terminal's group, so Ctrl-C does not kill it first
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setpgrp()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


@dataclass
class Proc:
    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    expected_exit: bool = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Supervisor:
    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # A run's logs are its own: "last log lines" never show an earlier run's error.
        for old in self.log_dir.glob("*.log"):
            os.replace(old, old.with_name(old.name + ".1"))
        self.procs: dict[str, Proc] = {}
        self._lock = threading.Lock()
        self._reaper: subprocess.Popen | None = None
        # Run after every process stopped (the control plane outlives the Envoys it serves).
        self.on_exit: list = []

    def _watch_group(self, pgid: int) -> None:
        if self._reaper is None:
            self._reaper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _REAPER], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            preexec_fn=_own_group, close_fds=True)
        try:
            self._reaper.stdin.write(f"{pgid}\n".encode())
            self._reaper.stdin.flush()
        except OSError:
            pass

    def _dismiss_reaper(self) -> None:
        if self._reaper is None:
            return
        try:
            self._reaper.stdin.write(b"done\n")
            self._reaper.stdin.close()
        except OSError:
            pass
        self._reaper.wait()
        self._reaper = None

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        log = self.log_dir / f"{name.replace('/', '_')}.log"
        proc = Proc(name, argv, log, env or {})
        fh = open(log, "ab")  # append: an Envoy hot restart's new epoch logs after the old one
        try:
            proc.popen = subprocess.Popen(
                argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **proc.env}, preexec_fn=_die_with_parent, close_fds=True,
            )
        finally:
            fh.close()
        self._watch_group(proc.popen.pid)  # setpgrp in the child: its pid is its group
        with self._lock:
            self.procs[name] = proc
        return proc

    def crashed(self) -> list[Proc]:
        """Processes that exited although nobody asked them to."""
        return [p for p in self.procs.values() if not p.expected_exit and p.popen and p.popen.poll() is not None]

    def stop(self, name: str, timeout: float = 5.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.popen is None:
            return
        proc.expected_exit = True
        _terminate_group(proc.popen, timeout)

    def stop_all(self, timeout: float = 5.0) -> None:
        procs = list(self.procs.values())
        for p in procs:
            p.expected_exit = True
            if p.alive():
                try:
                    os.killpg(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in procs:
            if p.popen is None:
                continue
            try:
                p.popen.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.popen.wait()
        self._dismiss_reaper()
        while self.on_exit:
            self.on_exit.pop()()

    def __enter__(self) -> "Supervisor":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def _terminate_group(popen: subprocess.Popen, timeout: float) -> None:
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
