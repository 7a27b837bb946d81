"""The writer lock: one lock file (or object) that keeps two writers of a store apart.

A writer creates the lock file atomically (``O_CREAT | O_EXCL``) with
``{host, pid, started}`` in it, refreshes its modification time while it
holds it (a heartbeat), and removes it when done. A second writer finds the
file and is refused with a :class:`~ahdi.pipeline.errors.StoreError` naming
the holder, unless the lock is stale: its process has ended (same host) or
it has not been refreshed for ``stale_after`` seconds (another host, whose
processes we cannot see). A stale lock is taken over, with a note.

On object storage (a lock URL such as ``s3://bucket/x.zarr.lock``) there is
no POSIX: the lock is an object created only if absent (S3's
``If-None-Match: *``), refreshed and taken over only if it is still the
version read (``If-Match: <ETag>``; every refresh changes its content, so a
takeover judged on an old version fails), and deleted the same way. Its age
is judged by the server's clock (the LastModified of a probe object written
just before), never a client's. The same rules decide staleness. Where the
server cannot do this (it ignores the conditions, as a probe finds, or the
protocol offers none ahdi knows), the lock is refused rather than risk two
writers.

A holder that finds its lock no longer its own (another host took it over
because this process stalled past ``stale_after``, or the lock was removed
or replaced) stops writing at once: each refresh checks that the lock still
holds this process's content (on S3, the If-Match of the refresh), and
while the lock is held a write fence (:mod:`ahdi.pipeline.fence`) runs
before every write into the store, raising :class:`LockLost` once the loss
is seen, and confirming the lock first when its last refresh is older than
half of ``stale_after`` (a process stalled that long may have been judged
stale). The run is stopped as by SIGTERM
(:func:`ahdi.pipeline.stopping.stop_from_thread`) and ``hold_lock`` ends
with a :class:`~ahdi.pipeline.errors.LockLostError` naming the store and
the new holder.

Nothing here knows about Zarr: it works on the path or URL of a lock, and
``what`` (the store it guards) names the store in messages and the fence.
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

from . import fence, remote, stopping
from .errors import LockLostError, StoreError

__all__ = ["StoreLock", "LockLost", "hold_lock"]

log = logging.getLogger(__name__)

# A lock file is written in one small write right after it is created, so an
# unreadable one is either being written now or was left half-written by a
# crash; only the second is worth taking over, and age tells them apart.
_UNREADABLE_GRACE_S = 10.0
_TAKE_ATTEMPTS = 5
#: Longest time between two refreshes of a held lock (shorter when stale_after is short).
HEARTBEAT_MAX_S = 60.0
_clock = time.monotonic   # the lease's clock (a test stalls it)


class LockLost(stopping.ConversionCancelled):
    """Raised by the write fence once this process's lock of the store is lost.

    A BaseException (as a cancelled task's), so the tasks' ``except
    Exception`` does not record it as a failed item; :func:`hold_lock`
    turns it into a :class:`~ahdi.pipeline.errors.LockLostError`.
    """


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
    holder, stale = _staleness(raw, age, stale_after)
    return raw, holder, stale


def _staleness(raw: str, age: float, stale_after: float) -> tuple[dict | None, str | None]:
    """(holder, reason the lock is stale or None) of a lock holding ``raw``,
    last refreshed ``age`` seconds ago."""
    try:
        holder = json.loads(raw)
        host, pid, started = str(holder["host"]), int(holder["pid"]), str(holder["started"])
    except (ValueError, KeyError, TypeError):
        if age > _UNREADABLE_GRACE_S:
            return None, f"the lock file was unreadable and {age:.0f} s old"
        return None, None
    if host == socket.gethostname():
        if not _pid_alive(pid):
            return holder, f"process {pid} on {host} (since {started}) is no longer running"
        if _pid_started_after(pid, started):
            return holder, (f"process {pid} on {host} (since {started}) ended; "
                            f"its pid now belongs to another process")
        return holder, None
    if age > stale_after:
        return holder, (f"process {pid} on {host} (since {started}) has not refreshed "
                        f"it for {age:.0f} s")
    return holder, None


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


def _taken_by(raw: str) -> str:
    """Who holds a lock that is no longer ours, from its content."""
    try:
        holder = json.loads(raw)
        return (f"pid {int(holder['pid'])} on host {holder['host']} (since "
                f"{holder['started']}) took it over")
    except (ValueError, KeyError, TypeError):
        return "it was replaced by something that is not an ahdi lock"


def _what(lock_path: str, what: str | None) -> str:
    return what if what is not None else remote.parent(lock_path)


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


class _FileLock:
    """The lock as a file: taken with ``O_EXCL``, refreshed by its mtime."""

    def __init__(self, lock_path: str, info: dict, what: str, stale_after: float) -> None:
        self.path, self.what, self.stale_after = lock_path, what, stale_after
        self.mine = json.dumps(info)

    def take(self) -> list[str]:
        return _take(self.path, self.mine, self.what, self.stale_after)

    def refresh(self) -> str | None:
        """Refresh the lock if it is still ours; else say who has it (OSError: try again)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                raw = f.read()
        except FileNotFoundError:
            return f"{self.path} was removed"
        if raw != self.mine:
            return _taken_by(raw)
        os.utime(self.path)
        return None

    def release(self) -> None:
        _remove_if_unchanged(self.path, self.mine)


# ----------------------------------------------------------------------------
# the lock as an object (S3)
# ----------------------------------------------------------------------------
def _unsupported_message(what: str, scheme: str) -> str:
    return (f"cannot lock store {what}: ahdi keeps two writers of a store apart only on "
            f"local paths and on s3:// (whose server checks conditional writes), not on "
            f"{scheme}://; write the store on a local path or on s3://")


def _ignored_message(what: str, lock_url: str) -> str:
    return (f"cannot lock store {what}: the object store ignores conditional writes (a "
            f"second create of a probe object beside {lock_url} with If-None-Match: * "
            f"succeeded), so two writers could not be kept apart; use a server that checks "
            f"them (AWS S3, MinIO, Ceph) or write the store on a local path")


class _ObjectLock:
    """The lock as an object created only if absent and replaced only if unchanged.

    Each refresh writes the next ``beat`` number into it, so its ETag
    changes: a takeover decided on an old version of it fails (If-Match).
    """

    def __init__(self, lock_url: str, info: dict, what: str, stale_after: float) -> None:
        self.path, self.what, self.stale_after = lock_url, what, stale_after
        self.info = info
        self.beat = 0
        self.etag: str | None = None
        try:
            self.obj = remote.ConditionalObject(lock_url, StoreError)
        except remote.ConditionsUnsupported as exc:
            raise StoreError(_unsupported_message(what, str(exc))) from None

    def _content(self) -> bytes:
        return json.dumps({**self.info, "beat": self.beat}).encode()

    def take(self) -> list[str]:
        try:
            server_now = self.obj.check_conditions()
        except remote.ConditionsUnsupported:
            raise StoreError(_ignored_message(self.what, self.path)) from None
        notes: list[str] = []
        for _attempt in range(_TAKE_ATTEMPTS):
            self.etag = self.obj.create(self._content())
            if self.etag is not None:
                return notes
            held = self.obj.read()
            if held is None:
                continue     # released meanwhile: create it again
            raw, etag, modified = held
            age = (server_now - modified).total_seconds()
            holder, stale = _staleness(raw.decode("utf-8", "replace"), age, self.stale_after)
            if stale is None:
                raise StoreError(_held_message(self.what, self.path, holder, self.stale_after))
            self.etag = self.obj.replace(self._content(), etag)
            if self.etag is None:
                continue     # another writer took it over first: judge it again
            notes.append(f"took over the lock of store {self.what}: {stale}")
            log.warning(notes[-1])
            return notes
        raise StoreError(f"could not take the lock {self.path}: other processes keep "
                         f"taking it; try again")

    def refresh(self) -> str | None:
        """Refresh the lock if it is still ours; else say who has it (StoreError: the
        network, try again)."""
        self.beat += 1
        etag = self.obj.replace(self._content(), self.etag or "")
        if etag is not None:
            self.etag = etag
            return None
        self.etag = None
        held = self.obj.read()
        if held is None:
            return f"{self.path} was deleted"
        raw = held[0].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            if {k: json.loads(raw).get(k) for k in self.info} == self.info:
                self.etag = held[1]   # our own last refresh, whose answer was lost
                return None
        return _taken_by(raw)

    def release(self) -> None:
        if self.etag is not None:
            self.obj.delete(self.etag)


# ----------------------------------------------------------------------------
# holding a lock
# ----------------------------------------------------------------------------
class _Lease:
    """A held lock kept ours: refreshed every ``stale_after / 4`` s (at most
    HEARTBEAT_MAX_S) by a thread, so that no other host judges it stale, and
    checked before each write (:meth:`check`, the store's write fence)."""

    def __init__(self, lock, what: str, stale_after: float) -> None:
        self.lock, self.what, self.stale_after = lock, what, stale_after
        self.interval = max(0.05, min(HEARTBEAT_MAX_S, stale_after / 4))
        self.confirmed = _clock()
        self.lost: str | None = None
        self.signalled = False
        self._closed = False
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ahdi-lock-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval) and self.confirm():
            pass

    def confirm(self) -> bool:
        """Refresh the lock; False (and the run stopped) once it is not ours."""
        with self._guard:
            if self._closed:
                return False
            if self.lost is None:
                try:
                    reason = self.lock.refresh()
                except (OSError, StoreError) as exc:   # the network: try again
                    log.debug("could not refresh %s: %s", self.lock.path, exc)
                    silent = _clock() - self.confirmed
                    if silent < self.stale_after / 2:
                        return True
                    reason = (f"it could not be refreshed for {silent:.0f} s ({exc}), so "
                              f"another process may take it over")
                if reason is None:
                    self.confirmed = _clock()
                    return True
                self.lost = reason
                log.debug(self.message())   # hold_lock raises it, once
                self.signalled = stopping.stop_from_thread()
            return False

    def check(self) -> None:
        """The write fence: raise :class:`LockLost` unless the lock is still ours
        (confirmed now when its last refresh is older than ``stale_after / 2``)."""
        if self.lost is None and _clock() - self.confirmed > self.stale_after / 2:
            self.confirm()
        if self.lost is not None:
            raise LockLost(self.message())

    def message(self) -> str:
        return (f"store {self.what}: this run lost its lock {self.lock.path}: {self.lost}; "
                f"it stopped writing (finished items are kept). Two writers must not share "
                f"a store: let the other one finish, then run the same command again to "
                f"resume")

    def stop(self) -> None:
        """Stop refreshing (the block is over); absorb our own stop signal."""
        self._stop.set()
        self._thread.join()
        # A check in flight in another thread ends first; none after it asks again.
        with self._guard:
            self._closed = True
        if self.signalled:
            stopping.await_own_signal()


