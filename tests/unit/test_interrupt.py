"""`sim.run.interrupt`: a signal waits for a history write, kills the run's processes, exits 130/143.

Each case runs a small script in a subprocess (signal handlers and `os._exit` belong to a
process of their own): it starts a child process standing in for Ray, holds the history
writer's lock in another thread while the signal arrives, and writes a marker when that
"row" is done.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from sim.run.interrupt import interruptible, interrupts_remembered

SCRIPT = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    from pathlib import Path
    from sim.run.interrupt import child_pids, interruptible

    SLEEP = [sys.executable, "-c", "import time; time.sleep(600)"]
    PARENT = [sys.executable, "-c", f"import subprocess, time; subprocess.Popen({SLEEP!r}); time.sleep(600)"]
    marker = Path(sys.argv[1])
    lock = threading.Lock()
    before = subprocess.Popen(SLEEP, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the caller's own, spared

    def write_row():
        with lock:
            print(f"ready {child.pid} {before.pid}", flush=True)
            time.sleep(1.0)  # the signal arrives while this row is being written
            marker.write_text("row done")

    spared = child_pids()
    with interruptible(lock, spared):
        child = subprocess.Popen(PARENT)  # stands in for Ray: a daemon with a worker below it
        time.sleep(0.5)
        threading.Thread(target=write_row).start()
        time.sleep(600)
    """
)


def _gone(proc: psutil.Process, wait_s: float = 10.0) -> bool:
    """Whether `proc` ended (a zombie counts as ended) within `wait_s`."""
    deadline = time.time() + wait_s
    while time.time() < deadline:
        try:
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_waits_for_the_write_kills_children_and_exits(tmp_path, sig, code):
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    before = None
    try:
        ready = proc.stdout.readline().split()
        assert ready and ready[0] == "ready", proc.stderr.read()
        child, before = psutil.Process(int(ready[1])), psutil.Process(int(ready[2]))
        grandchildren = child.children()
        assert len(grandchildren) == 1
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    try:
        assert proc.returncode == code
        assert marker.read_text() == "row done"  # the exit waited for the row
        assert stderr.strip().splitlines() == [
            f"interrupted by {sig.name}: the current round was abandoned; finished rounds are in history.csv"
        ]
        assert _gone(child) and _gone(grandchildren[0])  # started inside the block: killed
        assert not _gone(before, wait_s=0.5)  # started before it: left alone
    finally:
        if before is not None:
            before.kill()


OTHER_THREAD_SCRIPT = textwrap.dedent(
    """
    import signal, threading, time
    from sim.run.interrupt import interruptible

    def signal_this_thread():
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # the C handler runs here, not in main

    with interruptible(threading.Lock(), set()):
        threading.Thread(target=signal_this_thread).start()
        time.sleep(600)  # one long wait, as Flower's engine joins its threads: nothing wakes it
    """
)


def test_a_signal_delivered_to_another_thread_still_stops_the_run():
    """The kernel may hand SIGINT to any thread; Python then never wakes a main thread that is blocked."""
    proc = subprocess.Popen([sys.executable, "-c", OTHER_THREAD_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("no exit 20 s after a SIGINT delivered to a thread other than the main one")
    assert proc.returncode == 130, stderr
    assert stderr.startswith("interrupted by SIGINT"), stderr


def test_the_block_gives_the_wakeup_fd_back_and_stops_its_watcher():
    before = signal.set_wakeup_fd(-1)
    threads = threading.active_count()
    with interruptible(threading.Lock(), set()):
        assert threading.active_count() == threads + 1
    assert signal.set_wakeup_fd(-1) == -1 and threading.active_count() == threads
    signal.set_wakeup_fd(before)


def test_handlers_come_back_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with interruptible(threading.Lock(), set()):
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
        # keep reading while it stops: a terminal nobody reads fills up and blocks the writer
        deadline = time.monotonic() + 60  # above WRITE_WAIT_S (30 s), the longest the stop waits for a row
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([parent], [], [], 0.1)[0]:
                try:
                    seen += os.read(parent, 1024)
                except OSError:
                    break
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            marker = tmp_path / "marker"
            pytest.fail(f"no exit 60 s after SIGINT; row written: {marker.exists()}; terminal so far: {seen!r}")
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


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_that_a_finalizer_swallowed_still_stops_the_run():
    """Python ignores a KeyboardInterrupt raised inside `__del__`; the remembered flag raises it again."""

    class Dropped:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler runs here, inside the finalizer, and what it raises is ignored

    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler, or SIG_IGN in a background job
    with pytest.raises(KeyboardInterrupt):
        with interrupts_remembered() as stop_if_interrupted:
            Dropped()  # freed at once
            stop_if_interrupted()
    assert signal.getsignal(signal.SIGINT) is before  # restored
