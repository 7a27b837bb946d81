"""Where an item's chunk is stored, and whether it is there: objects and shard indexes.

An array of a version-3 store keeps G items per stored object: a shard
(one inner chunk per item, or per item and window) or a plain chunk of G
rows. Zarr reads a chunk that is not stored as its fill value, so a reader
that must tell a missing chunk of a done item from a black image asks
:class:`Presence`: it reads each shard's index once (the last
``16 * chunks + 4`` bytes of the object, ``(offset, nbytes)`` per inner
chunk in C order and a CRC32C, as the Zarr sharding specification lays it
out) and says what is missing, or that the index itself is damaged.
Everything goes through the store object, so it reads a folder and an
object store alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import zarr
from zarr.abc.store import SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

__all__ = ["Presence", "DamagedIndex", "object_key", "inner_grid", "EMPTY"]

#: ``(offset, nbytes)`` of an inner chunk that is not stored.
EMPTY = 2 ** 64 - 1
_CHECKSUM_BYTES = 4


class DamagedIndex(Exception):
    """A shard's index fails its checksum: every chunk of the shard is unreadable."""


def inner_grid(arr: zarr.Array) -> tuple[int, ...] | None:
    """Inner chunks per shard along each axis, or None for an array without shards."""
    if arr.shards is None:
        return None
    return tuple(s // c for s, c in zip(arr.shards, arr.chunks))


def object_key(arr: zarr.Array, coords: Sequence[int]) -> str:
    """Key (below the array's folder) of the object holding the chunk at chunk
    coordinates ``coords`` (inner chunk coordinates for a sharded array), e.g.
    ``c/0/0/0/0``."""
    per_object = arr.shards or arr.chunks
    outer = tuple(int(c) * chunk // size
                  for c, chunk, size in zip(coords, arr.chunks, per_object))
    return arr.metadata.encode_chunk_key(outer)


def _decode_index(raw: bytes, n_chunks: int, where: str) -> np.ndarray:
    """The ``(n_chunks, 2)`` offsets and sizes of a shard index, its CRC32C checked."""
    import google_crc32c   # Zarr's own dependency for the index checksum

    body, stored = raw[:-_CHECKSUM_BYTES], raw[-_CHECKSUM_BYTES:]
    if len(raw) != n_chunks * 16 + _CHECKSUM_BYTES:
        raise DamagedIndex(f"shard {where} is shorter than its index")
    if google_crc32c.value(body).to_bytes(4, "little") != stored:
        raise DamagedIndex(f"the index of shard {where} fails its checksum")
    return np.frombuffer(body, dtype="<u8").reshape(n_chunks, 2)


class Presence:
    """Answers "is this chunk of this array stored?", reading each object once.

    Parameters
    ----------
    group : zarr.Group
        The store's root group (its ``store`` is read directly).
    """

    def __init__(self, group: zarr.Group) -> None:
        self._store = group.store
        self._prefix = group.path.strip("/")
        self._group = group
        self._indexes: dict[str, np.ndarray | None | DamagedIndex] = {}
        self._exists: dict[str, bool] = {}
        # A Presence lives for one read, shard write or verify, during which no
        # array's chunk layout changes; opening an array reads its metadata.
        self._arrays: dict[str, zarr.Array] = {}

    def _array(self, name: str) -> zarr.Array:
        """Array ``name`` of the group, opened once."""
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    def _key(self, name: str, rel: str) -> str:
        return "/".join(p for p in (self._prefix, name, rel) if p)

    def _object_exists(self, key: str) -> bool:
        if key not in self._exists:
            self._exists[key] = bool(sync(self._store.exists(key)))
        return self._exists[key]

    def _index(self, key: str, n_chunks: int) -> np.ndarray | None:
        """The shard index at ``key`` (None: no such object); raises DamagedIndex."""
        if key not in self._indexes:
            size = n_chunks * 16 + _CHECKSUM_BYTES
            where = key[len(self._prefix):].lstrip("/")
            try:
                buf = sync(self._store.get(key, default_buffer_prototype(),
                                           SuffixByteRequest(size)))
                self._indexes[key] = None if buf is None else _decode_index(
                    buf.to_bytes(), n_chunks, where)
            except DamagedIndex as exc:
                self._indexes[key] = exc
            except (OSError, ValueError) as exc:   # shorter than an index: damaged
                self._indexes[key] = DamagedIndex(f"shard {where} cannot be read ({exc})")
        found = self._indexes[key]
        if isinstance(found, DamagedIndex):
            raise found
        return found

    def missing(self, name: str, position: Sequence[int]) -> str | None:
        """Why the chunk of array ``name`` holding the element at ``position`` is
        not stored (a text naming the object), or None when it is.

        Raises
        ------
        DamagedIndex
            The shard holding it has an index that fails its checksum.
        """
        arr = self._array(name)
        coords = tuple(int(p) // c for p, c in zip(position, arr.chunks))
        rel = object_key(arr, coords)
        key = self._key(name, rel)
        grid = inner_grid(arr)
        if grid is None:
            return None if self._object_exists(key) else f"no object {name}/{rel}"
        index = self._index(key, math.prod(grid))
        if index is None:
            return f"no object {name}/{rel}"
        inner = tuple(int(c) % g for c, g in zip(coords, grid))
        offset, nbytes = index[int(np.ravel_multi_index(inner, grid))]
        if offset == EMPTY and nbytes == EMPTY:
            return f"shard {name}/{rel} holds no chunk {'/'.join(map(str, inner))}"
        return None

    def stored_extent(self, name: str, shard: int) -> int:
        """Inner chunks along axis 1 that shard ``shard`` (along the item axis) of a
        sharded per-frame array stores: 1 + the last one present, 0 for none."""
        arr = self._array(name)
        grid = inner_grid(arr)
        rel = arr.metadata.encode_chunk_key((shard,) + (0,) * (arr.ndim - 1))
        try:
            index = self._index(self._key(name, rel), math.prod(grid))
        except DamagedIndex:
            return grid[1]          # unknown: assume every chunk may be there
        if index is None:
            return 0
        present = ~((index[:, 0] == EMPTY) & (index[:, 1] == EMPTY))
        by_frame_chunk = np.moveaxis(present.reshape(grid), 1, 0).reshape(grid[1], -1)
        along = np.flatnonzero(by_frame_chunk.any(axis=1))
        return int(along[-1]) + 1 if along.size else 0
