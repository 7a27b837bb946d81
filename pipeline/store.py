"""The AHDI Zarr v3 store: one folder holding every image of a conversion.

The layout (docs/store.md) is plain Zarr v3, so ``zarr``, ``xarray.open_zarr``
and ``dask.array.from_zarr`` read it without this module. This module lays a
store out before any video is converted, lets many Dask tasks (threads or
processes, possibly on other machines sharing the file system) each write
their own item, and reads it back.

Concurrency rule: after the layout, nothing rewrites a ``zarr.json``; a task
writes only chunks of its own item, and every array a task writes has chunk
size 1 along the item axis, so two tasks never touch the same file. Zarr's
local store writes each chunk to a temporary file and renames it into place,
so a reader never sees half a chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from ahdi.kernels.params import AhdiParams

from .errors import StoreError

__all__ = [
    "StoreError",
    "Store",
    "StoreLock",
    "create_store",
    "open_store",
    "REPRESENTATIONS",
    "IMAGE_REPRESENTATIONS",
    "MOTION_CAPACITY",
    "STORE_VERSION",
    "LOCK_NAME",
    "segments_width",
]

log = logging.getLogger(__name__)

STORE_VERSION = 1
REPRESENTATIONS = ("ahdi", "mdv", "sdi", "mean", "flow")
IMAGE_REPRESENTATIONS = ("ahdi", "sdi", "mean", "flow")
MOTION_CAPACITY = 2 ** 22          # most frames a video may have (~38 h at 30 fps)
MOTION_CHUNK = 4096
LOCK_NAME = ".ahdi.lock"
STATUSES = ("pending", "done", "failed")

# Fixed codec settings: Zstandard without checksum is deterministic for a
# given input, so the same result written twice gives the same chunk bytes.
_COMPRESSORS = (ZstdCodec(level=3, checksum=False),)
_OVERWRITE_HINT = "use --overwrite to replace it, or another output path"




# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def segments_width(params: AhdiParams) -> int:
    """Columns of the ``segments`` array: most boundaries an item can have.

    ``n_segments + 1`` for adaptive segmentation; for fixed windows the
    boundaries are the window starts plus T, so ``max_windows + 1``.
    """
    if params.segmentation == "adaptive":
        return params.n_segments + 1
    return params.max_windows + 1


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str | None]:
    """Versions of the libraries that shape the stored bytes."""
    import importlib
    import importlib.metadata

    out: dict[str, str | None] = {}
    try:
        out["ahdi"] = importlib.metadata.version("ahdi")
    except importlib.metadata.PackageNotFoundError:
        out["ahdi"] = None
    for key, module in (("numpy", "numpy"), ("opencv", "cv2"), ("numba", "numba"),
                        ("zarr", "zarr"), ("dask", "dask")):
        try:
            out[key] = str(importlib.import_module(module).__version__)
        except Exception:  # not installed or broken: record the absence
            out[key] = None
    return out


def _canonical_representations(representations: Sequence[str]) -> list[str]:
    if isinstance(representations, str):
        representations = [representations]
    asked = list(representations)
    unknown = sorted(set(asked) - set(REPRESENTATIONS))
    if unknown:
        raise ValueError(f"unknown representation(s): {', '.join(unknown)}; "
                         f"known: {', '.join(REPRESENTATIONS)}")
    if not asked:
        raise ValueError("representations must name at least one of "
                         f"{', '.join(REPRESENTATIONS)}")
    return [r for r in REPRESENTATIONS if r in asked]


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


def _is_ahdi_store(path: str) -> bool:
    attrs = _read_root_attrs(path)
    return attrs is not None and "ahdi_store_version" in attrs


def _not_a_store(path: str) -> StoreError:
    return StoreError(f"{path} exists and is not an ahdi store "
                      f"(no zarr.json with an 'ahdi_store_version' attribute); "
                      f"choose another output path")


def _label_kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None and not (isinstance(v, str) and v == "")]
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in present)
    return "number" if numeric else "text"


def _labels_of(items: Sequence[Any]) -> tuple[list[str], dict[str, str], dict[str, np.ndarray]]:
    names: list[str] = []
    for item in items:
        for name in (getattr(item, "labels", None) or {}):
            if name not in names:
                names.append(str(name))
    kinds: dict[str, str] = {}
    columns: dict[str, np.ndarray] = {}
    for name in names:
        raw = [(getattr(item, "labels", None) or {}).get(name) for item in items]
        kinds[name] = _label_kind(raw)
        if kinds[name] == "number":
            columns[name] = np.array([math.nan if v is None else float(v) for v in raw],
                                     dtype=np.float64)
        else:
            columns[name] = np.array(["" if v is None else str(v) for v in raw], dtype=object)
    return names, kinds, columns


def _strings(values: Any) -> np.ndarray:
    """A read string array as an object array of Python ``str``."""
    return np.asarray(values).astype(object)


# ----------------------------------------------------------------------------
# creation
# ----------------------------------------------------------------------------
def _create_array(group: zarr.Group, name: str, *, shape: tuple[int, ...],
                  chunks: tuple[int, ...], dtype: Any, fill_value: Any,
                  dims: Sequence[str], description: str) -> zarr.Array:
    return group.create_array(
        name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill_value,
        compressors=_COMPRESSORS, dimension_names=list(dims),
        attributes={"description": description})


def _layout(path: str, items: Sequence[Any], params: AhdiParams,
            representations: list[str], dataset: str, source: str) -> None:
    n = len(items)
    s = params.size
    cap = params.mdv_capacity
    width = segments_width(params)
    names, kinds, columns = _labels_of(items)
    attrs = {
        "ahdi_store_version": STORE_VERSION,
        "params": params.to_dict(),
        "param_hash": params.param_hash(),
        "versions": _versions(),
        "dataset": str(dataset),
        "source": str(source),
        "representations": list(representations),
        "labels": names,
        "label_kinds": kinds,
        "created": _now_iso(),
    }
    group = zarr.open_group(store=path, mode="w-", zarr_format=3, attributes=attrs)
    every = (n,)
    img = ("item", "y", "x", "channel")

    for rep in representations:
        if rep == "mdv":
            _create_array(group, "mdv", shape=(n, cap, s, s, 3), chunks=(1, 1, s, s, 3),
                          dtype="uint8", fill_value=0,
                          dims=("item", "window", "y", "x", "channel"),
                          description="level-1 window images; slots >= mdv_count are empty")
            _create_array(group, "mdv_count", shape=every, chunks=(1,), dtype="int32",
                          fill_value=0, dims=("item",),
                          description="number of level-1 window images of the item")
        else:
            _create_array(group, rep, shape=(n, s, s, 3), chunks=(1, s, s, 3),
                          dtype="uint8", fill_value=0, dims=img,
                          description=f"{rep} image, RGB uint8")

    text = [("video_id", [it.video_id for it in items], "video identifier"),
            ("subject", [it.subject for it in items], "subject identifier"),
            ("source", [it.source.describe() for it in items], "where the video was read from")]
    for name, values, description in text:
        arr = _create_array(group, name, shape=every, chunks=every, dtype=str,
                            fill_value="", dims=("item",), description=description)
        arr[:] = np.array(["" if v is None else str(v) for v in values], dtype=object)
    for name in names:
        if kinds[name] == "number":
            arr = _create_array(group, f"label_{name}", shape=every, chunks=every,
                                dtype="float64", fill_value=math.nan, dims=("item",),
                                description=f"label {name!r} (NaN = missing)")
        else:
            arr = _create_array(group, f"label_{name}", shape=every, chunks=every,
                                dtype=str, fill_value="", dims=("item",),
                                description=f"label {name!r} ('' = missing)")
        arr[:] = columns[name]

    # Status is 'pending' by fill value: nothing to write until an item ends.
    _create_array(group, "status", shape=every, chunks=(1,), dtype=str,
                  fill_value="pending", dims=("item",),
                  description="pending | done | failed; written last by each task")
    _create_array(group, "error", shape=every, chunks=(1,), dtype=str, fill_value="",
                  dims=("item",), description="why the item failed ('' when it did not)")
    _create_array(group, "warning", shape=every, chunks=(1,), dtype=str, fill_value="",
                  dims=("item",), description="reader warnings, one per line")
    _create_array(group, "n_frames", shape=every, chunks=(1,), dtype="int32",
                  fill_value=0, dims=("item",), description="frames T of the video")
    _create_array(group, "fps", shape=every, chunks=(1,), dtype="float32",
                  fill_value=math.nan, dims=("item",), description="frames per second")
    _create_array(group, "eps", shape=every, chunks=(1,), dtype="float32",
                  fill_value=math.nan, dims=("item",),
                  description="activity threshold used (px/frame)")
    _create_array(group, "motion", shape=(n, MOTION_CAPACITY), chunks=(1, MOTION_CHUNK),
                  dtype="float32", fill_value=math.nan, dims=("item", "frame"),
                  description="motion activity MA_t; row i holds n_frames[i] values, NaN after")
    _create_array(group, "segments", shape=(n, width), chunks=(1, width), dtype="int32",
                  fill_value=-1, dims=("item", "boundary"),
                  description="segment boundaries, 0-based, first 0, last T; -1 after")
    _create_array(group, "windows", shape=(n, cap, 2), chunks=(1, cap, 2), dtype="int32",
                  fill_value=-1, dims=("item", "window", "edge"),
                  description="level-1 windows [start, stop) in frames; -1 rows unused")

    # Array metadata never changes after this point, so consolidated metadata
    # stays true; it lets xarray open the store with one read and no warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(path)


def _mismatch(path: str, attrs: dict[str, Any], params: AhdiParams,
              representations: list[str], video_ids: list[str],
              stored_ids: list[str]) -> str | None:
    """Say how an existing store differs from what was asked, or None."""
    if attrs.get("ahdi_store_version") != STORE_VERSION:
        return (f"store {path} has layout version {attrs.get('ahdi_store_version')!r}, "
                f"this ahdi writes version {STORE_VERSION}; {_OVERWRITE_HINT}")
    if attrs.get("param_hash") != params.param_hash():
        old = attrs.get("params") or {}
        new = params.to_dict()
        keys = [k for k in new if old.get(k, None) != new[k]]
        keys += [k for k in old if k not in new]
        if keys:
            was = ", ".join(f"{k}={old.get(k)!r}" for k in keys)
            now = ", ".join(f"{k}={new.get(k)!r}" for k in keys)
            return f"store {path} was made with {was}, you asked {now}; {_OVERWRITE_HINT}"
        return (f"store {path} was made with parameter hash {attrs.get('param_hash')}, "
                f"you asked {params.param_hash()}; {_OVERWRITE_HINT}")
    stored_reps = list(attrs.get("representations") or [])
    if stored_reps != representations:
        return (f"store {path} holds representations {', '.join(stored_reps)}, "
                f"you asked {', '.join(representations)}; {_OVERWRITE_HINT}")
    if len(stored_ids) != len(video_ids):
        return (f"store {path} holds {len(stored_ids)} items, you asked "
                f"{len(video_ids)}; {_OVERWRITE_HINT}")
    for i, (a, b) in enumerate(zip(stored_ids, video_ids)):
        if a != b:
            return (f"store {path} holds other items (item {i} is {a!r} there, "
                    f"you asked {b!r}); {_OVERWRITE_HINT}")
    return None


def _refresh_item_metadata(store: "Store", items: Sequence[Any]) -> str | None:
    """On resume, bring subjects, label values and sources up to date.

    They are not computed, so an edited labels CSV or a moved dataset root
    must not leave the old values in a store that is otherwise the same.
    Label columns that appear, vanish or change kind cannot be rewritten in
    place: that returns the reason to refuse.
    """
    names, kinds, columns = _labels_of(items)
    if names != store.label_names or kinds != store.label_kinds:
        have = ", ".join(f"{n} ({store.label_kinds.get(n)})" for n in store.label_names)
        want = ", ".join(f"{n} ({kinds[n]})" for n in names)
        return (f"store {store.path} holds labels {have or '(none)'}, you asked "
                f"{want or '(none)'}; {_OVERWRITE_HINT}")
    fresh = {"subject": np.array([str(it.subject) for it in items], dtype=object),
             "source": np.array([it.source.describe() for it in items], dtype=object)}
    fresh.update({f"label_{n}": columns[n] for n in names})
    for name, values in fresh.items():
        array = store._array(name)
        current = np.asarray(array[...])
        if values.dtype == object:
            same = [str(v) for v in current] == [str(v) for v in values]
        else:
            same = np.array_equal(current, values, equal_nan=True)
        if not same:
            array[...] = values
    return None


def create_store(path: str | os.PathLike, items: Sequence[Any], params: AhdiParams,
                 representations: Sequence[str], *, dataset: str, source: str,
                 overwrite: bool = False) -> "Store":
    """Lay out a new store, or reopen a matching one to resume.

    Parameters
    ----------
    path : str or PathLike
        Folder of the store (created; an empty existing folder is fine).
    items : sequence
        Objects with ``.video_id``, ``.subject``, ``.labels`` (dict name ->
        number or str) and ``.source.describe()``.
    params : AhdiParams
        Parameters of the conversion.
    representations : sequence of str
        Any of ``'ahdi', 'mdv', 'sdi', 'mean', 'flow'``.
    dataset, source : str
        Recorded in the root attributes.
    overwrite : bool
        Replace an existing ahdi store made with other parameters or items.
        A path that is not an ahdi store is never removed.

    Returns
    -------
    Store
        Opened with ``mode='r+'``. Every array and attribute exists and every
        item is 'pending' (on resume, existing statuses are kept, and the
        items' subjects, label values and sources are updated: they are not
        computed, and an edited labels CSV must take effect).

    Raises
    ------
    StoreError
        The path is not an ahdi store, or is one made differently (without
        ``overwrite``), or is locked by a running conversion.
    ValueError
        Unknown representation or no items.
    """
    path = os.fspath(path)
    reps = _canonical_representations(representations)
    if not isinstance(params, AhdiParams):
        raise TypeError(f"params must be an AhdiParams, got {type(params).__name__}")
    items = list(items)
    if not items:
        raise ValueError(f"no items to store in {path}")
    video_ids = [str(it.video_id) for it in items]
    if len(set(video_ids)) != len(video_ids):
        dup = sorted({v for v in video_ids if video_ids.count(v) > 1})[:5]
        raise ValueError(f"video ids must be unique; repeated: {', '.join(dup)}")

    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise _not_a_store(path)
        if _is_ahdi_store(path):
            existing = open_store(path, mode="r+")
            why = _mismatch(path, existing.attrs, params, reps, video_ids,
                            [str(v) for v in existing.video_ids()])
            if why is None:
                why = _refresh_item_metadata(existing, items)
            if why is None:
                return existing
            if not overwrite:
                raise StoreError(why)
            _refuse_if_locked(path)
            shutil.rmtree(path)
        elif os.listdir(path):
            raise _not_a_store(path)
    try:
        _layout(path, items, params, reps, dataset, source)
    except zarr.errors.ContainsGroupError as exc:  # another process raced us
        raise StoreError(f"store {path} was created by someone else meanwhile; "
                         f"run again to resume it") from exc
    return Store(path, mode="r+")


def open_store(path: str | os.PathLike, mode: str = "r") -> "Store":
    """Open an existing ahdi store; ``mode`` is 'r' (read) or 'r+' (write)."""
    path = os.fspath(path)
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not os.path.lexists(path):
        raise StoreError(f"no store at {path}: the path does not exist")
    if not _is_ahdi_store(path):
        raise _not_a_store(path)
    store = Store(path, mode=mode)
    version = store.attrs.get("ahdi_store_version")
    if version != STORE_VERSION:
        raise StoreError(f"store {path} has layout version {version!r}; this ahdi "
                         f"reads version {STORE_VERSION}")
    return store


# ----------------------------------------------------------------------------
# lock
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StoreLock:
    """The lock a ``Store.lock()`` block holds; ``note`` says if it took one over."""

    path: str
    host: str
    pid: int
    started: str
    note: str | None = None


_UNREADABLE_GRACE_S = 10.0


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


def _held_message(path: str, lock_path: str, holder: dict | None, stale_after: float) -> str:
    if holder is None:
        return (f"store {path} is being locked by another process right now "
                f"({lock_path} is still being written); try again in a few seconds")
    same_host = holder.get("host") == socket.gethostname()
    gone = (f"if that process is gone, remove {lock_path}" if same_host else
            f"if that process is gone, remove {lock_path} or wait {stale_after:.0f} s "
            f"for the lock to go stale")
    return (f"store {path} is locked by pid {holder.get('pid')} on host "
            f"{holder.get('host')} (since {holder.get('started')}): another ahdi "
            f"process is writing it. Wait for it to finish; {gone}")


def _refuse_if_locked(path: str, stale_after: float = 600.0) -> None:
    lock_path = os.path.join(path, LOCK_NAME)
    if not os.path.lexists(lock_path):
        return
    _raw, holder, stale = _judge_lock(lock_path, stale_after)
    if stale is None:
        raise StoreError(_held_message(path, lock_path, holder, stale_after))


# ----------------------------------------------------------------------------
# the store
# ----------------------------------------------------------------------------
class Store:
    """An opened ahdi store.

    Picklable: it pickles as its path and mode and reopens the Zarr group
    lazily where it is unpickled (a Dask worker process).

    Use :func:`create_store` or :func:`open_store` rather than the constructor.
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
        s, cap, width = p.size, p.mdv_capacity, segments_width(p)
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
        arr = self._array(rep)
        if indices is None:
            return np.asarray(arr[:])
        idx = np.asarray([self._index(i) for i in indices], dtype=np.int64)
        if idx.size == 0:
            return np.zeros((0,) + arr.shape[1:], dtype=np.uint8)
        return np.asarray(arr.oindex[idx])

    def mdv(self, index: int) -> np.ndarray:
        """(mdv_count, S, S, 3) uint8 level-1 window images of one item."""
        self._rep("mdv")
        i = self._index(index)
        count = int(self._array("mdv_count")[i])
        return np.asarray(self._array("mdv")[i, :count])

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

    # -- lock ----------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, *, stale_after: float = 600.0) -> Iterator[StoreLock]:
        """Hold ``<path>/.ahdi.lock`` while writing, so two writers keep apart.

        The lock file is created atomically and holds ``{host, pid, started}``.
        A lock held by a live process is refused with a :class:`StoreError`
        naming it. A lock whose process has ended (same host), or that has
        not been refreshed for ``stale_after`` seconds (another host; the
        holder refreshes its file every ``stale_after / 4`` s), is taken over
        and the yielded :class:`StoreLock` says so in ``note``.
        """
        self._require_writable("lock it")
        lock_path = os.path.join(self._path, LOCK_NAME)
        info = {"host": socket.gethostname(), "pid": os.getpid(), "started": _now_iso()}
        mine = json.dumps(info)
        notes: list[str] = []
        for _attempt in range(5):
            try:
                fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raw, holder, stale = _judge_lock(lock_path, stale_after)
                if stale is None:
                    raise StoreError(_held_message(self._path, lock_path, holder,
                                                   stale_after)) from None
                # Remove it only if it is still the lock we judged.
                try:
                    with open(lock_path, encoding="utf-8") as f:
                        if f.read() == raw:
                            os.unlink(lock_path)
                except FileNotFoundError:
                    pass
                notes.append(f"took over the lock of store {self._path}: {stale}")
                log.warning(notes[-1])
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(mine)
                f.flush()
                os.fsync(f.fileno())
            break
        else:
            raise StoreError(f"could not take the lock {lock_path}: other processes keep "
                             f"taking it; try again")

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
        try:
            yield StoreLock(path=lock_path, note="; ".join(notes) or None, **info)
        finally:
            stop.set()
            beat.join()
            try:
                with open(lock_path, encoding="utf-8") as f:
                    still_mine = f.read() == mine
                if still_mine:
                    os.unlink(lock_path)
            except FileNotFoundError:
                pass
