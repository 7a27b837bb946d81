"""The AHDI Zarr v3 store: one folder holding every image of a conversion.

The layout (docs/store.md) is plain Zarr v3, so ``zarr``, ``xarray.open_zarr``
and ``dask.array.from_zarr`` read it without this module. This module opens
a store and is its read/write API: many Dask tasks (threads or processes,
possibly on other machines sharing the file system) each write their own
item, and readers read it back. Laying a store out is
:mod:`ahdi.pipeline.layout`; the writer lock is :mod:`ahdi.pipeline.lock`.

Concurrency rule: after the layout, nothing rewrites a ``zarr.json``; a task
writes only chunks of its own item, and every array a task writes has chunk
size 1 along the item axis, so two tasks never touch the same file. Zarr's
local store writes each chunk to a temporary file and renames it into place,
so a reader never sees half a chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ahdi.kernels.compute import REPRESENTATIONS
from ahdi.kernels.params import AhdiParams

from .errors import StoreError
from .lock import StoreLock, hold_lock

__all__ = [
    "Store", "open_store", "is_ahdi_store", "not_a_store_error", "IMAGE_REPRESENTATIONS",
    "MOTION_CAPACITY", "MOTION_CHUNK", "STORE_VERSION", "LOCK_NAME", "STATUSES",
]

STORE_VERSION = 1
# One (S, S, 3) image per item: every representation but the mdv stack.
IMAGE_REPRESENTATIONS = tuple(r for r in REPRESENTATIONS if r != "mdv")
MOTION_CAPACITY = 2 ** 22          # most frames a video may have (~38 h at 30 fps)
MOTION_CHUNK = 4096
LOCK_NAME = ".ahdi.lock"
STATUSES = ("pending", "done", "failed")
# Columns written at layout from the item listing; a resume may rewrite them
# (they are not computed), nothing else may.
_LISTING_COLUMNS = ("subject", "source")


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _read_root_attrs(path: str) -> dict[str, Any] | None:
    """Root attributes of the Zarr group at ``path``, or None if it is not one."""
    meta = os.path.join(path, "zarr.json")
    try:
        with open(meta, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("node_type") != "group":
        return None
    attrs = doc.get("attributes")
    return attrs if isinstance(attrs, dict) else None


def is_ahdi_store(path: str) -> bool:
    """True when ``path`` holds a Zarr group with an ``ahdi_store_version`` attribute."""
    attrs = _read_root_attrs(path)
    return attrs is not None and "ahdi_store_version" in attrs


def not_a_store_error(path: str) -> StoreError:
    """The error for a path that exists and is not an ahdi store."""
    return StoreError(f"{path} exists and is not an ahdi store "
                      f"(no zarr.json with an 'ahdi_store_version' attribute); "
                      f"choose another output path")


def _strings(values: Any) -> np.ndarray:
    """A read string array as an object array of Python ``str``."""
    return np.asarray(values).astype(object)


def open_store(path: str | os.PathLike, mode: str = "r") -> "Store":
    """Open an existing ahdi store; ``mode`` is 'r' (read) or 'r+' (write)."""
    path = os.fspath(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not os.path.lexists(path):
        raise StoreError(f"no store at {path}: the path does not exist")
    if not is_ahdi_store(path):
        raise not_a_store_error(path)
    store = Store(path, mode=mode)
    version = store.attrs.get("ahdi_store_version")
    if version != STORE_VERSION:
        raise StoreError(f"store {path} has layout version {version!r}; this ahdi "
                         f"reads version {STORE_VERSION}")
    return store


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

    def _rows(self, name: str, indices: Sequence[int] | None) -> np.ndarray:
        """Rows ``indices`` (all when None) of array ``name``, in that order."""
        arr = self._array(name)
        if indices is None:
            return np.asarray(arr[:])
        idx = np.asarray([self._index(i) for i in indices], dtype=np.int64)
        if idx.size == 0:
            return np.zeros((0,) + arr.shape[1:], dtype=arr.dtype)
        return np.asarray(arr.oindex[idx])

    def _rep(self, rep: str) -> None:
        if rep not in self.representations:
            raise StoreError(f"store {self._path} holds no {rep!r} "
                             f"(it holds {', '.join(self.representations)})")

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
        return _strings(self._array("video_id")[:])

    def subjects(self) -> np.ndarray:
        return _strings(self._array("subject")[:])

    def sources(self) -> np.ndarray:
        return _strings(self._array("source")[:])

    def labels(self) -> dict[str, np.ndarray]:
        """Label name -> array (float64 with NaN, or str with '' for missing)."""
        out = {}
        for name in self.label_names:
            values = self._array(f"label_{name}")[:]
            out[name] = (np.asarray(values, dtype=np.float64)
                         if self.label_kinds.get(name) == "number" else _strings(values))
        return out

    def statuses(self) -> np.ndarray:
        return _strings(self._array("status")[:])

    def errors(self) -> np.ndarray:
        return _strings(self._array("error")[:])

    def warnings(self) -> np.ndarray:
        return _strings(self._array("warning")[:])

    def pending_indices(self) -> list[int]:
        """Items not done yet: pending, or failed (a resume retries them)."""
        return [int(i) for i in np.flatnonzero(self.statuses() != "done")]

    def counts(self) -> dict[str, int]:
        status = self.statuses()
        return {s: int(np.count_nonzero(status == s)) for s in STATUSES}

    # -- writing -------------------------------------------------------------
    def write_item(self, index: int, result: Any, *, fps: float | None,
                   warnings: Sequence[str] = ()) -> None:
        """Write every array of one item, then its status 'done' last.

        ``result`` has fields ``ahdi, sdi, mean, flow`` ((S, S, 3) uint8 or
        None), ``mdv`` ((M, S, S, 3) uint8 or None), ``motion`` ((T,)),
        ``eps``, ``bounds`` (1-D int or None), ``windows`` ((M, 2) int) and
        ``n_frames`` (T). Everything is checked before anything is written.
        """
        self._require_writable("write items")
        i = self._index(index)
        p = self.params
        # the layout sized segments for these parameters (layout.segments_width)
        s, cap, width = p.size, p.mdv_capacity, int(self._array("segments").shape[1])
        who = f"item {i} of store {self._path}"

        t = int(result.n_frames)
        if not 0 <= t <= MOTION_CAPACITY:
            raise StoreError(f"{who}: n_frames={t} is outside 0..{MOTION_CAPACITY}")
        motion = np.asarray(result.motion, dtype=np.float64)
        if motion.shape != (t,):
            raise StoreError(f"{who}: motion has shape {motion.shape}, expected ({t},)")
        windows = np.asarray(result.windows)
        if windows.size == 0:
            windows = windows.reshape(0, 2)
        if windows.ndim != 2 or windows.shape[1] != 2:
            raise StoreError(f"{who}: windows has shape {windows.shape}, expected (M, 2)")
        m = windows.shape[0]
        if m > cap:
            raise StoreError(f"{who}: {m} level-1 windows, but the store holds at most "
                             f"{cap} per item (mdv capacity of these parameters)")
        bounds = None
        if result.bounds is not None:
            bounds = np.asarray(result.bounds).reshape(-1)
            if bounds.size > width:
                raise StoreError(f"{who}: {bounds.size} segment boundaries, but the store "
                                 f"holds at most {width}")

        images: dict[str, np.ndarray] = {}
        for rep in self.representations:
            value = getattr(result, rep, None)
            if value is None:
                raise StoreError(f"{who}: the result has no {rep!r}, which the store holds")
            value = np.asarray(value)
            want = (m, s, s, 3) if rep == "mdv" else (s, s, 3)
            if value.shape != want or value.dtype != np.uint8:
                raise StoreError(f"{who}: {rep} is {value.dtype} {value.shape}, "
                                 f"expected uint8 {want}")
            images[rep] = value

        # Rows written whole (padded with the fill value) so a rewrite leaves
        # nothing of an earlier attempt and never needs to read a chunk first.
        pad_t = -(-t // MOTION_CHUNK) * MOTION_CHUNK
        motion_row = np.full(pad_t, np.nan, dtype=np.float32)
        motion_row[:t] = motion
        seg_row = np.full(width, -1, dtype=np.int32)
        if bounds is not None:
            seg_row[:bounds.size] = bounds
        win_rows = np.full((cap, 2), -1, dtype=np.int32)
        win_rows[:m] = windows

        if pad_t:
            self._array("motion")[i, :pad_t] = motion_row
        self._array("segments")[i] = seg_row
        self._array("windows")[i] = win_rows
        for rep, value in images.items():
            if rep == "mdv":
                stack = np.zeros((cap, s, s, 3), dtype=np.uint8)
                stack[:m] = value
                self._array("mdv")[i] = stack
                self._array("mdv_count")[i] = np.int32(m)
            else:
                self._array(rep)[i] = value
        self._array("n_frames")[i] = np.int32(t)
        self._array("fps")[i] = np.float32(np.nan if fps is None else fps)
        self._array("eps")[i] = np.float32(np.nan if result.eps is None else result.eps)
        self._array("warning")[i] = "\n".join(str(w) for w in warnings)
        self._array("error")[i] = ""
        self._array("status")[i] = "done"          # last: the item counts as done

    def write_failure(self, index: int, message: str) -> None:
        """Record why an item failed: its error, then status 'failed'."""
        self._require_writable("write items")
        i = self._index(index)
        self._array("error")[i] = str(message) or "failed"
        self._array("status")[i] = "failed"

    # -- reading -------------------------------------------------------------
    def image(self, rep: str, index: int) -> np.ndarray:
        """One (S, S, 3) uint8 image of ``rep`` ('ahdi', 'sdi', 'mean', 'flow')."""
        if rep == "mdv":
            raise StoreError("mdv is a stack per item; read it with Store.mdv(index)")
        self._rep(rep)
        return np.asarray(self._array(rep)[self._index(index)])

    def images(self, rep: str, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 images of ``rep`` for ``indices`` (all by default)."""
        if rep == "mdv":
            raise StoreError("mdv is a stack per item; read it with Store.mdv(index)")
        self._rep(rep)
        return self._rows(rep, indices)

    def mdv(self, index: int) -> np.ndarray:
        """(mdv_count, S, S, 3) uint8 level-1 window images of one item."""
        self._rep("mdv")
        i = self._index(index)
        count = int(self._array("mdv_count")[i])
        return np.asarray(self._array("mdv")[i, :count])

    def mdv_counts(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N,) int32 number of level-1 window images of ``indices`` (all by default).

        Reads only the counts, not the stacks (0 for items not done yet).
        """
        self._rep("mdv")
        return self._rows("mdv_count", indices)

    def n_frames(self, index: int) -> int:
        return int(self._array("n_frames")[self._index(index)])

    def eps(self, index: int) -> float:
        """Activity threshold the item's segmentation used (NaN before it is done)."""
        return float(self._array("eps")[self._index(index)])

    def motion(self, index: int) -> np.ndarray:
        """(n_frames,) float32 motion activity of one item."""
        i = self._index(index)
        t = int(self._array("n_frames")[i])
        return np.asarray(self._array("motion")[i, :t])

    def windows(self, index: int) -> np.ndarray:
        """(M, 2) int32 level-1 windows ``[start, stop)`` of one item."""
        rows = np.asarray(self._array("windows")[self._index(index)])
        return rows[rows[:, 0] >= 0]

    def segments(self, index: int) -> np.ndarray:
        """Segment boundaries of one item (empty when none were stored)."""
        row = np.asarray(self._array("segments")[self._index(index)])
        return row[row >= 0]

    def item_table(self) -> list[dict[str, Any]]:
        """One dict per item: index, video_id, subject, status, error, warning,
        n_frames, fps and every label (under its name, or ``label_<name>`` if
        the name is taken)."""
        columns: dict[str, np.ndarray] = {
            "video_id": self.video_ids(), "subject": self.subjects(),
            "status": self.statuses(), "error": self.errors(),
            "warning": self.warnings(),
            "n_frames": np.asarray(self._array("n_frames")[:]),
            "fps": np.asarray(self._array("fps")[:]),
        }
        label_cols = {}
        for name, values in self.labels().items():
            key = name if name not in columns and name != "index" else f"label_{name}"
            label_cols[key] = values
        rows = []
        for i in range(self.n_items):
            row: dict[str, Any] = {"index": i}
            for key, values in columns.items():
                row[key] = values[i].item() if isinstance(values[i], np.generic) else values[i]
            for key, values in label_cols.items():
                v = values[i]
                row[key] = v.item() if isinstance(v, np.generic) else v
            rows.append(row)
        return rows

    # -- listing columns -----------------------------------------------------
    def rewrite_column(self, name: str, values: Sequence[Any]) -> bool:
        """Replace a column written from the item listing if it differs; True if it did.

        Only ``subject``, ``source`` and ``label_<name>``: they are not
        computed, so a resume brings them up to date (an edited labels CSV, a
        moved dataset root). ``values`` holds one str (or float, for a numeric
        label) per item. An unchanged column is not written.
        """
        self._require_writable("rewrite its columns")
        if name not in _LISTING_COLUMNS and not name.startswith("label_"):
            raise ValueError(f"{name!r} is not a column of the item listing; only "
                             f"{', '.join(_LISTING_COLUMNS)} and label_<name> can be rewritten")
        array = self._array(name)
        values = np.asarray(values)
        if values.shape != array.shape:
            raise ValueError(f"{name}: {values.size} values for the {array.shape[0]} "
                             f"items of store {self._path}")
        current = np.asarray(array[...])
        if values.dtype.kind in "OSU":
            values = values.astype(object)
            same = [str(v) for v in current] == [str(v) for v in values]
        else:
            same = np.array_equal(current, values, equal_nan=True)
        if not same:
            array[...] = values
        return not same

    # -- lock ----------------------------------------------------------------
    def lock(self, *,
             stale_after: float = 600.0) -> contextlib.AbstractContextManager[StoreLock]:
        """Hold ``<path>/.ahdi.lock`` while writing, so two writers keep apart.

        The lock file is created atomically and holds ``{host, pid, started}``.
        A lock held by a live process is refused with a :class:`StoreError`
        naming it. A lock whose process has ended (same host), or that has
        not been refreshed for ``stale_after`` seconds (another host; the
        holder refreshes its file every ``stale_after / 4`` s), is taken over
        and the yielded :class:`~ahdi.pipeline.lock.StoreLock` says so in
        ``note``. See :func:`ahdi.pipeline.lock.hold_lock`.
        """
        self._require_writable("lock it")
        return hold_lock(os.path.join(self._path, LOCK_NAME), stale_after=stale_after,
                         what=self._path)
