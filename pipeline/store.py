"""The AHDI Zarr v3 store: one folder holding every image of a conversion.

The layout (docs/store.md) is plain Zarr v3, readable without this module.
This module opens a store and is its read/write API: Dask tasks (threads,
processes, machines sharing the file system) each write their own item, and
readers read it back. Laying out is :mod:`ahdi.pipeline.layout`, the schema
:mod:`ahdi.pipeline.schema`, checking every chunk :mod:`ahdi.pipeline.verify`.

Concurrency rule: a task writes only its own item's chunks (chunk size 1
along the item axis, so no two tasks share a file), each written to a
temporary file and renamed into place. Damage rule: every chunk carries a
checksum and a done item has every chunk written (even an all-zero image),
so a reader tells a damaged or missing chunk from a legitimate value and
raises :class:`~ahdi.pipeline.errors.DamagedChunkError` naming the item and
array.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ahdi.kernels.params import AhdiParams

from .errors import DamagedChunkError, StoreError
from .lock import StoreLock, hold_lock
from .schema import (IMAGE_REPRESENTATIONS, LISTING_COLUMNS, MOTION_CAPACITY, MOTION_CHUNK,
                     READABLE_VERSIONS, STATUSES, STORE_VERSION, item_rows)
from .store_files import (LAYOUT_PROBLEMS, chunk_error, is_ahdi_store, layout_problem,
                          lock_path, not_a_store_error)

__all__ = [
    "Store", "open_store", "is_ahdi_store", "not_a_store_error", "layout_problem",
    "lock_path", "IMAGE_REPRESENTATIONS", "MOTION_CAPACITY", "MOTION_CHUNK",
    "STORE_VERSION", "READABLE_VERSIONS", "STATUSES",
]


def open_store(path: str | os.PathLike, mode: str = "r") -> "Store":
    """Open an existing ahdi store; ``mode`` is 'r' (read) or 'r+' (write)."""
    path = os.fspath(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not os.path.lexists(path):
        raise StoreError(f"no store at {path}: the path does not exist")
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


def _strings(values: Any) -> np.ndarray:
    """A read string array as an object array of Python ``str``."""
    return np.asarray(values).astype(object)


# ----------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------
class Store:
    """An opened ahdi store.

    Picklable: it pickles as its path and mode and reopens the Zarr group
    lazily where it is unpickled (a Dask worker process).

    Use :func:`ahdi.pipeline.layout.create_store` or :func:`open_store`
    rather than the constructor.
    """

    def __init__(self, path: str | os.PathLike, mode: str = "r") -> None:
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        self._path = os.path.abspath(os.fspath(path))
        self._mode = mode
        self._reset()

    def _reset(self) -> None:
        self._group_obj: zarr.Group | None = None
        self._arrays: dict[str, zarr.Array] = {}
        self._writers: dict[str, zarr.Array] = {}
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
                local = zarr.storage.LocalStore(self._path, read_only=self._mode == "r")
                self._group_obj = zarr.open_group(store=local, mode=self._mode)
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

    def _writer(self, name: str) -> zarr.Array:
        """Array ``name`` writing every chunk, even one of fill values only: a done
        item has all its chunks, so a missing one is damage, not a black image."""
        arr = self._writers.get(name)
        if arr is None:
            arr = self._writers[name] = self._array(name).with_config(
                {"write_empty_chunks": True})
        return arr

    def _require_writable(self, what: str) -> None:
        if self._mode != "r+":
            raise StoreError(f"store {self._path} is open read-only; "
                             f"open it with mode='r+' to {what}")

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
    def chunk_file(self, name: str, coords: Sequence[int]) -> str:
        """The file of array ``name``'s chunk at chunk coordinates ``coords``."""
        key = self._array(name).metadata.encode_chunk_key(tuple(int(c) for c in coords))
        return os.path.join(self._path, name, *key.split("/"))

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
            raise self.damage(name, index, "damaged", exc) from exc

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
                    raise self.damage(name, i, "damaged", exc) from exc
                values.append(np.asarray(unreadable))
        return np.stack(values)

    def _require(self, name: str, index: int, chunks: Sequence[Sequence[int]]) -> None:
        """Raise :class:`DamagedChunkError` if item ``index`` is done and lacks one
        of its ``chunks`` of array ``name`` (stores of version 1 may lack them)."""
        if self.version < 2:
            return
        for coords in chunks:
            file = self.chunk_file(name, coords)
            if not os.path.exists(file):
                if str(self._read("status", index, index)) == "done":
                    raise self.damage(name, index, "missing",
                                      f"no file {os.path.relpath(file, self._path)}")
                return

    def _item_value(self, name: str, index: int) -> np.ndarray:
        """The whole row of a per-item array for one item (one chunk), checked."""
        i = self._index(index)
        arr = self._array(name)
        self._require(name, i, [(i,) + (0,) * (arr.ndim - 1)])
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

    # -- writing -------------------------------------------------------------
    def write_item(self, index: int, result: Any, *, fps: float | None,
                   warnings: Sequence[str] = ()) -> None:
        """Write every array of one item, then its status 'done' last.

        ``result`` has fields ``ahdi, sdi, mean, flow`` ((S, S, 3) uint8 or
        None), ``mdv`` ((M, S, S, 3) uint8 or None), ``motion`` ((T,)),
        ``eps``, ``bounds`` (1-D int or None), ``windows`` ((M, 2) int) and
        ``n_frames`` (T). Everything is checked before anything is written,
        and every chunk of the item is written, even one of fill values.
        """
        self._require_writable("write items")
        i = self._index(index)
        # the layout sized segments for these parameters (schema.segments_width)
        rows = item_rows(result, self.params, self.representations,
                         int(self._array("segments").shape[1]),
                         f"item {i} of store {self._path}")
        put = self._writer
        if rows.motion.size:
            put("motion")[i, :rows.motion.size] = rows.motion
        put("segments")[i] = rows.segments
        put("windows")[i] = rows.windows
        for rep, value in rows.images.items():
            if rep == "mdv":
                m = value.shape[0]
                if m:
                    put("mdv")[i, :m] = value
                if m < self.params.mdv_capacity:
                    # empty slots have no chunk, and one left by an earlier attempt goes
                    self._array("mdv")[i, m:] = 0
                put("mdv_count")[i] = np.int32(m)
            else:
                put(rep)[i] = value
        put("n_frames")[i] = np.int32(rows.n_frames)
        put("fps")[i] = np.float32(np.nan if fps is None else fps)
        put("eps")[i] = np.float32(rows.eps)
        put("warning")[i] = "\n".join(str(w) for w in warnings)
        put("error")[i] = ""
        put("status")[i] = "done"          # last: the item counts as done

    def write_failure(self, index: int, message: str) -> None:
        """Record why an item failed: its error, then status 'failed'."""
        self._require_writable("write items")
        i = self._index(index)
        self._writer("error")[i] = str(message) or "failed"
        self._writer("status")[i] = "failed"

    def mark_pending(self, indices: Sequence[int]) -> None:
        """Set items back to 'pending' (their status chunk goes, damaged or not),
        so that the next conversion redoes them; what ``ahdi verify --repair`` does."""
        self._require_writable("mark items pending")
        for i in indices:
            # 'pending' is the fill value: writing it removes the chunk file
            # without reading it, so a damaged one goes too.
            self._array("status")[self._index(i)] = "pending"

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
        for i in rows:
            self._require(rep, i, [(i, 0, 0, 0)])
        return self._rows(rep, indices)

    def mdv(self, index: int) -> np.ndarray:
        """(mdv_count, S, S, 3) uint8 level-1 window images of one item."""
        self._rep("mdv")
        i = self._index(index)
        count = int(self._item_value("mdv_count", i))
        self._require("mdv", i, [(i, k, 0, 0, 0) for k in range(count)])
        return self._read("mdv", (i, slice(0, count)), i)

    def mdv_counts(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N,) int32 number of level-1 window images of ``indices`` (all by default).

        Reads only the counts, not the stacks (0 for items not done yet).
        """
        self._rep("mdv")
        rows = range(self.n_items) if indices is None else [self._index(i) for i in indices]
        for i in rows:
            self._require("mdv_count", i, [(i,)])
        return self._rows("mdv_count", indices)

    def n_frames(self, index: int) -> int:
        return int(self._item_value("n_frames", index))

    def eps(self, index: int) -> float:
        """Activity threshold the item's segmentation used (NaN before it is done)."""
        return float(self._item_value("eps", index))

    def motion(self, index: int) -> np.ndarray:
        """(n_frames,) float32 motion activity of one item."""
        i = self._index(index)
        t = self.n_frames(i)
        self._require("motion", i, [(i, k) for k in range(-(-t // MOTION_CHUNK))])
        return self._read("motion", (i, slice(0, t)), i)

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
            self._writer(name)[...] = values
        return not same

    # -- lock ----------------------------------------------------------------
    def lock(self, *,
             stale_after: float = 600.0) -> contextlib.AbstractContextManager[StoreLock]:
        """Hold ``<path>.lock`` (:func:`lock_path`) while writing, so two writers keep
        apart: :func:`ahdi.pipeline.lock.hold_lock` (a live holder is refused by
        name; a stale lock is taken over, the yielded ``StoreLock.note`` says so)."""
        self._require_writable("lock it")
        return hold_lock(lock_path(self._path), stale_after=stale_after, what=self._path)
