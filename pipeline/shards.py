"""Writing a version-3 store: one writer per stored object, nothing computed lost.

Every array written per item stores G items per object (a shard, or a
plain chunk of G rows; ``items_per_shard`` in the root attributes), and a
Zarr write of part of an object reads it and rewrites it whole: two tasks
writing items of one shard at once lose one of them. So items reach the
store in two steps:

* **staging**: the task that computed an item writes one small object,
  ``.staging/<shard>/<index>.npz`` (its checked rows, or its failure),
  atomically (:func:`stage_item`, :func:`stage_failure`);
* **merging**: one task per shard, which runs after the shard's staging
  tasks, reads the staged items, keeps what the shard already holds for
  its other done items, writes every array's object once, ``status``
  last, then deletes the staged objects (:func:`merge_staged`).

A run stopped between the two loses nothing: the next one merges the staged
items without computing them again (:func:`staged_items`). In one process
a lock per shard keeps writers apart (the threaded scheduler, the driver
finishing a stopped run, :meth:`Store.write_item`); across processes the
graph gives each shard one merge task.

Per-frame arrays (``motion``, the face track; :data:`~ahdi.pipeline.schema.FRAME_ARRAYS`)
are written ``FRAME_CAPACITY`` frames wide; :mod:`ahdi.pipeline.resume`
fits them to the longest stored video after a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import zarr

from .chunks import DamagedIndex, Presence
from .schema import FACE_ARRAYS, FRAME_ARRAYS, FRAME_CHUNK, ItemRows
from .store_files import (consolidate, delete_objects, get_objects, list_objects, open_root,
                          put_object, remove_folder_if_empty)

__all__ = ["Staged", "STAGING", "stage_item", "stage_failure", "staged_items",
           "merge_staged", "write_shard", "shard_lock", "required_chunks", "frame_names",
           "remove_staged", "set_frame_width"]

log = logging.getLogger(__name__)

STAGING = ".staging"
_SCALARS = ("n_frames", "fps", "eps", "warning", "error")


# ----------------------------------------------------------------------------
# an item on its way into the store
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Staged:
    """One item's outcome: its rows (None when it failed), fps, warnings, error."""

    rows: ItemRows | None
    fps: float = math.nan
    warning: str = ""
    error: str = ""

    @property
    def status(self) -> str:
        return "failed" if self.rows is None else "done"


def _text(value: str) -> np.ndarray:
    return np.frombuffer(value.encode("utf-8"), dtype=np.uint8)


def encode_staged(item: Staged) -> bytes:
    """One staged item as NumPy's ``.npz`` (a zip whose CRC-32 catches damage)."""
    fields = {"fps": np.float64(item.fps), "warning": _text(item.warning),
              "error": _text(item.error)}
    rows = item.rows
    if rows is not None:
        fields.update(n_frames=np.int64(rows.n_frames), eps=np.float64(rows.eps),
                      segments=rows.segments, windows=rows.windows,
                      face_found_share=np.float64(rows.face_found_share),
                      face_reference=np.int64(rows.face_reference))
        fields.update({f"frame_{k}": v for k, v in rows.frames.items()})
        fields.update({f"image_{k}": v for k, v in rows.images.items()})
    buf = io.BytesIO()
    np.savez(buf, **fields)
    return buf.getvalue()


def decode_staged(data: bytes) -> Staged | None:
    """A staged item back, or None for an object that cannot be read."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
        fps, warning = float(fields["fps"]), fields["warning"].tobytes().decode("utf-8")
        error = fields["error"].tobytes().decode("utf-8")
        if "n_frames" not in fields:
            return Staged(None, fps, warning, error)
        rows = ItemRows(int(fields["n_frames"]),
                        {k[6:]: v for k, v in fields.items() if k.startswith("frame_")},
                        fields["segments"], fields["windows"],
                        {k[6:]: v for k, v in fields.items() if k.startswith("image_")},
                        float(fields["eps"]), float(fields["face_found_share"]),
                        int(fields["face_reference"]))
    except Exception:   # a damaged object: zip, CRC or content
        return None
    return Staged(rows, fps, warning, error)


def _staged_key(index: int, g: int) -> str:
    return f"{STAGING}/{index // g:06d}/{index:09d}.npz"


def stage_item(path: str, index: int, g: int, item: Staged) -> None:
    """Write item ``index``'s staged object (the store at ``path``, G = ``g``)."""
    put_object(path, _staged_key(index, g), encode_staged(item))


