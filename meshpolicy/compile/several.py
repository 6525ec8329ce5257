"""Several targets from one checked mesh: `meshc compile --target istio,envoy`.

Reading, parsing, checking and the plan are done once; each target is then
lowered and validated exactly as `compile_mesh` does for one target, so its
files are byte-identical to a single-target compile. Its files go under a
folder named after the target (`<target>/<path>`), and the caller writes
them all at once (all or nothing, one manifest).

On a machine with several cores, targets run in forked processes, at most
one per core at a time: most of a target's lowering is one process's work,
so two targets side by side use both cores where one alone would not. Each
child sends its outputs and diagnostics back through a pipe (pickled);
forking shares the model and the plan built before the fork.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait

from ..diagnostics import Diagnostic
from ..model.types import Mesh
from . import TARGETS, CompileOptions, Output, compile_mesh

ALL = "all"
# Rough share of a target's work on the bench mesh: the longest start first,
# so the last one to finish is a short one.
_COST = {"envoy": 5, "istio": 4, "linkerd": 3, "meshproxy": 3, "gateway-api": 2}


def parse_targets(value: str) -> list[str]:
    """`istio`, `istio,envoy` or `all` as target names in the order given
    (`all`: the registry's order); ValueError naming what is unknown."""
    names = [x.strip() for x in value.split(",")]
    if any(not x for x in names):
        raise ValueError(f"empty target name in {value!r}")
    if ALL in names:
        if names != [ALL]:
            raise ValueError(f"`{ALL}` cannot be combined with other targets")
        return list(TARGETS)
    unknown = [x for x in names if x not in TARGETS]
    if unknown:
        raise ValueError(f"unknown target {unknown[0]!r}; choose from {', '.join(TARGETS)} or {ALL}")
    return list(dict.fromkeys(names))


def _in_child(conn, mesh: Mesh, target: str, options: CompileOptions) -> None:
    try:
        result = ("ok", compile_mesh(mesh, target, options))
    except BaseException:  # noqa: BLE001 - reported to the parent, which re-raises
        result = ("error", traceback.format_exc())
    try:
        conn.send_bytes(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    finally:
        conn.close()


def _parallel(mesh: Mesh, targets: list[str], options: dict[str, CompileOptions],
              workers: int, done: Callable[[str], None]) -> dict[str, tuple[list[Output], list[Diagnostic]]]:
    ctx = multiprocessing.get_context("fork")
    pending = sorted(targets, key=lambda t: -_COST.get(t, 0))
    running: dict = {}  # connection -> (target, process)
    results: dict[str, tuple[list[Output], list[Diagnostic]]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                target = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                # not a daemon: a target's own validation forks a pool of its own
                proc = ctx.Process(target=_in_child, args=(send, mesh, target, options[target]), daemon=False)
                proc.start()
                send.close()
                running[recv] = (target, proc)
            for conn in wait(list(running)):
                target, proc = running.pop(conn)
                try:
                    status, payload = pickle.loads(conn.recv_bytes())
                except EOFError:
                    status, payload = "error", f"the process compiling to {target} died"
                conn.close()
                proc.join()
                if status != "ok":
                    raise RuntimeError(f"compiling to {target} failed:\n{payload}")
                results[target] = payload
                done(target)
    finally:
        for conn, (_t, proc) in running.items():
            proc.kill()
            proc.join()
            conn.close()
    return results


def compile_targets(mesh: Mesh, targets: list[str], options: dict[str, CompileOptions],
                    progress=None) -> tuple[list[Output], list[Diagnostic]]:
    """Each target's outputs under `<target>/`, sorted by path, and every
    target's diagnostics (in the order of `targets`). With any error the
    outputs must not be written, as with compile_mesh."""
    from ..gc_pause import gc_paused
    from ..plan import plan_of

    count = len(targets)
    finished: list[str] = []

    def done(target: str) -> None:
        finished.append(target)
        if progress:
            progress(f"compiled {', '.join(finished)}", len(finished), count)

    workers = min(os.cpu_count() or 1, count)
    # The plan, like lowering, allocates millions of objects while the model
    # stays alive: without the pause the cyclic GC rescans it (the plan of the
    # 10,000-service bench mesh: 10.1 s of CPU with it, 5.3 s without).
    with gc_paused():
        if workers >= 2 and "fork" in multiprocessing.get_all_start_methods():
            plan_of(mesh)  # built once, before the fork: every child reads it
            results = _parallel(mesh, targets, options, workers, done)
        else:
            results = {}
            for t in targets:
                results[t] = compile_mesh(mesh, t, options[t])
                done(t)
    outputs: list[Output] = []
    diags: list[Diagnostic] = []
    for t in targets:
        outs, found = results[t]
        outputs += [Output(f"{t}/{o.path}", o.content) for o in outs]
        diags += found
    return sorted(outputs, key=lambda o: o.path), diags
