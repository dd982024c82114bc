"""`sim.interrupt`: a signal waits for a history write, kills the run's processes, exits 130/143.

Each case runs a small script in a subprocess (signal handlers and `os._exit` belong to a
process of their own): it starts a child process standing in for Ray, holds the history
writer's lock in another thread while the signal arrives, and writes a marker when that
"row" is done.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from sim.interrupt import interruptible

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    from pathlib import Path
    from sim.interrupt import interruptible

    marker = Path(sys.argv[1])
    lock = threading.Lock()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])

    def write_row():
        with lock:
            print(f"ready {child.pid}", flush=True)
            time.sleep(1.0)  # the signal arrives while this row is being written
            marker.write_text("row done")

    with interruptible(lock):
        threading.Thread(target=write_row).start()
        time.sleep(600)
    """
)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_waits_for_the_write_kills_children_and_exits(tmp_path, sig, code):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", proc.stderr.read()
        child = psutil.Process(int(ready[1]))
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    assert marker.read_text() == "row done"  # the exit waited for the row
    assert stderr.strip().splitlines() == [
        f"interrupted by {sig.name}: the current round was abandoned; finished rounds are in history.csv"
    ]
    deadline = time.time() + 10
    while child.is_running() and child.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
        time.sleep(0.1)
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE


def test_handlers_come_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with interruptible(threading.Lock()):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_terminal_gets_its_cursor_back(tmp_path):
    """The progress bar hides the cursor on a terminal; the stop shows it again."""
    import os
    import pty

    parent, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "marker")],
                            stdout=child, stderr=subprocess.PIPE, text=True)
    os.close(child)
    seen = b""
    try:
        while b"ready" not in seen:
            seen += os.read(parent, 1024)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        while True:
            try:
                chunk = os.read(parent, 1024)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
    assert proc.returncode == 130
    assert seen.rstrip().endswith(b"\x1b[?25h")