@contextlib.contextmanager
def hold_lock(lock_path: str, *, stale_after: float = 600.0,
              what: str | None = None) -> Iterator[StoreLock]:
    """Hold the lock file (or lock object) ``lock_path`` for the ``with`` block.

    Parameters
    ----------
    lock_path : str
        The lock file, created atomically; it holds ``{host, pid, started}``.
        An ``s3://`` URL is a lock object (see the module's notes); another
        remote protocol, or a server that ignores conditional writes, is
        refused.
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
        A live process holds the lock (the message names it), other
        processes keep taking it, or the storage cannot keep writers apart.
    LockLostError
        The lock stopped being this process's while the block ran (taken
        over, removed or replaced); the block was stopped and nothing was
        written into the store ``what`` after the loss was seen.
    """
    what = _what(lock_path, what)
    info = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now_iso()}
    lock = (_ObjectLock if remote.is_remote(lock_path) else _FileLock)(
        lock_path, info, what, stale_after)
    notes = lock.take()
    lease = _Lease(lock, what, stale_after)
    lease.start()
    fence.set_write_fence(what, lease.check)
    try:
        try:
            yield StoreLock(path=lock_path, note="; ".join(notes) or None, **info)
        finally:
            fence.set_write_fence(what, None)
            lease.stop()
            lock.release()   # removes only what is still ours
    except BaseException:
        if lease.lost is None:
            raise
        raise LockLostError(lease.message()) from None
    if lease.lost is not None:
        raise LockLostError(lease.message())
