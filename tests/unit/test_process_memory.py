"""The driver's memory: what a sweep's driver does between jobs (`sim.run.process_memory`), what it imports."""

from __future__ import annotations

import gc
import subprocess
import sys
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



def test_the_driver_imports_pandas_only_to_save_results():
    # pandas costs the driver 67 MB for the whole run when imported at start; the rounds do not need it
    code = "import sys, sim.__main__, sim.run.recipe; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