def stage_failure(path: str, index: int, g: int, message: str) -> None:
    """Stage item ``index`` as failed with ``message``."""
    stage_item(path, index, g, Staged(None, error=str(message) or "failed"))


def staged_items(path: str, shard: int | None = None) -> dict[int, str]:
    """Staged items (of one shard, or all): item index -> object key."""
    prefix = f"{STAGING}/" if shard is None else f"{STAGING}/{shard:06d}/"
    found = {}
    for key in list_objects(path, prefix):
        name = key.rsplit("/", 1)[-1]
        if name.endswith(".npz") and name[:-4].isdigit():
            found[int(name[:-4])] = key
    return found


def remove_staged(path: str, keys: Sequence[str]) -> None:
    """Delete staged objects (merged, or of items already done), and empty folders."""
    delete_objects(path, keys)
    remove_folder_if_empty(path, STAGING)


# ----------------------------------------------------------------------------
# one writer per shard
# ----------------------------------------------------------------------------
_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def shard_lock(path: str, shard: int) -> Iterator[None]:
    """Hold this process's lock on one shard of the store at ``path``."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault((path, int(shard)), threading.Lock())
    with lock:
        yield


def frame_names(group: zarr.Group) -> list[str]:
    """The per-frame arrays of a store."""
    return [f.name for f in FRAME_ARRAYS if f.name in group]


def _face_values(group: zarr.Group) -> list[str]:
    """The per-item arrays of the face track a store holds (none: laid out before them)."""
    frames = {f.name for f in FRAME_ARRAYS}
    return [name for name in FACE_ARRAYS if name not in frames and name in group]


def required_chunks(arr: zarr.Array, index: int, n_frames: int = 0,
                    windows: int = 0) -> list[tuple[int, ...]]:
    """Positions of the first element of every chunk item ``index`` must have in
    ``arr`` once done: one per mdv window, one per FRAME_CHUNK frames of a
    per-frame array, one otherwise."""
    dims = tuple(arr.metadata.dimension_names or ())
    tail = (0,) * (arr.ndim - 2)
    if dims[1:2] == ("window",) and arr.ndim == 5:
        return [(index, k) + tail for k in range(windows)]
    if dims[1:2] == ("frame",):
        step = arr.chunks[1]
        return [(index, k * step) + tail for k in range(-(-n_frames // step))]
    return [(index,) + (0,) * (arr.ndim - 1)]


def _fill(arr: zarr.Array, rows: int, width: int | None = None) -> np.ndarray:
    shape = (rows,) + ((width,) + arr.shape[2:] if width is not None else arr.shape[1:])
    if arr.dtype.kind in "OTU":   # strings: zarr gives NumPy's StringDType
        return np.full(shape, arr.fill_value, dtype=object)
    return np.full(shape, arr.fill_value, dtype=arr.dtype)


class _ShardWrite:
    """The blocks of one shard being written: old rows of kept items, new rows."""

    def __init__(self, group: zarr.Group, shard: int, g: int, who: str) -> None:
        self.group, self.who = group, who
        n = group["status"].shape[0]
        self.lo, self.hi = shard * g, min(n, (shard + 1) * g)
        self.shard = shard
        self.presence = Presence(group)
        self.lost: set[int] = set()

    def statuses(self) -> np.ndarray:
        """The shard's statuses; an unreadable status chunk reads as pending."""
        try:
            return np.asarray(self.group["status"][self.lo:self.hi]).astype(object)
        except Exception:
            return np.full(self.hi - self.lo, "pending", dtype=object)

    def _check_present(self, name: str, items: dict[int, tuple[int, int]]) -> None:
        """Mark lost the kept done items missing a chunk of ``name``."""
        arr = self.group[name]
        for i, (frames, windows) in items.items():
            if i in self.lost:
                continue
            try:
                if any(self.presence.missing(name, pos) for pos in
                       required_chunks(arr, i, frames, windows)):
                    self.lost.add(i)
            except DamagedIndex:
                self.lost.add(i)

    def old_rows(self, name: str, kept: dict[int, tuple[int, int]],
                 width: int | None = None) -> np.ndarray:
        """A block of the shard's rows of ``name``: the stored rows of ``kept``
        items (checked: an item missing a chunk or failing to decode is lost),
        the fill value elsewhere; per-frame arrays ``width`` frames wide."""
        arr = self.group[name]
        block = _fill(arr, self.hi - self.lo, width)
        self._check_present(name, kept)
        need = [i for i in kept if i not in self.lost]
        if not need or width == 0:
            return block
        region = (slice(self.lo, self.hi),) + (() if width is None else (slice(0, width),))
        try:
            old = np.asarray(arr[region])
        except Exception:   # a damaged chunk: read item by item to find it
            old = None
        for i in need:
            k = i - self.lo
            if old is not None:
                block[k] = old[k]
                continue
            try:
                block[k] = np.asarray(arr[(i,) + region[1:]])
            except Exception:
                self.lost.add(i)
        return block


