"""The language server's verifier child (meshpolicy/lsp/verifier_process.py):
it answers what the verifier answers in-process, reports a failure as one,
and dies when cancelled."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from meshpolicy.lsp import verifier_process as vp
from meshpolicy.lsp.meshes import Cancelled, ParseCache, analyse, verify

pytestmark = pytest.mark.skipif(not vp.FORK, reason="no os.fork here: the server verifies on a thread")


def _analysis(tmp_path, services: int = 40):
    from bench.gen import generate, write

    root = write(generate(services, seed=5), tmp_path / "mesh")
    a = analyse(str(root), {}, 1, ParseCache())
    assert a.checked.ok
    return a


def _run(run, a):
    async def scenario():
        child = vp.VerifierProcess(run, a)
        return child.pid, await asyncio.wait_for(child.future, 60)

    return asyncio.run(scenario())


def _key(d):
    return (d.code, d.severity, d.message, d.span, d.witness, [(f.title, f.span, f.replacement) for f in d.fixes])


def test_the_child_finds_what_the_server_would(tmp_path):
    a = _analysis(tmp_path)
    pid, found = _run(verify, a)
    here = verify(a)
    assert pid != os.getpid()
    assert found and [_key(d) for d in found] == [_key(d) for d in here]


def test_it_runs_in_another_process(tmp_path):
    a = _analysis(tmp_path, services=5)
    pid, answer = _run(lambda _a: os.getpid(), a)
    assert answer == pid != os.getpid()


def test_a_verifier_failure_is_reported_not_lost(tmp_path):
    a = _analysis(tmp_path, services=5)

    def broken(_a):
        raise KeyError("no such destination")

    with pytest.raises(RuntimeError, match="KeyError"):
        _run(broken, a)


def test_cancel_kills_it_at_once(tmp_path):
    a = _analysis(tmp_path, services=5)

    def busy(_a):  # pure Python, never looks at any flag
        while True:
            pass

    async def scenario():
        child = vp.VerifierProcess(busy, a)
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        child.cancel()
        with pytest.raises(Cancelled):
            await asyncio.wait_for(child.future, 10)
        return child.pid, time.monotonic() - t0

    pid, took = asyncio.run(scenario())
    assert took < 2
    with pytest.raises(ChildProcessError):  # reaped, not left a zombie
        os.waitpid(pid, os.WNOHANG)


def test_the_child_leaves_the_lsp_streams_alone(tmp_path, capfd):
    a = _analysis(tmp_path, services=5)

    def chatty(_a):
        print("this must not reach the editor")
        os.write(1, b"nor this")
        return []

    _, found = _run(chatty, a)
    assert found == [] and capfd.readouterr().out == ""
