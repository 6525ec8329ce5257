"""Lowering and checking many output files on every core.

Parsing outputs back dominates compiling a large mesh, and files are checked
independently, so a forked pool splits the work; the Envoy target lowers its
workloads the same way. Forking shares what the parent already imported
(protobuf descriptors, models) and built (the model, lowering caches).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Below this much work the pool costs more than it saves.
MIN_ITEMS = 16
MIN_BYTES = 4_000_000


_FN: Callable | None = None  # what the forked workers run (inherited, so closures work)


def _call(item):
    return _FN(item)


def map_files(fn: Callable[[T], list[R]], items: list[T], size: Callable[[T], int],
              min_total: int | None = None) -> list[R]:
    """fn over items, results concatenated in item order; in parallel when
    the items' total size reaches min_total (default MIN_BYTES). Items and
    results must pickle; fn need not (workers inherit it)."""
    global _FN
    workers = min(os.cpu_count() or 1, 8)
    total = sum(size(x) for x in items)
    if (workers < 2 or len(items) < MIN_ITEMS or total < (MIN_BYTES if min_total is None else min_total)
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [r for x in items for r in fn(x)]
    first = fn(items[0])  # warms imports and caches once, before forking
    _FN = fn
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            rest = pool.map(_call, items[1:], chunksize=max(1, len(items) // (workers * 8)))
    finally:
        _FN = None
    return first + [r for part in rest for r in part]