def _frame_width(done_frames: Sequence[int]) -> int:
    """Frames of the per-frame blocks: the longest curve rounded up to inner chunks."""
    return -(-max(done_frames, default=0) // FRAME_CHUNK) * FRAME_CHUNK


def _writer(group: zarr.Group, name: str, empty: bool = True) -> zarr.Array:
    """Array ``name`` storing every chunk, even one of fill values only (a done
    item has all its chunks, so a missing one is damage, not a black image);
    ``empty=False`` drops fill-only chunks instead. Array config is not saved
    with the array: every writer asks for it again."""
    return group[name].with_config({"write_empty_chunks": empty})


def write_shard(group: zarr.Group, shard: int, g: int, staged: dict[int, Staged],
                who: str) -> list[tuple[int, str]]:
    """Write ``staged`` items into shard ``shard``: every array's object once, status last.

    The caller holds :func:`shard_lock` and is the shard's only writer. The
    shard's other done and failed items keep what is stored; a done item
    whose stored chunks are missing or damaged goes back to 'pending' (its
    rows become fill values), so the next run redoes it rather than the
    store keeping a hole. Pending items hold fill values.

    Returns
    -------
    list of (index, status)
        The staged items, and the items sent back to pending.
    """
    if not staged:
        return []
    w = _ShardWrite(group, shard, g, who)
    lo = w.lo
    status = w.statuses()
    reps = list(group.attrs["representations"])
    kept_any = {i: (0, 0) for i in range(lo, w.hi)
                if status[i - lo] in ("done", "failed") and i not in staged}
    kept_done = {i: v for i, v in kept_any.items() if status[i - lo] == "done"}
    blocks: dict[str, np.ndarray] = {"n_frames": w.old_rows("n_frames", kept_done)}
    if "mdv" in reps:
        blocks["mdv_count"] = w.old_rows("mdv_count", kept_done)
    kept_done = {i: (int(blocks["n_frames"][i - lo]),
                     int(blocks["mdv_count"][i - lo]) if "mdv" in reps else 0)
                 for i in kept_done}
    for name in reps + ["segments", "windows", "fps", "eps", "warning"] + _face_values(group):
        blocks[name] = w.old_rows(name, kept_done)
    blocks["error"] = w.old_rows("error", kept_any)
    done_frames = [t for i, (t, _m) in kept_done.items() if i not in w.lost]
    done_frames += [item.rows.n_frames for item in staged.values() if item.rows is not None]
    width = _frame_width(done_frames)
    frames = frame_names(group)
    for name in frames:
        blocks[name] = w.old_rows(name, kept_done, min(width, group[name].shape[1]))
    fills = {name: _fill(group[name], 1, 1 if name in frames else None)[0]
             for name in blocks}
    for i in sorted(w.lost):   # found while reading: fill values, redone by the next run
        for name, block in blocks.items():
            block[i - lo] = fills[name]
        status[i - lo] = "pending"
        log.warning("store %s: item #%d had a missing or damaged chunk; it is pending again",
                    who, i)
    for i, item in staged.items():
        _put_item(blocks, fills, i - lo, item)
        status[i - lo] = item.status
    _write_blocks(group, w, blocks, frames)
    _writer(group, "status")[lo:w.hi] = status      # last: the items count as written
    return sorted([(i, s.status) for i, s in staged.items()]
                  + [(i, "pending") for i in w.lost])


def _put_item(blocks: dict[str, np.ndarray], fills: dict[str, Any], k: int,
              item: Staged) -> None:
    """Row ``k`` of every block from one staged item (fill values for a failure)."""
    rows = item.rows
    for name, block in blocks.items():
        block[k] = fills[name]
    blocks["error"][k] = item.error if rows is None else ""
    if rows is None:
        return
    blocks["n_frames"][k] = rows.n_frames
    blocks["fps"][k], blocks["eps"][k] = item.fps, rows.eps
    blocks["warning"][k] = item.warning
    blocks["segments"][k], blocks["windows"][k] = rows.segments, rows.windows
    if "face_found_share" in blocks:
        blocks["face_found_share"][k] = rows.face_found_share
        blocks["face_reference"][k] = rows.face_reference
    for rep, value in rows.images.items():
        if rep == "mdv":
            blocks["mdv"][k, :value.shape[0]] = value
            blocks["mdv_count"][k] = value.shape[0]
        else:
            blocks[rep][k] = value
    for name, values in rows.frames.items():
        if name in blocks:   # a store laid out before the face track keeps none
            blocks[name][k, :values.shape[0]] = values


def _write_blocks(group: zarr.Group, w: _ShardWrite, blocks: dict[str, np.ndarray],
                  frames: Sequence[str]) -> None:
    """Every block but status into its array: one object per array (``frames``:
    the per-frame arrays, :func:`frame_names`).

    A per-frame block spans the shard's longest curve; inner chunks stored
    beyond it (an item that was longer before it failed) are dropped, so
    the object is what a clean run writes.
    """
    lo, hi = w.lo, w.hi
    for name, block in blocks.items():
        if name not in frames:
            _writer(group, name)[lo:hi] = block
            continue
        arr, width = group[name], block.shape[1]
        if width:
            _writer(group, name)[lo:hi, :width] = block
        stored = min(w.presence.stored_extent(name, w.shard) * FRAME_CHUNK, arr.shape[1])
        if stored > width:
            _writer(group, name, empty=False)[lo:hi, width:stored] = arr.fill_value


# ----------------------------------------------------------------------------
# the merge task
# ----------------------------------------------------------------------------
def merge_staged(path: str, shard: int, _after: Any = None) -> list[tuple[int, str]]:
    """The merge task of one shard: write its staged items, then delete them.

    ``_after`` (the shard's staging tasks' results) only orders the task in
    the graph. A staged object that cannot be read is deleted: its item
    stays pending and the next run computes it again.

    Returns
    -------
    list of (index, status)
        What :func:`write_shard` returns.
    """
    with shard_lock(path, shard):
        keys = staged_items(path, shard)
        if not keys:
            return []
        group = open_root(path, "r+")
        g = int(group.attrs["items_per_shard"])
        staged = {}
        for (index, _key), data in zip(sorted(keys.items()),
                                       get_objects(path, [keys[i] for i in sorted(keys)])):
            item = None if data is None else decode_staged(data)
            if item is None:
                log.warning("store %s: the staged result of item #%d cannot be read; "
                            "the next run computes it again", path, index)
            else:
                staged[index] = item
        written = write_shard(group, shard, g, staged, path)
        remove_staged(path, list(keys.values()))
        return written


def set_frame_width(path: str, width: int) -> None:
    """Resize every per-frame array to ``width`` frames (by the lock holder only).

    Only the arrays' shape changes (their ``zarr.json`` and the consolidated
    copy): every shard spans FRAME_CAPACITY frames, so no chunk moves.
    """
    group = open_root(path, "r+", consolidated=False)
    for name in frame_names(group):
        arr = group[name]
        if arr.shape[1] != width:
            arr.resize((arr.shape[0], width) + arr.shape[2:])
    consolidate(path)
