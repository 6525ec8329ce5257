"""Checking many output files on every core.

Parsing outputs back dominates compiling a large mesh, and files are checked
independently, so a forked pool splits the work. Forking shares what the
parent already imported (protobuf descriptors, models).
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


def map_files(fn: Callable[[T], list[R]], items: list[T], size: Callable[[T], int]) -> list[R]:
    """fn over items, results concatenated in item order; in parallel when large."""
    workers = min(os.cpu_count() or 1, 8)
    total = sum(size(x) for x in items)
    if (workers < 2 or len(items) < MIN_ITEMS or total < MIN_BYTES
            or "fork" not in multiprocessing.get_all_start_methods()):
        return [r for x in items for r in fn(x)]
    first = fn(items[0])  # warms imports once, before forking
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        rest = pool.map(fn, items[1:], chunksize=max(1, len(items) // (workers * 8)))
    return first + [r for part in rest for r in part]
