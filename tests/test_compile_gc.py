"""compile_mesh runs with the cyclic GC paused: lowering and checking build
millions of small objects while the whole model stays alive, and each
collection would rescan all of it (docs/performance.md, "Compile at scale")."""

from __future__ import annotations

import gc

import pytest

from bench.gen import generate
from meshpolicy.compile import CompileOptions, compile_mesh
from meshpolicy.pipeline import check_project
from meshpolicy.project import from_texts


@pytest.fixture(scope="module")
def mesh():
    checked = check_project(from_texts({k: v for k, v in generate(100, seed=5).items() if k.endswith(".mesh")}))
    assert checked.ok
    return checked.mesh


@pytest.mark.parametrize("target", ["istio", "envoy", "meshproxy"])
def test_lower_and_validate_run_with_the_gc_paused(mesh, target, monkeypatch):
    from meshpolicy.compile import get_target

    t = get_target(target)
    seen = []

    def recording(name):
        real = getattr(t, name)

        def call(*args):
            seen.append((name, gc.isenabled()))
            return real(*args)
        return call

    for name in ("lower", "validate"):
        monkeypatch.setattr(t, name, recording(name))
    assert gc.isenabled()
    outputs, _ = compile_mesh(mesh, target, CompileOptions(settings={"http1_apps": sorted(mesh.service_map)}
                                                           if target == "meshproxy" else {}))
    assert outputs and seen == [("lower", False), ("validate", False)]
    assert gc.isenabled()  # switched back on afterwards
