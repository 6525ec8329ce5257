"""The language server collects garbage when typing pauses, not during edits."""

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


def test_waits_for_the_verifier(gc_off, monkeypatch):
    monkeypatch.setattr(srv, "IDLE_GC_S", 0.02)
    ls = srv.MeshLanguageServer()
    st = ls.state("/mesh")

    async def scenario():
        st.verifying = True
        ls._collect_when_idle()
        await asyncio.sleep(0.1)
        assert ls.collections == 0
        st.verifying = False
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
