"""One verification in a forked child process, so that it never shares the
server's interpreter (and its GIL) with the checks of the next edit.

A verification of the 1000-service bench mesh takes about a second of CPU.
On a thread of the server it held the GIL half the time while an edit's
analysis ran, until it reached its next destination and saw it was stale:
an edit that landed during a verification took up to 0.45 s to get its
diagnostics on an idle machine (docs/performance.md, "Language server").
The child gets the analysis as it is in memory (fork: nothing to send,
nothing to re-parse), sends its findings back pickled through a pipe, and
is cancelled with SIGKILL, at once, whatever it is doing.

The server forks only while its check thread is idle (server.py counts the
jobs it gave that thread), so the child cannot inherit a lock that thread
held: a module being imported, a `cached_property` being computed. The
child runs nothing but the verifier and leaves with os._exit, never
flushing or touching the LSP streams it inherited (stdin and stdout are
/dev/null in it). Where os.fork does not exist (Windows) the server falls
back to verifying on a thread (`FORK`)."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import warnings
from collections.abc import Callable

from ..diagnostics import Diagnostic
from .meshes import Analysis, Cancelled

FORK = hasattr(os, "fork")


class VerifierProcess:
    """`run(analysis)` in a child; await `future` for its findings. `cancel()`
    kills the child, and `future` then raises Cancelled. Create and use on
    the event loop's thread."""

    def __init__(self, run: Callable[[Analysis], list[Diagnostic] | None], analysis: Analysis) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future = self.loop.create_future()  # the findings, or Cancelled
        self._chunks: list[bytes] = []
        self._killed = False
        r, w = os.pipe()
        with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process: see the module doc
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child
            os.close(r)
            _child(run, analysis, w)  # never returns
        os.close(w)
        self.pid, self._fd = pid, r
        os.set_blocking(r, False)
        self.loop.add_reader(r, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 1 << 20)
        except BlockingIOError:
            return
        if data:
            self._chunks.append(data)
            return
        self._finish()  # end of file: the child has exited (or is exiting)

    def _finish(self) -> None:
        self.loop.remove_reader(self._fd)
        os.close(self._fd)
        _, status = os.waitpid(self.pid, 0)
        if self.future.done():
            return
        if self._killed:
            self.future.set_exception(Cancelled())
            return
        try:
            kind, value = pickle.loads(b"".join(self._chunks))
        except Exception:  # killed by someone else, or died before it could answer
            code = os.waitstatus_to_exitcode(status)
            self.future.set_exception(RuntimeError(f"the verifier process ended without an answer (exit {code})"))
            return
        if kind == "ok":
            self.future.set_result(value)
        else:
            self.future.set_exception(RuntimeError(value))

    def cancel(self) -> None:
        """Stop the child now; its pipe then reads end of file and `future` raises Cancelled."""
        if self.future.done() or self._killed:
            return
        self._killed = True
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:  # already gone: _finish reaps it
            pass


def _child(run: Callable[[Analysis], list[Diagnostic] | None], analysis: Analysis, w: int) -> None:
    status = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)  # the LSP streams belong to the server
        os.dup2(null, 1)
        sys.stdin = sys.stdout = open(os.devnull, "r+")  # the server's objects may hold its unsent output
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            answer = ("ok", run(analysis))
        except BaseException as exc:  # reported by the server as a verifier failure
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps(("error", f"findings could not be sent: {type(exc).__name__}: {exc}"))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view):]
    except BaseException:
        status = 1
    finally:
        os._exit(status)
