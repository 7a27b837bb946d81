"""The writer lock: one lock file that keeps two writers of a store apart.

A writer creates the lock file atomically (``O_CREAT | O_EXCL``) with
``{host, pid, started}`` in it, refreshes its modification time while it
holds it (a heartbeat), and removes it when done. A second writer finds the
file and is refused with a :class:`~ahdi.pipeline.errors.StoreError` naming
the holder, unless the lock is stale: its process has ended (same host) or
it has not been refreshed for ``stale_after`` seconds (another host, whose
processes we cannot see). A stale lock is taken over, with a note.

Nothing here knows about Zarr: it works on the path of a lock file, and
``what`` (the path of the store it guards) only words the messages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from .errors import StoreError

__all__ = ["StoreLock", "hold_lock"]

log = logging.getLogger(__name__)

# A lock file is written in one small write right after it is created, so an
# unreadable one is either being written now or was left half-written by a
# crash; only the second is worth taking over, and age tells them apart.
_UNREADABLE_GRACE_S = 10.0
_TAKE_ATTEMPTS = 5


@dataclasses.dataclass(frozen=True)
class StoreLock:
    """The lock a ``Store.lock()`` block holds; ``note`` says if it took one over."""

    path: str
    host: str
    pid: int
    started: str
    note: str | None = None


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------
# judging a lock someone else holds
# ----------------------------------------------------------------------------
def _pid_started_after(pid: int, started: str) -> bool:
    """True when process ``pid`` began after ``started``: the pid was reused."""
    try:
        import psutil
        began = psutil.Process(pid).create_time()
        when = _dt.datetime.fromisoformat(started).timestamp()
    except Exception:
        return False
    return began > when + 2.0


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _judge_lock(lock_path: str, stale_after: float) -> tuple[str, dict | None, str | None]:
    """Read a lock file; return (raw text, holder, reason it is stale or None)."""
    try:
        with open(lock_path, encoding="utf-8") as f:
            raw = f.read()
        age = time.time() - os.stat(lock_path).st_mtime
    except FileNotFoundError:
        return "", None, "it was released meanwhile"
    try:
        holder = json.loads(raw)
        host, pid, started = str(holder["host"]), int(holder["pid"]), str(holder["started"])
    except (ValueError, KeyError, TypeError):
        if age > _UNREADABLE_GRACE_S:
            return raw, None, f"the lock file was unreadable and {age:.0f} s old"
        return raw, None, None
    if host == socket.gethostname():
        if not _pid_alive(pid):
            return raw, holder, f"process {pid} on {host} (since {started}) is no longer running"
        if _pid_started_after(pid, started):
            return raw, holder, (f"process {pid} on {host} (since {started}) ended; "
                                 f"its pid now belongs to another process")
        return raw, holder, None
    if age > stale_after:
        return raw, holder, (f"process {pid} on {host} (since {started}) has not refreshed "
                             f"it for {age:.0f} s")
    return raw, holder, None


def _held_message(what: str, lock_path: str, holder: dict | None, stale_after: float) -> str:
    if holder is None:
        return (f"store {what} is being locked by another process right now "
                f"({lock_path} is still being written); try again in a few seconds")
    same_host = holder.get("host") == socket.gethostname()
    gone = (f"if that process is gone, remove {lock_path}" if same_host else
            f"if that process is gone, remove {lock_path} or wait {stale_after:.0f} s "
            f"for the lock to go stale")
    return (f"store {what} is locked by pid {holder.get('pid')} on host "
            f"{holder.get('host')} (since {holder.get('started')}): another ahdi "
            f"process is writing it. Wait for it to finish; {gone}")


def _what(lock_path: str, what: str | None) -> str:
    return what if what is not None else os.path.dirname(os.path.abspath(lock_path))


# ----------------------------------------------------------------------------
# taking, holding and releasing our own lock
# ----------------------------------------------------------------------------
def _remove_if_unchanged(lock_path: str, raw: str) -> None:
    """Remove the lock file only if it still holds ``raw``: another writer
    may have taken it over (or released it) since we read it."""
    try:
        with open(lock_path, encoding="utf-8") as f:
            if f.read() == raw:
                os.unlink(lock_path)
    except FileNotFoundError:
        pass


def _take(lock_path: str, mine: str, what: str, stale_after: float) -> list[str]:
    """Create the lock file holding ``mine``; return notes on locks taken over."""
    notes: list[str] = []
    for _attempt in range(_TAKE_ATTEMPTS):
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raw, holder, stale = _judge_lock(lock_path, stale_after)
            if stale is None:
                raise StoreError(_held_message(what, lock_path, holder, stale_after)) from None
            _remove_if_unchanged(lock_path, raw)
            notes.append(f"took over the lock of store {what}: {stale}")
            log.warning(notes[-1])
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(mine)
            f.flush()
            os.fsync(f.fileno())
        return notes
    raise StoreError(f"could not take the lock {lock_path}: other processes keep "
                     f"taking it; try again")


def _start_heartbeat(lock_path: str,
                     stale_after: float) -> tuple[threading.Event, threading.Thread]:
    """Refresh the lock file's mtime every ``stale_after / 4`` s until the event is
    set, so a writer on another host never judges a live lock stale."""
    stop = threading.Event()

    def heartbeat() -> None:
        interval = max(0.05, min(60.0, stale_after / 4))
        while not stop.wait(interval):
            try:
                os.utime(lock_path)
            except OSError:
                return

    beat = threading.Thread(target=heartbeat, name="ahdi-lock-heartbeat", daemon=True)
    beat.start()
    return stop, beat


@contextlib.contextmanager
def hold_lock(lock_path: str, *, stale_after: float = 600.0,
              what: str | None = None) -> Iterator[StoreLock]:
    """Hold the lock file ``lock_path`` for the ``with`` block.

    Parameters
    ----------
    lock_path : str
        The lock file, created atomically; it holds ``{host, pid, started}``.
    stale_after : float
        A lock not refreshed for this many seconds (another host) is stale;
        this holder refreshes its file every ``stale_after / 4`` s.
    what : str, optional
        Path of the store the lock guards, for messages (default: the lock
        file's folder).

    Yields
    ------
    StoreLock
        Who holds it; ``note`` says which stale locks were taken over.

    Raises
    ------
    StoreError
        A live process holds the lock (the message names it), or other
        processes keep taking it.
    """
    what = _what(lock_path, what)
    info = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now_iso()}
    mine = json.dumps(info)
    notes = _take(lock_path, mine, what, stale_after)
    stop, beat = _start_heartbeat(lock_path, stale_after)
    try:
        yield StoreLock(path=lock_path, note="; ".join(notes) or None, **info)
    finally:
        stop.set()
        beat.join()
        _remove_if_unchanged(lock_path, mine)
