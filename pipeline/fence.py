"""The write fence: no write into a store whose writer lock this process has lost.

While a process holds a store's lock (:func:`ahdi.pipeline.lock.hold_lock`),
the lock sets a check for the store here (:func:`set_write_fence`); every
writable Zarr store object of it (:func:`ahdi.pipeline.remote.zarr_store`
wraps it with :func:`fenced`) runs the check before each write or delete,
and writes that bypass Zarr (a bulk delete on object storage) call
:func:`check_write_fence`. The check raises once the lock is no longer
this process's (taken over, removed), so that nothing is written after the
loss is seen, whichever thread writes. Outside a held lock nothing is
checked (readers, a worker process, a caller writing without the lock).
Locations are named as :func:`ahdi.pipeline.remote.absolute` gives them,
as every store path is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

__all__ = ["set_write_fence", "check_write_fence", "fenced"]

# store location (absolute path or URL) -> the check its lock holder runs
# before each write; set only while this process holds the lock.
_FENCES: dict[str, Callable[[], None]] = {}


def set_write_fence(location: str, check: Callable[[], None] | None) -> None:
    """Run ``check()`` before every write into the store at ``location`` (None: no more)."""
    if check is None:
        _FENCES.pop(location, None)
    else:
        _FENCES[location] = check


def check_write_fence(location: str) -> None:
    """Run the write fence of the store at ``location``, if one is set."""
    check = _FENCES.get(location)
    if check is not None:
        check()


@functools.cache
def _fenced_class() -> type:
    from zarr.storage import WrapperStore

    class FencedStore(WrapperStore):
        """A Zarr store whose writes and deletes first run its store's write fence."""

        def __init__(self, store, key: str) -> None:
            super().__init__(store)
            self._key = key

        def _with_store(self, store):
            return type(self)(store, self._key)

        def _check(self) -> None:
            # Looked up at each write: the fence goes when the lock is released,
            # and a store object may outlive it (a Store opened under the lock).
            check_write_fence(self._key)

        async def set(self, key, value) -> None:
            self._check()
            await self._store.set(key, value)

        async def set_if_not_exists(self, key, value) -> None:
            self._check()
            await self._store.set_if_not_exists(key, value)

        async def _set_many(self, values) -> None:
            self._check()
            await self._store._set_many(values)

        async def delete(self, key) -> None:
            self._check()
            await self._store.delete(key)

        async def delete_dir(self, prefix) -> None:
            self._check()
            await self._store.delete_dir(prefix)

        async def clear(self) -> None:
            self._check()
            await self._store.clear()

    return FencedStore


def fenced(store, location: str):
    """``store`` (a writable Zarr store of the store at ``location``), checking the
    store's write fence before each write when one is set now; else ``store``."""
    return _fenced_class()(store, location) if location in _FENCES else store
