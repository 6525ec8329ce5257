"""Pausing Python's cyclic GC around bulk building.

Parsing and lowering allocate millions of small acyclic objects that all stay
alive; the cyclic GC would rescan everything alive over and over (it doubled
parse time, and dominated large compiles).
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def gc_paused():
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
