"""The AHDI Zarr v3 store: one folder holding every image of a conversion.

The layout (docs/store.md) is plain Zarr v3, readable without this module.
This module opens a store and is its read/write API. Laying out is
:mod:`ahdi.pipeline.layout`, the schema :mod:`ahdi.pipeline.schema`,
writing items :mod:`ahdi.pipeline.shards`, checking every chunk
:mod:`ahdi.pipeline.verify`.

Concurrency rule: G items share each stored object, and one writer writes
a shard at a time (a conversion stages items and merges each shard in one
task; :meth:`Store.write_item`, in :mod:`ahdi.pipeline.store_writes`, holds
a per-shard lock of this process).
Objects are written whole, to a temporary name renamed into place. Damage
rule: every chunk carries a checksum and a done item has every chunk
written (even an all-zero image), so a reader tells a damaged or missing
chunk from a legitimate value and raises
:class:`~ahdi.pipeline.errors.DamagedChunkError` naming the item and array.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ahdi.kernels.params import AhdiParams

from . import remote
from .chunks import DamagedIndex, Presence
from .errors import DamagedChunkError, StoreError
from .face_settings import FaceTrack
from .lock import StoreLock, hold_lock
from .schema import (FACE_ARRAYS, FRAME_CAPACITY, FRAME_CHUNK, IMAGE_REPRESENTATIONS,
                     READABLE_VERSIONS, STATUSES, STORE_VERSION, face_arrays_missing)
from .shards import required_chunks
from .store_files import (LAYOUT_PROBLEMS, chunk_error, is_ahdi_store, layout_problem,
                          lock_path, not_a_store_error, open_root)
from .store_writes import StoreWrites, _strings

__all__ = [
    "Store", "open_store", "is_ahdi_store", "not_a_store_error", "layout_problem",
    "lock_path", "IMAGE_REPRESENTATIONS", "FRAME_CAPACITY", "FRAME_CHUNK",
    "STORE_VERSION", "READABLE_VERSIONS", "STATUSES", "upgrade_hint", "is_remote",
]

#: True for a store's location on object storage (``s3://``, ``gs://``), where every
#: read is a request: a reader that goes over the same data again (the trainer's
#: epochs) copies it locally first.
is_remote = remote.is_remote


def upgrade_hint(path: str) -> str:
    """What to do with a store of an earlier layout version, which this ahdi only reads."""
    return (f"run ahdi upgrade {path} NEW.zarr to copy it into version {STORE_VERSION} "
            f"(nothing is recomputed)")


def open_store(path: str | os.PathLike, mode: str = "r") -> "Store":
    """Open an existing ahdi store at a path or URL; ``mode`` is 'r' (read) or 'r+'
    (write)."""
    path = os.fspath(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if remote.is_remote(path):
        path = remote.absolute(path)
        if remote.kind(path, StoreError) != "folder":
            raise StoreError(f"no store at {path}: nothing is stored under that URL")
    elif not os.path.lexists(remote.as_local(path)):
        raise StoreError(f"no store at {path}: the path does not exist")
    else:
        path = remote.as_local(path)
    if not is_ahdi_store(path):
        raise not_a_store_error(path)
    problem = layout_problem(path)
    if problem:
        raise StoreError(f"store {path} {LAYOUT_PROBLEMS[problem]}")
    store = Store(path, mode=mode)
    if store.version not in READABLE_VERSIONS:
        raise StoreError(f"store {path} has layout version {store.version!r}; this ahdi "
                         f"reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    return store


# ----------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------
class Store(StoreWrites):
    """An opened ahdi store.

    Picklable: it pickles as its path and mode and reopens the Zarr group
    lazily where it is unpickled (a Dask worker process).

    Use :func:`ahdi.pipeline.layout.create_store` or :func:`open_store`
    rather than the constructor.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r") -> None:
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self._path = remote.absolute(os.fspath(path))
        self._mode = mode
        self._reset()

    def _reset(self) -> None:
        self._group_obj: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._attrs: dict[str, Any] | None = None
        self._params: AhdiParams | None = None

    # pickling: path + mode only
    def __getstate__(self) -> dict[str, str]:
        return {"path": self._path, "mode": self._mode}

    def __setstate__(self, state: dict[str, str]) -> None:
        self._path = state["path"]
        self._mode = state["mode"]
        self._reset()

    def __repr__(self) -> str:
        return f"Store({self._path!r}, mode={self._mode!r})"

    # -- zarr access ---------------------------------------------------------
    def _group(self) -> zarr.Group:
        if self._group_obj is None:
            try:
                self._group_obj = open_root(self._path, self._mode)
            except Exception as exc:
                raise StoreError(f"cannot open store {self._path}: {exc}") from exc
        return self._group_obj

    def _array(self, name: str) -> zarr.Array:
        arr = self._arrays.get(name)
        if arr is None:
            try:
                arr = self._group()[name]
            except KeyError:
                raise StoreError(f"store {self._path} has no array {name!r}") from None
            self._arrays[name] = arr
        return arr

    def _require_writable(self, what: str) -> None:
        if self._mode != "r+":
            raise StoreError(f"store {self._path} is open read-only; "
                             f"open it with mode='r+' to {what}")
        if self.version != STORE_VERSION:
            raise StoreError(f"store {self._path} has layout version {self.version}, which "
                             f"this ahdi reads but does not write; {upgrade_hint(self._path)}")
        self._check_face_track()

    def _index(self, index: int) -> int:
        i = int(index)
        if not 0 <= i < self.n_items:
            raise IndexError(f"item index {index} out of range for store {self._path} "
                             f"with {self.n_items} items")
        return i

    def _rep(self, rep: str) -> None:
        if rep not in self.representations:
            raise StoreError(f"store {self._path} holds no {rep!r} "
                             f"(it holds {', '.join(self.representations)})")

    # -- damage --------------------------------------------------------------
    def damage(self, name: str, index: int | None, kind: str,
               reason: str | BaseException) -> DamagedChunkError:
        """The error for a ``kind`` ('damaged' or 'missing') chunk of array ``name``
        of item ``index`` (None: a column of the whole store); ``reason`` is a
        text or the exception that reading the chunk raised."""
        video_id = ""
        if index is not None:
            try:
                video_id = str(self.video_ids()[index])
            except StoreError:
                video_id = f"#{index}"
        return chunk_error(self._path, name, index, video_id, kind, reason)

    def _read(self, name: str, selection: Any, index: int | None) -> np.ndarray:
        """``array[selection]``; a chunk that cannot be decoded raises
        :class:`DamagedChunkError` naming item ``index``."""
        arr = self._array(name)
        try:
            return np.asarray(arr[selection])
        except Exception as exc:  # zarr's codecs and the disk share no exception base
            raise self.damage(name, index, "damaged", self._why(name, index, exc)) from exc

    def _why(self, name: str, index: int | None, exc: BaseException) -> str | BaseException:
        """Why a read of item ``index`` failed: its shard's damaged index, if that is it."""
        arr = self._array(name)
        if index is not None and arr.shards is not None:
            try:
                self.presence().missing(name, (index,) + (0,) * (arr.ndim - 1))
            except DamagedIndex as damaged:
                return str(damaged)
        return exc

    def _rows(self, name: str, indices: Sequence[int] | None = None,
              unreadable: str | None = None) -> np.ndarray:
        """Rows ``indices`` (all when None) of a per-item array, in that order.

        A damaged chunk raises :class:`DamagedChunkError` naming its item, or
        with ``unreadable`` (string arrays) reads as that value.
        """
        arr = self._array(name)
        rows = (np.arange(self.n_items) if indices is None else
                np.asarray([self._index(i) for i in indices], dtype=np.int64))
        if rows.size == 0:
            return np.zeros((0,) + arr.shape[1:], dtype=arr.dtype)
        try:
            return np.asarray(arr[:] if indices is None else arr.oindex[rows])
        except Exception:  # a damaged chunk: read row by row to find it
            pass
        values = []
        for i in (int(i) for i in rows):
            try:
                values.append(np.asarray(arr[i]))
            except Exception as exc:
                if unreadable is None:
                    raise self.damage(name, i, "damaged", self._why(name, i, exc)) from exc
                values.append(np.asarray(unreadable))
        return np.stack(values)

    def presence(self) -> Presence:
        """A fresh :class:`~ahdi.pipeline.chunks.Presence` of this store's chunks."""
        return Presence(self._group())

    def _require(self, name: str, index: int, positions: Sequence[Sequence[int]],
                 presence: Presence | None = None) -> None:
        """Raise :class:`DamagedChunkError` if item ``index`` is done and one of its
        chunks of array ``name`` (by the ``positions`` of their first elements)
        is not stored, or its shard index is damaged. Stores of version 1 may
        lack fill-only chunks: nothing is required there."""
        if self.version < 2:
            return
        presence = presence or self.presence()
        for position in positions:
            try:
                why, kind = presence.missing(name, position), "missing"
            except DamagedIndex as exc:
                why, kind = str(exc), "damaged"
            if why:
                if str(self._read("status", index, index)) == "done":
                    raise self.damage(name, index, kind, why)
                return

    def _item_value(self, name: str, index: int) -> np.ndarray:
        """The whole row of a per-item array for one item, checked."""
        i = self._index(index)
        self._require(name, i, required_chunks(self._array(name), i))
        return self._read(name, i, i)

    # -- metadata ------------------------------------------------------------
    @property
    def path(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes (a copy)."""
        if self._attrs is None:
            self._attrs = dict(self._group().attrs.asdict())
        return dict(self._attrs)

    @property
    def version(self) -> int:
        """The layout version (``STORE_VERSION`` for stores this ahdi lays out)."""
        return self.attrs.get("ahdi_store_version")

    @property
    def params(self) -> AhdiParams:
        if self._params is None:
            try:
                self._params = AhdiParams.from_dict(self.attrs["params"])
            except (KeyError, ValueError, TypeError) as exc:
                raise StoreError(f"store {self._path} holds parameters this ahdi "
                                 f"cannot read: {exc}") from exc
        return self._params

    @property
    def param_hash(self) -> str:
        return str(self.attrs["param_hash"])

    @property
    def n_items(self) -> int:
        return int(self._array("status").shape[0])

    @property
    def items_per_shard(self) -> int:
        """G: items sharing each stored object (1 in stores of version 1 and 2)."""
        return int(self.attrs.get("items_per_shard", 1))

    @property
    def size(self) -> int:
        return int(self.params.size)

    @property
    def representations(self) -> list[str]:
        return list(self.attrs["representations"])

    @property
    def label_names(self) -> list[str]:
        return list(self.attrs.get("labels") or [])

    @property
    def label_kinds(self) -> dict[str, str]:
        return dict(self.attrs.get("label_kinds") or {})

    # -- per-item tables -----------------------------------------------------
    def video_ids(self) -> np.ndarray:
        return _strings(self._read("video_id", slice(None), None))

    def subjects(self) -> np.ndarray:
        return _strings(self._read("subject", slice(None), None))

    def sources(self) -> np.ndarray:
        return _strings(self._read("source", slice(None), None))

    def labels(self) -> dict[str, np.ndarray]:
        """Label name -> array (float64 with NaN, or str with '' for missing)."""
        out = {}
        for name in self.label_names:
            values = self._read(f"label_{name}", slice(None), None)
            out[name] = (np.asarray(values, dtype=np.float64)
                         if self.label_kinds.get(name) == "number" else _strings(values))
        return out

    def statuses(self, unreadable: str | None = None) -> np.ndarray:
        """Every item's status. A damaged status chunk raises
        :class:`DamagedChunkError`, or reads as ``unreadable`` when given."""
        return _strings(self._rows("status", unreadable=unreadable))

    def errors(self, unreadable: str | None = None) -> np.ndarray:
        return _strings(self._rows("error", unreadable=unreadable))

    def warnings(self, unreadable: str | None = None) -> np.ndarray:
        return _strings(self._rows("warning", unreadable=unreadable))

    def pending_indices(self) -> list[int]:
        """Items not done yet: pending, failed (a resume retries them), or whose
        status chunk is damaged (redoing the item rewrites it)."""
        return [int(i) for i in np.flatnonzero(self.statuses(unreadable="pending") != "done")]

    def counts(self) -> dict[str, int]:
        """Items per status; a damaged status chunk counts as pending."""
        status = self.statuses(unreadable="pending")
        return {s: int(np.count_nonzero(status == s)) for s in STATUSES}

    # -- reading -------------------------------------------------------------
    def image(self, rep: str, index: int) -> np.ndarray:
        """One (S, S, 3) uint8 image of ``rep`` ('ahdi', 'sdi', 'mean', 'flow')."""
        if rep == "mdv":
            raise StoreError("mdv is a stack per item; read it with Store.mdv(index)")
        self._rep(rep)
        return self._item_value(rep, index)

    def images(self, rep: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 images of ``rep`` for ``indices`` (all by default)."""
        if rep == "mdv":
            raise StoreError("mdv is a stack per item; read it with Store.mdv(index)")
        self._rep(rep)
        rows = range(self.n_items) if indices is None else [self._index(i) for i in indices]
        presence = self.presence()
        for i in rows:
            self._require(rep, i, [(i, 0, 0, 0)], presence)
        return self._rows(rep, indices)

    def mdv(self, index: int) -> np.ndarray:
        """(mdv_count, S, S, 3) uint8 level-1 window images of one item."""
        self._rep("mdv")
        i = self._index(index)
        count = int(self._item_value("mdv_count", i))
        self._require("mdv", i, required_chunks(self._array("mdv"), i, windows=count))
        return self._read("mdv", (i, slice(0, count)), i)

    def mdv_counts(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N,) int32 number of level-1 window images of ``indices`` (all by default).

        Reads only the counts, not the stacks (0 for items not done yet).
        """
        self._rep("mdv")
        rows = range(self.n_items) if indices is None else [self._index(i) for i in indices]
        presence = self.presence()
        for i in rows:
            self._require("mdv_count", i, [(i,)], presence)
        return self._rows("mdv_count", indices)

    def n_frames(self, index: int) -> int:
        return int(self._item_value("n_frames", index))

    def eps(self, index: int) -> float:
        """Activity threshold the item's segmentation used (NaN before it is done)."""
        return float(self._item_value("eps", index))

    def motion(self, index: int) -> np.ndarray:
        """(n_frames,) float32 motion activity of one item."""
        return self.frames("motion", index)

    def frames(self, name: str, index: int) -> np.ndarray:
        """(n_frames,) + tail values of one item's per-frame array ``name``."""
        i = self._index(index)
        t = self.n_frames(i)
        self._require(name, i, required_chunks(self._array(name), i, n_frames=t))
        return self._read(name, (i, slice(0, t)), i)

    # -- face track ----------------------------------------------------------
    @property
    def has_face_track(self) -> bool:
        """Does the store hold the face track arrays (every store this ahdi lays out)?"""
        return all(name in self._group() for name in FACE_ARRAYS)

    def _check_face_track(self) -> bool:
        """True if the store has the face track, False for versions 1 and 2 (never
        any); a version-3 store laid out without it raises StoreError (what to do)."""
        missing = face_arrays_missing(list(self._group().array_keys()), self.version,
                                      self._path)
        if missing:
            raise StoreError(missing)
        return self.has_face_track

    def face_found_shares(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N,) float32 share of frames showing the face, for ``indices`` (all by
        default); NaN for items without a face track (a crop that does not
        follow the face, an item not done, a store of version 1 or 2)."""
        if not self._check_face_track():
            n = self.n_items if indices is None else len(indices)
            return np.full(n, np.nan, dtype=np.float32)
        return self._rows("face_found_share", indices)

    def face_track(self, index: int) -> FaceTrack | None:
        """The face track of one item (``--crop track`` / ``align``), or None when
        it has none (another crop, not done, a store of version 1 or 2).

        A :class:`~ahdi.pipeline.face_track.FaceTrack` as the reader made it,
        in float32: ``boxes`` (T, 4), ``transforms`` (T, 2, 3), ``found``
        (T,) bool, ``status`` (T,) int8 (``face_presence`` codes),
        ``reference`` (-1: no face found)."""
        i = self._index(index)
        if not self._check_face_track() or np.isnan(self._item_value("face_found_share", i)):
            return None
        return FaceTrack(self.frames("face_boxes", i), self.frames("face_transforms", i),
                         self.frames("face_found", i), self.frames("face_status", i),
                         int(self._item_value("face_reference", i)))

    def windows(self, index: int) -> np.ndarray:
        """(M, 2) int32 level-1 windows ``[start, stop)`` of one item."""
        rows = self._item_value("windows", index)
        return rows[rows[:, 0] >= 0]

    def segments(self, index: int) -> np.ndarray:
        """Segment boundaries of one item (empty when none were stored)."""
        row = self._item_value("segments", index)
        return row[row >= 0]

    def item_table(self, indices: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One dict per item (of ``indices``; all by default): index, video_id,
        subject, status, error, warning, n_frames, fps and every label (under
        its name, or ``label_<name>`` if the name is taken)."""
        rows = list(range(self.n_items)) if indices is None else [self._index(i)
                                                                  for i in indices]
        columns: dict[str, np.ndarray] = {
            "video_id": self.video_ids()[rows], "subject": self.subjects()[rows],
            "status": _strings(self._rows("status", rows)),
            "error": _strings(self._rows("error", rows)),
            "warning": _strings(self._rows("warning", rows)),
            "n_frames": self._rows("n_frames", rows), "fps": self._rows("fps", rows),
        }
        for name, values in self.labels().items():
            key = name if name not in columns and name != "index" else f"label_{name}"
            columns[key] = values[rows]
        table = []
        for k, i in enumerate(rows):
            row: dict[str, Any] = {"index": i}
            for key, values in columns.items():
                row[key] = values[k].item() if isinstance(values[k], np.generic) else values[k]
            table.append(row)
        return table

    # -- lock ----------------------------------------------------------------
    def lock(self, *,
             stale_after: float = 600.0) -> contextlib.AbstractContextManager[StoreLock]:
        """Hold ``<path>.lock`` (:func:`lock_path`) while writing, so two writers keep
        apart: :func:`ahdi.pipeline.lock.hold_lock` (a live holder is refused by
        name; a stale lock is taken over, the yielded ``StoreLock.note`` says so)."""
        self._require_writable("lock it")
        return hold_lock(lock_path(self._path), stale_after=stale_after, what=self._path)
