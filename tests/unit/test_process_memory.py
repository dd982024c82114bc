"""`sim.run.process_memory`: what a sweep's driver does between jobs."""

from __future__ import annotations

import gc
import weakref

from sim.run.process_memory import release_freed_memory


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_release_frees_reference_cycles():
    gc.disable()  # no automatic collection may do the work for it
    try:
        node = _Node()
        ref = weakref.ref(node)
        del node
        assert ref() is not None
        release_freed_memory()
        assert ref() is None
    finally:
        gc.enable()

