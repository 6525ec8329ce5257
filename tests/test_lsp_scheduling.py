"""Language-server scheduling: garbage collected when typing pauses, and
verifier runs cancelled by newer edits (in-process, no editor needed)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from meshpolicy.lsp import server as srv


@pytest.fixture
def gc_off():
    was = gc.isenabled()
    gc.disable()
    yield
    if was:
        gc.enable()


def test_collects_once_idle_and_edits_postpone_it(gc_off, monkeypatch, tmp_path):
    monkeypatch.setattr(srv, "IDLE_GC_S", 0.05)
    ls = srv.MeshLanguageServer()
    uri = (tmp_path / "a.mesh").as_uri()

    def edit():
        ls.touch(uri)
        for st in ls.meshes.values():  # the analysis `touch` schedules is not needed here
            st.task.cancel()

    async def scenario():
        ls._collect_when_idle()
        for _ in range(5):  # an edit every 20 ms: never idle for 50 ms
            await asyncio.sleep(0.02)
            edit()
        assert ls.collections == 0 and ls._gc_timer.cancelled()
        ls._collect_when_idle()  # what publishing the last edit's diagnostics does
        await asyncio.sleep(0.15)
        assert ls.collections == 1

    asyncio.run(scenario())


def _verifying(ls, on: bool) -> None:
    ls.state("/mesh").verifying = on


def _analysing(ls, on: bool) -> None:
    ls.analysing = int(on)  # as _analyse_now sets it on the check thread


@pytest.mark.parametrize("busy", [_verifying, _analysing], ids=["verification", "analysis"])
def test_waits_for_work_under_way(gc_off, monkeypatch, busy):
    monkeypatch.setattr(srv, "IDLE_GC_S", 0.02)
    ls = srv.MeshLanguageServer()

    async def scenario():
        busy(ls, True)
        ls._collect_when_idle()
        await asyncio.sleep(0.1)
        assert ls.collections == 0
        busy(ls, False)
        await asyncio.sleep(0.1)
        assert ls.collections == 1

    asyncio.run(scenario())


def test_leaves_the_gc_alone_when_it_is_on(monkeypatch):
    monkeypatch.setattr(srv, "IDLE_GC_S", 0.01)
    assert gc.isenabled()
    ls = srv.MeshLanguageServer()

    async def scenario():
        ls._collect_when_idle()
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert ls.collections == 0 and ls._gc_timer is None


# ---- the verifier stops when an edit makes its run stale

def _analysis(tmp_path, services: int = 200):
    from bench.gen import generate, write
    from meshpolicy.lsp.meshes import ParseCache, analyse

    root = write(generate(services, seed=3), tmp_path / "mesh")
    a = analyse(str(root), {}, 1, ParseCache())
    assert a.checked.ok
    return a


def test_verify_stops_once_stale(tmp_path):
    from meshpolicy.lsp.meshes import Cancelled, verify

    a = _analysis(tmp_path)
    asked = []

    def stale_after_three():
        asked.append(1)
        return len(asked) > 3

    with pytest.raises(Cancelled):
        verify(a, stale_after_three)
    assert len(asked) == 4  # stopped at the 4th destination, not at the end
    assert verify(a, lambda: False)  # not stale: the findings


def test_an_edit_cancels_the_running_verification_thread(tmp_path, monkeypatch):
    """Without os.fork (Windows) the verifier runs on a thread and stops at its next destination."""
    import threading

    from meshpolicy.lsp import meshes

    a = _analysis(tmp_path)
    started = threading.Event()
    real = meshes.verify

    def verify(analysis, stale):  # the real verifier, telling us when it runs
        started.set()
        return real(analysis, stale)

    monkeypatch.setattr(srv, "verify", verify)
    ls = srv.MeshLanguageServer(verify_delay_ms=0)
    ls.verify_in_process = False
    st = ls.state(a.root)
    st.generation = a.generation
    st.analysis = st.verify_next = a

    async def scenario():
        st.verifying = True
        loop = asyncio.create_task(ls._verify_loop(a.root))
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        st.generation += 1  # what an edit does
        await asyncio.wait_for(loop, 30)

    asyncio.run(scenario())
    assert ls.cancelled_verifications == 1 and a.verified is None and not st.verifying


@pytest.mark.skipif(not srv.FORK, reason="no os.fork here: verifications run on a thread")
@pytest.mark.parametrize("how", ["touch", "generation"])
def test_an_edit_kills_the_verifier_process(tmp_path, monkeypatch, how):
    """The verification runs in a child process, never in the server's; an
    edit (`touch`) kills it at once, as does any other way its analysis goes
    stale, whatever it is doing (here: a verifier that would take a minute)."""
    import os
    import time

    from meshpolicy.lsp.convert import uri_of

    a = _analysis(tmp_path, services=20)
    marker = tmp_path / "verifier-pid"

    def verify(analysis, stale):
        marker.write_text(str(os.getpid()))
        time.sleep(60)

    monkeypatch.setattr(srv, "verify", verify)
    ls = srv.MeshLanguageServer(verify_delay_ms=0)
    st = ls.state(a.root)
    st.generation = a.generation
    st.analysis = st.verify_next = a

    async def scenario():
        st.verifying = True
        loop = asyncio.create_task(ls._verify_loop(a.root))
        deadline = time.monotonic() + 20
        while not marker.exists() or not marker.read_text():
            assert time.monotonic() < deadline, "the verifier never started"
            await asyncio.sleep(0.01)
        child = st.verifier.pid
        t0 = time.monotonic()
        if how == "touch":
            ls.touch(uri_of(a.files[0]))
            st.task.cancel()  # its analysis is not needed here
        else:
            st.generation += 1
        await asyncio.wait_for(loop, 5)
        return child, time.monotonic() - t0

    child, took = asyncio.run(scenario())
    assert int(marker.read_text()) == child != os.getpid()
    assert took < 2 and ls.cancelled_verifications == 1 and a.verified is None and not st.verifying
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(child, os.WNOHANG)


def test_verify_loop_ends_when_edits_outran_the_analysis(tmp_path, monkeypatch):
    # The newest edit is not analysed yet (or its analysis failed): the loop
    # must not spin on the older analysis; the next analysis queues itself.
    a = _analysis(tmp_path, services=20)
    monkeypatch.setattr(srv, "verify", lambda *args: pytest.fail("verified a stale analysis"))
    ls = srv.MeshLanguageServer(verify_delay_ms=0)
    st = ls.state(a.root)
    st.analysis = st.verify_next = a
    st.generation = a.generation + 1

    async def scenario():
        st.verifying = True
        await asyncio.wait_for(ls._verify_loop(a.root), 5)

    asyncio.run(scenario())
    assert not st.verifying and st.verify_next is None


def test_the_next_analysis_waits_for_a_killed_verifier_to_be_gone(tmp_path, monkeypatch):
    """Until the killed child has exited it shares the server's pages, and an
    analysis would copy each page it writes: the analysis waits for the exit
    (at most 0.1 s, in case the machine is too busy to run it)."""
    import time
    from types import SimpleNamespace

    ls = srv.MeshLanguageServer(debounce_ms=0)
    uri = (tmp_path / "a.mesh").as_uri()
    started = []

    async def analyse(root, generation):
        started.append(time.monotonic())
        return None

    monkeypatch.setattr(ls, "_analyse", analyse)

    async def scenario(exits_after):
        st = ls.state(srv.root_of(str(tmp_path / "a.mesh")))
        st.stopping = SimpleNamespace(future=asyncio.get_running_loop().create_future())
        t0 = time.monotonic()
        asyncio.get_running_loop().call_later(exits_after, st.stopping.future.set_result, None)
        ls.touch(uri)
        await asyncio.wait_for(st.task, 5)
        return started[-1] - t0

    waited = asyncio.run(scenario(0.05))
    assert 0.04 <= waited < 0.1
    assert 0.09 <= asyncio.run(scenario(5)) < 1  # never more than 0.1 s
