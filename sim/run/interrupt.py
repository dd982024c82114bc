"""Ctrl-C and SIGTERM: abandon the current round, keep the history, stop Ray, exit 130/143.

The stop happens inside the signal handler, not by raising into the main thread. Raising
there would unwind through Flower's simulation engine, whose clean-up shuts Ray down
while its worker threads may still wait on client replies; a thread that touches Ray
after the shutdown makes Ray's core worker end the whole process with exit code 1,
before anything is printed. So the handler, in order:

1. says what happens (one line on stderr) and gives a terminal its cursor back;
2. waits for a history row being written to finish (the writer's lock);
3. kills the processes this run started (the private Ray instance: GCS, raylet, agents,
   workers) with SIGKILL; an attached cluster sees its driver go and cleans up itself;
4. ends the process with `os._exit(130 or 143)`.

Python runs a signal handler in the main thread only, and only when that thread next runs
Python code. A signal the kernel hands to another thread (Ray, gRPC and Flower start many),
or one that lands just before the main thread blocks (Flower's engine waits in
`Thread.join()` for the whole run), would then wait until the run ends. So the block also
sets Python's wakeup fd, which the C-level handler writes to on any thread, and a watcher
thread runs the same stop if the main thread has not begun it within `MAIN_THREAD_GRACE_S`.

Before the rounds (loading data, drawing the partition), Ctrl-C raises KeyboardInterrupt as
usual; `interrupts_remembered` also keeps a flag, because Python drops a KeyboardInterrupt
raised while a finalizer runs ("Exception ignored in ..."), and decoding a data set frees
many objects: the run then checks the flag before it starts Ray.

Finished rounds are already on disk (each row is fsynced), and checkpoints are written
to a temporary file and renamed, so nothing finished is lost.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, suppress
from typing import Callable, Iterator

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # exit codes 130 and 143: 128 + the signal number
WRITE_WAIT_S = 30.0  # longest wait for a history row being written before exiting anyway
SHOW_CURSOR = b"\x1b[?25h"  # ANSI: make the terminal cursor visible
MAIN_THREAD_GRACE_S = 1.0  # how long the watcher leaves a received stop signal to the main thread
_stopping = threading.RLock()  # held by whichever thread runs the stop until the exit


def kill_children_except(existing: set[int]) -> None:
    """SIGKILL every child process not in `existing`, with all its descendants.

    `existing` holds the children this process had before the run started Ray: they are
    not the run's to kill (a caller's own helpers, say).
    """
    try:
        started = [child for child in psutil.Process().children() if child.pid not in existing]
        doomed = started + [grandchild for child in started for grandchild in child.children(recursive=True)]
    except psutil.Error:
        return
    for proc in doomed:
        with suppress(psutil.Error):  # already gone
            proc.kill()


def _say(message: str) -> None:
    """Write `message` to stderr unbuffered, after giving a terminal its cursor back.

    `os.write` and not `print`: the signal may have cut a buffered write short, and
    re-entering it would raise. The progress bar (stdout) hides the cursor on a terminal
    and is never stopped when the process ends this way.
    """
    with suppress(OSError):
        if os.isatty(1):
            os.write(1, b"\n" + SHOW_CURSOR)
    with suppress(OSError):
        os.write(2, (message + "\n").encode())


def stop_now(signum: int, write_lock: threading.Lock, existing: set[int]) -> None:
    """Say what is kept, let a history write finish, kill this run's processes, exit.

    One thread stops: when the watcher has begun, the main thread waits here for the exit
    (it must not go back to Flower's code while Ray is killed); when the main thread has
    begun, the watcher returns.
    """
    in_main = threading.current_thread() is threading.main_thread()
    if not _stopping.acquire(blocking=in_main):
        return
    if in_main:
        for sig in STOP_SIGNALS:  # one stop is enough: a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
    name = signal.Signals(signum).name
    _say(f"interrupted by {name}: the current round was abandoned; finished rounds are in history.csv")
    write_lock.acquire(timeout=WRITE_WAIT_S)  # kept until the exit: no new row starts
    try:
        logging.shutdown()  # flushes the run's log file
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):  # a write the signal cut short may refuse a flush
                stream.flush()
        kill_children_except(existing)
    finally:
        os._exit(128 + signum)


def child_pids() -> set[int]:
    """Pids of this process's children now (take it before Ray starts: see `interruptible`)."""
    return {child.pid for child in psutil.Process().children()}


@contextmanager
def interruptible(write_lock: threading.Lock, existing: set[int]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM stop the run at once (see the module docstring).

    `write_lock` is the history writer's lock: a row being written is finished first.
    `existing` (from `child_pids()` before Ray started) are the children a signal spares;
    every other child, with its descendants, is the run's and is killed. Enter the block
    after `ray.init`, which installs Ray's own SIGTERM handler. Only the main thread can
    install signal handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame) -> None:
        stop_now(signum, write_lock, existing)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # Python requires it of a wakeup fd
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch_for_stop_signals, args=(read_fd, write_lock, existing),
                               name="sim-stop-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_wakeup_fd)
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
        os.close(write_fd)  # the watcher reads end-of-file and returns
        watcher.join()
        os.close(read_fd)


def _watch_for_stop_signals(read_fd: int, write_lock: threading.Lock, existing: set[int]) -> None:
    """Run the stop from this thread when a stop signal arrived and the main thread did not run it.

    `read_fd` is the read end of the wakeup fd: Python's C-level handler writes each
    received signal's number there, on whichever thread the kernel delivered it to.
    """
    while chunk := os.read(read_fd, 64):
        signum = next((s for s in chunk if s in STOP_SIGNALS), None)
        if signum is not None:
            time.sleep(MAIN_THREAD_GRACE_S)  # the main thread normally exits well before this
            stop_now(signum, write_lock, existing)


@contextmanager
def interrupts_remembered() -> Iterator[Callable[[], None]]:
    """Within the block, SIGINT raises KeyboardInterrupt and is remembered; yields `check`, which raises it again.

    Call `check()` at the end of the block: a Ctrl-C that a finalizer swallowed still stops the run.
    Only the main thread can install signal handlers; elsewhere `check` never raises.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    received: list[int] = []

    def handler(signum: int, frame) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    def check() -> None:
        if received:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)
