"""How a conversion stops: signals, cancelled tasks, and worker processes that never outlive us.

A batch scheduler sends SIGTERM, a user presses Ctrl-C (SIGINT), a job gets
SIGKILLed. Whatever stops a run, finished items stay finished (the store's
status is written last), the lock is released where the process lives long
enough to do it, and nothing keeps running on its own:

* The first SIGINT or SIGTERM asks every task to stop (:func:`request_stop`):
  a task checks between frames (:func:`frames_until_stopped`) and leaves by
  raising :class:`ConversionCancelled`, which no task catches, so its item
  stays pending and its ``with`` blocks remove its temporary files. The
  main thread gets :class:`Interrupted`, the run unwinds (the lock is
  released) and the command exits 130 (SIGINT) or 143 (SIGTERM).
* A second signal while that happens exits at once (:func:`os._exit`), with
  one line and no traceback: the store stays consistent, as after a kill.
* Another thread of this process can stop the run the same way
  (:func:`stop_from_thread`): the writer lock's heartbeat does when it finds
  the lock taken over. Tasks stop at their next frame and the main thread
  gets the SIGTERM path's :class:`Interrupted` (which the lock turns into
  its own error).
* Worker processes (``--scheduler processes``) ignore the terminal's Ctrl-C
  (the parent decides), stop cleanly on SIGTERM, and get SIGTERM from the
  kernel when their parent dies, even by SIGKILL, so none runs on for
  minutes writing into a store nobody holds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator

__all__ = ["ConversionCancelled", "Interrupted", "request_stop", "reset_stop",
           "stop_requested", "frames_until_stopped", "stop_on_signals", "stop_from_thread",
           "await_own_signal", "init_worker_process",
           "task_running", "leave_worker_process", "terminate_pool", "EXIT_CODES"]

#: Exit status of a run stopped by a signal (128 + the signal's number, as shells do).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

# Plain flags, not threading.Event: signal handlers set them, and a handler
# that takes a lock deadlocks when a second signal interrupts the first
# handler inside that lock (seen: nested SIGTERMs in Event.set).
_STOP = False
_HANDLING = False      # stop_on_signals' handlers are installed in the main thread
_SIGNALLED = False     # and one of them has run
_IN_WORKER_PROCESS = False
_TASK_RUNNING = False
_PR_SET_PDEATHSIG = 1


class ConversionCancelled(BaseException):
    """Raised inside a task when the run stops; its item stays pending.

    A BaseException, so the tasks' ``except Exception`` (which records a
    failed item) lets it through: a stopped video did not fail.
    """


class Interrupted(KeyboardInterrupt):
    """The main thread's side of a stop: which signal asked for it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)


def request_stop() -> None:
    """Ask every task of this process to stop at its next frame (safe in a signal handler)."""
    global _STOP
    _STOP = True


def reset_stop() -> None:
    """Forget an earlier stop (a new run in the same process)."""
    global _STOP
    _STOP = False


def stop_requested() -> bool:
    return _STOP


def frames_until_stopped(frames: Iterable) -> Iterator:
    """Yield ``frames``, raising :class:`ConversionCancelled` once a stop is asked for."""
    for frame in frames:
        if _STOP:
            raise ConversionCancelled()
        yield frame


def leave_worker_process() -> None:
    """In a worker process, end it once a cancelled task has cleaned up; else nothing.

    Its parent has stopped (or died): sending a result back would only block.
    """
    if _IN_WORKER_PROCESS:
        os._exit(1)


@contextlib.contextmanager
def stop_on_signals(say=None) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in the main thread, once.

    ``say(text)`` prints a line (default: stderr). A block that ends
    without a signal restores the previous handlers; after a signal the
    second-signal handlers stay installed, so a second signal during the
    unwinding (or while the interpreter waits for tasks to leave) exits at
    once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only delivered to the main thread
        return
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))

    def second(signum, frame):
        say(f"\n{signal.Signals(signum).name} again: stopping at once; the store is "
            f"consistent, rerun the same command to resume")
        sys.stderr.flush()
        os._exit(EXIT_CODES.get(signum, 130))

    def first(signum, frame):
        global _SIGNALLED
        _SIGNALLED = True
        request_stop()
        for sig in EXIT_CODES:
            signal.signal(sig, second)
        raise Interrupted(signum)

    global _HANDLING, _SIGNALLED
    previous = {sig: signal.signal(sig, first) for sig in EXIT_CODES}
    _HANDLING, _SIGNALLED = True, False
    try:
        yield
    finally:
        _HANDLING = False
        if not _SIGNALLED:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def stop_from_thread() -> bool:
    """Stop the run from another thread as a SIGTERM would (the lock lost).

    Every task stops at its next frame; when :func:`stop_on_signals` is in
    force, the main thread is sent SIGTERM, so that it leaves what it waits
    on (a process pool, a cluster) and unwinds. Returns True when it was
    sent (see :func:`await_own_signal`).
    """
    request_stop()
    if not _HANDLING or threading.current_thread() is threading.main_thread():
        return False
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    return True


def await_own_signal(timeout: float = 2.0) -> None:
    """In the main thread, after :func:`stop_from_thread` signalled it: let the
    signal's handler run now and swallow its :class:`Interrupted`, so that it
    cannot surface later, outside the block that asked for it."""
    deadline = time.monotonic() + timeout
    while not _SIGNALLED and time.monotonic() < deadline:
        try:
            time.sleep(0.005)
        except Interrupted:
            return


# ----------------------------------------------------------------------------
# worker processes
# ----------------------------------------------------------------------------
def init_worker_process(parent_pid: int) -> None:
    """Initializer of a worker process of the ``processes`` scheduler."""
    global _IN_WORKER_PROCESS
    _IN_WORKER_PROCESS = True
    # A terminal's Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    _die_with_parent(parent_pid)


def _worker_sigterm(signum, frame) -> None:
    if _STOP:
        return   # already stopping (the parent's SIGTERM and the kernel's both come)
    request_stop()
    if not _TASK_RUNNING:
        # Idle, or writing (a half-written item stays pending: status is last).
        os._exit(0)
    raise ConversionCancelled()   # the task's with-blocks remove its temporary files


@contextlib.contextmanager
def task_running() -> Iterator[None]:
    """Mark the body as a computing task: SIGTERM lets it clean up before the process ends."""
    global _TASK_RUNNING
    _TASK_RUNNING = True
    try:
        yield
    finally:
        _TASK_RUNNING = False


def _die_with_parent(parent_pid: int) -> None:
    # Linux delivers SIGTERM to this process when its parent ends, even by
    # SIGKILL; elsewhere (or if prctl is missing) a thread polls the parent.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent_pid:   # the parent died before prctl took effect
        os._exit(1)
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                         name="ahdi-parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        threading.Event().wait(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def terminate_pool(pool) -> None:
    """Stop a ProcessPoolExecutor's workers now: queued tasks dropped, running ones cancelled."""
    # concurrent.futures has no public way to reach its processes before
    # Python 3.14 (terminate_workers); _processes has been there since 3.2
    # and is cleared by shutdown, so it is read first.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()   # SIGTERM: a running task cleans up, then the process ends
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=10)
