"""Writing through the store's API: :class:`StoreWrites`, the write half of
:class:`~ahdi.pipeline.store.Store`.

A conversion does not write through these (it stages items and merges each
shard once, :mod:`ahdi.pipeline.shards`); tests, notebooks, ``ahdi verify
--repair`` and a resume's listing columns do. Each rewrites the objects it
touches whole, under this process's lock of the item's shard.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DamagedChunkError
from .schema import FRAME_CAPACITY, LISTING_COLUMNS, item_rows
from .shards import (Staged, _writer, frame_names, remove_staged, set_frame_width,
                     shard_lock, staged_items, write_shard)

__all__ = ["StoreWrites"]


def _strings(values: Any) -> np.ndarray:
    """A read string array as an object array of Python ``str``."""
    return np.asarray(values).astype(object)


class StoreWrites:
    """The writing methods of :class:`~ahdi.pipeline.store.Store` (a store opened
    'r+', of the current layout version)."""

    # -- writing -------------------------------------------------------------
    def write_item(self, index: int, result: Any, *, fps: float | None,
                   warnings: Sequence[str] = (), face: Any = None) -> None:
        """Write every array of one item, then its status 'done' last.

        ``result`` has fields ``ahdi, sdi, mean, flow`` ((S, S, 3) uint8 or
        None), ``mdv`` ((M, S, S, 3) uint8 or None), ``motion`` ((T,)),
        ``eps``, ``bounds`` (1-D int or None), ``windows`` ((M, 2) int) and
        ``n_frames`` (T); ``face`` is the item's
        :class:`~ahdi.pipeline.face_track.FaceTrack` (``--crop track`` /
        ``align``; None: the face arrays keep their fill values). Everything
        is checked before anything is written,
        and every chunk of the item is written, even one of fill values.
        The item's shard is rewritten (its other items kept) under this
        process's lock on it: threads may write items side by side, other
        processes only items of other shards (a conversion stages items and
        merges each shard once instead).
        """
        self._require_writable("write items")
        i = self._index(index)
        # the layout sized segments for these parameters (schema.segments_width)
        rows = item_rows(result, self.params, self.representations,
                         int(self._array("segments").shape[1]),
                         f"item {i} of store {self._path}", face)
        self._write(i, Staged(rows, math.nan if fps is None else float(fps),
                              "\n".join(str(w) for w in warnings)))

    def write_failure(self, index: int, message: str) -> None:
        """Record why an item failed: its error, then status 'failed'."""
        self._require_writable("write items")
        self._write(self._index(index), Staged(None, error=str(message) or "failed"))

    def _write(self, index: int, item: Staged) -> None:
        shard = index // self.items_per_shard
        if item.rows is not None and any(self._array(name).shape[1] < FRAME_CAPACITY
                                         for name in frame_names(self._group())):
            # A conversion fitted the per-frame arrays to its longest video:
            # items are written at full width (docs/store.md).
            set_frame_width(self._path, FRAME_CAPACITY)
            self._reset()
        with shard_lock(self._path, shard):
            write_shard(self._group(), shard, self.items_per_shard, {index: item}, self._path)

    def mark_pending(self, indices: Sequence[int]) -> None:
        """Set items back to 'pending' (their status goes, damaged or not, and any
        staged result of theirs), so that the next conversion redoes them; what
        ``ahdi verify --repair`` does."""
        self._require_writable("mark items pending")
        g = self.items_per_shard
        rows = sorted({self._index(i) for i in indices})
        for shard in sorted({i // g for i in rows}):
            lo, hi = shard * g, min(self.n_items, (shard + 1) * g)
            with shard_lock(self._path, shard):
                # A damaged status chunk reads as pending: rewriting it repairs it.
                status = _strings(self._rows("status", range(lo, hi), unreadable="pending"))
                status[[i - lo for i in rows if lo <= i < hi]] = "pending"
                _writer(self._group(), "status")[lo:hi] = status
                staged = staged_items(self._path, shard)
                remove_staged(self._path, [staged[i] for i in rows if i in staged])

    # -- listing columns -----------------------------------------------------
    def rewrite_column(self, name: str, values: Sequence[Any]) -> bool:
        """Replace a column written from the item listing if it differs; True if it did.

        Only ``subject``, ``source`` and ``label_<name>``: they are not
        computed, so a resume brings them up to date (an edited labels CSV, a
        moved dataset root). ``values`` holds one str (or float, for a numeric
        label) per item. An unchanged column is not written; a damaged one is
        rewritten.
        """
        self._require_writable("rewrite its columns")
        if name not in LISTING_COLUMNS and not name.startswith("label_"):
            raise ValueError(f"{name!r} is not a column of the item listing; only "
                             f"{', '.join(LISTING_COLUMNS)} and label_<name> can be rewritten")
        array = self._array(name)
        values = np.asarray(values)
        if values.shape != array.shape:
            raise ValueError(f"{name}: {values.size} values for the {array.shape[0]} "
                             f"items of store {self._path}")
        if values.dtype.kind in "OSU":
            values = values.astype(object)
        try:
            current = self._read(name, Ellipsis, None)
        except DamagedChunkError:
            same = False
        else:
            same = ([str(v) for v in current] == [str(v) for v in values]
                    if values.dtype.kind == "O" else
                    np.array_equal(current, values, equal_nan=True))
        if not same:
            _writer(self._group(), name)[...] = values
        return not same
