"""The schema of an AHDI store: every array, its shape, chunks, shards, codec and fill.

:func:`array_specs` lists the arrays of a store for a set of items, in the
order :mod:`ahdi.pipeline.layout` creates them (docs/store.md has the same
table in words). Items are grouped G at a time (``items_per_shard``): every
array written per item is stored as one object per group of G items (a
shard of per-item inner chunks, or one plain chunk of G rows), so that a
store holds less than one stored object per item and one task (the group's
merge) writes each object. Per-frame arrays (:data:`FRAME_ARRAYS`, e.g. the
motion curve) have a frame axis as wide as the longest stored video.

The item listing's label columns are derived here too (:func:`labels_of`),
and :func:`check_listing` refuses, before anything is written, what the
layout could not store (a label name that is no array name, text that is
not Unicode). :func:`item_rows` checks one item's result against the
schema and turns it into the rows a merge writes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from zarr.codecs import ZstdCodec

from ahdi.kernels.params import AhdiParams

from ahdi.kernels.compute import REPRESENTATIONS

from .errors import DatasetError, StoreError
from .face_presence import STATUS_NAMES

__all__ = ["ArraySpec", "FrameArray", "FRAME_ARRAYS", "COMPRESSORS", "array_specs",
           "array_names", "segments_width", "labels_of", "listing_columns", "label_spec",
           "check_listing", "ItemRows", "item_rows", "STORE_VERSION", "READABLE_VERSIONS",
           "IMAGE_REPRESENTATIONS", "ITEMS_PER_SHARD", "FRAME_CAPACITY", "FRAME_CHUNK",
           "COORDINATES", "STATUSES", "RELABELING", "LISTING_COLUMNS", "FACE_ARRAYS",
           "face_arrays_missing"]

# 2: every chunk has a checksum and every chunk of a done item exists.
# 3: items stored G to an object (shards), per-frame arrays as wide as the
#    longest video, video_id/subject/source coordinates of the item axis, the
#    face track (FACE_ARRAYS). Version 3 was extended with the face track
#    before it was released; a store laid out without it (by a development
#    build) is read, and refused for writing with the way out
#    (face_arrays_missing, ahdi upgrade).
STORE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
# One (S, S, 3) image per item: every representation but the mdv stack.
IMAGE_REPRESENTATIONS = tuple(r for r in REPRESENTATIONS if r != "mdv")
# Items per stored object. 64 keeps a store of 64 items at about half an
# object per item (17 metadata documents plus one object per array) and one
# of 512 at a quarter, while a 224 x 224 mdv shard stays at tens of MB, what
# one merge holds in memory; docs/store.md has the measurements.
ITEMS_PER_SHARD = 64
FRAME_CAPACITY = 2 ** 22           # most frames a video may have (~38 h at 30 fps)
FRAME_CHUNK = 4096                 # frames per inner chunk of a per-frame array
STATUSES = ("pending", "done", "failed")
#: Root attribute naming the item listing's columns that xarray makes coordinates.
COORDINATES = "video_id subject source"
#: Root attribute set while the label columns are being replaced.
RELABELING = "relabel_in_progress"
# Columns written at layout from the item listing that a resume may rewrite
# (they are not computed), besides the label columns; nothing else may.
LISTING_COLUMNS = ("subject", "source")

# Zstandard at a fixed level is deterministic, so the same result written
# twice gives the same chunk bytes. Its frame checksum (XXH64 of the
# decoded bytes) makes every damaged chunk fail to read instead of
# decoding to wrong pixels; benchmarks/bench_checksum.py measures its cost.
# A shard's index carries its own CRC32C (Zarr's default index codecs).
COMPRESSORS = (ZstdCodec(level=3, checksum=True),)
_ITEM = ("item",)
_IMAGE_DIMS = ("item", "y", "x", "channel")


@dataclasses.dataclass(frozen=True)
class FrameArray:
    """A per-frame array: one row of ``T`` values (each of shape ``tail``) per item.

    Declaring one here is all a new per-frame result needs: the layout
    creates it (axis 1 is ``frame``, as wide as the longest stored video),
    :func:`item_rows` takes ``getattr(result, field)`` of shape
    ``(T,) + tail`` and the merge writes it, ``fill`` after the item's frames.
    ``face``: the values are the item's face track's field (``--crop track``
    and ``align``); an item without a track holds ``fill`` everywhere.
    """

    name: str
    field: str
    tail: tuple[int, ...]
    tail_dims: tuple[str, ...]
    dtype: str
    description: str
    fill: Any = math.nan
    face: bool = False


#: Status codes of ``face_status``, in words (``face_presence`` defines them).
_FACE_CODES = ", ".join(f"{code} {name}" for code, name in enumerate(STATUS_NAMES))


#: Every per-frame array of a store, in layout order.
FRAME_ARRAYS = (
    FrameArray("motion", "motion", (), (), "float32",
               "motion activity MA_t; row i holds n_frames[i] values, NaN after"),
    FrameArray("face_boxes", "boxes", (4,), ("box",), "float32",
               "face square per frame, source pixels: x, y, side, side; NaN after "
               "n_frames and for crops other than track/align", face=True),
    FrameArray("face_transforms", "transforms", (2, 3), ("row", "column"), "float32",
               "similarity (2 x 3) taking frame t's pixels onto the reference frame's",
               face=True),
    FrameArray("face_found", "found", (), (), "bool", "the face shows on the frame",
               fill=False, face=True),
    FrameArray("face_status", "status", (), (), "int8",
               f"face follower's status: {_FACE_CODES}; -1 after n_frames and for "
               "crops other than track/align", fill=-1, face=True),
)
#: The per-item face arrays besides the per-frame ones: (name, dtype, fill, description).
_FACE_ITEM_ARRAYS = (
    ("face_found_share", "float32", math.nan,
     "share of the frames that show the face (NaN for crops other than track/align)"),
    ("face_reference", "int32", -1, "0-based reference frame of the face track; -1 when none"),
)
#: Every array of the face track (``--crop track`` / ``align``).
FACE_ARRAYS = tuple([f.name for f in FRAME_ARRAYS if f.face]
                    + [name for name, *_rest in _FACE_ITEM_ARRAYS])
# Arrays every store has besides its representations, per-frame arrays and labels.
_BASE_ARRAYS = ("video_id", "subject", "source", "status", "error", "warning", "n_frames",
                "fps", "eps", "segments", "windows")


def segments_width(params: AhdiParams) -> int:
    """Columns of the ``segments`` array: most boundaries an item can have.

    ``n_segments + 1`` for adaptive segmentation; for fixed windows the
    boundaries are the window starts plus T, so ``max_windows + 1``.
    """
    if params.segmentation == "adaptive":
        return params.n_segments + 1
    return params.max_windows + 1


@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """One array of the layout; ``values`` (if any) are written at layout.

    ``shards`` is the shape of one stored object when it holds several
    ``chunks`` (Zarr v3 sharding), None when every chunk is an object.
    ``per_frame``: axis 1 is the frame axis, whose width follows the
    longest stored video (:data:`FRAME_ARRAYS`).
    """

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: Any
    fill_value: Any
    dims: tuple[str, ...]
    description: str
    values: np.ndarray | None = None
    shards: tuple[int, ...] | None = None
    per_frame: bool = False


def _per_item(name: str, dtype: Any, fill_value: Any, description: str, n: int,
              g: int) -> ArraySpec:
    """A (N,) array written by the merges: one chunk of G items per object."""
    return ArraySpec(name, (n,), (g,), dtype, fill_value, _ITEM, description)


def _image_specs(n: int, params: AhdiParams, representations: Sequence[str],
                 g: int) -> list[ArraySpec]:
    # One inner chunk per image, so one item is read without its group.
    s, cap = params.size, params.mdv_capacity
    specs = []
    for rep in representations:
        if rep == "mdv":
            specs.append(ArraySpec(
                "mdv", (n, cap, s, s, 3), (1, 1, s, s, 3), "uint8", 0,
                ("item", "window", "y", "x", "channel"),
                "level-1 window images; slots >= mdv_count are empty",
                shards=(g, cap, s, s, 3)))
            specs.append(_per_item("mdv_count", "int32", 0,
                                   "number of level-1 window images of the item", n, g))
        else:
            specs.append(ArraySpec(rep, (n, s, s, 3), (1, s, s, 3), "uint8", 0, _IMAGE_DIMS,
                                   f"{rep} image, RGB uint8", shards=(g, s, s, 3)))
    return specs


def frame_spec(frame: FrameArray, n: int, g: int, width: int = FRAME_CAPACITY) -> ArraySpec:
    """The array of a per-frame result: (N, width) + tail, G items x FRAME_CHUNK frames
    per inner chunk, one object per G items (the shard spans FRAME_CAPACITY frames)."""
    return ArraySpec(frame.name, (n, width) + frame.tail, (g, FRAME_CHUNK) + frame.tail,
                     frame.dtype, frame.fill, ("item", "frame") + frame.tail_dims,
                     frame.description, shards=(g, FRAME_CAPACITY) + frame.tail,
                     per_frame=True)


def _text(values: Sequence[Any]) -> np.ndarray:
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


# ----------------------------------------------------------------------------
# the item listing: video ids, subjects, sources, labels
# ----------------------------------------------------------------------------
def _label_kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None and not (isinstance(v, str) and v == "")]
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) for v in present)
    return "number" if numeric else "text"


def labels_of(items: Sequence[Any]) -> tuple[list[str], dict[str, str], dict[str, np.ndarray]]:
    """Label names (first-seen order), their kinds ('number'/'text') and columns."""
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


def listing_columns(items: Sequence[Any]) -> dict[str, np.ndarray]:
    """The columns written from the item listing: ``video_id``, ``subject``,
    ``source`` and ``label_<name>`` (float64 or str), by array name."""
    columns = {"video_id": _text([it.video_id for it in items]),
               "subject": _text([it.subject for it in items]),
               "source": _text([it.source.describe() for it in items])}
    _names, _kinds, labels = labels_of(items)
    columns.update({f"label_{name}": values for name, values in labels.items()})
    return columns


def label_spec(name: str, kind: str, values: np.ndarray) -> ArraySpec:
    """The ``label_<name>`` array of one label column."""
    n = len(values)
    if kind == "number":
        return ArraySpec(f"label_{name}", (n,), (n,), "float64", math.nan, _ITEM,
                         f"label {name!r} (NaN = missing)", values)
    return ArraySpec(f"label_{name}", (n,), (n,), str, "", _ITEM,
                     f"label {name!r} ('' = missing)", values)


def _listing_specs(items: Sequence[Any]) -> list[ArraySpec]:
    """Columns of the item listing, written whole at layout (one chunk each)."""
    n = len(items)
    columns = listing_columns(items)
    specs = [ArraySpec(name, (n,), (n,), str, "", _ITEM, description, columns[name])
             for name, description in (("video_id", "video identifier"),
                                       ("subject", "subject identifier"),
                                       ("source", "where the video was read from"))]
    names, kinds, labels = labels_of(items)
    return specs + [label_spec(name, kinds[name], labels[name]) for name in names]


def _status_specs(n: int, g: int) -> list[ArraySpec]:
    # Status is 'pending' by fill value: nothing to write until an item ends.
    return [
        _per_item("status", str, "pending",
                  "pending | done | failed; written last by each merge", n, g),
        _per_item("error", str, "", "why the item failed ('' when it did not)", n, g),
        _per_item("warning", str, "", "reader warnings, one per line", n, g),
        _per_item("n_frames", "int32", 0, "frames T of the video", n, g),
        _per_item("fps", "float32", math.nan, "frames per second", n, g),
        _per_item("eps", "float32", math.nan, "activity threshold used (px/frame)", n, g),
    ]


def _track_specs(n: int, params: AhdiParams, g: int) -> list[ArraySpec]:
    """Ragged per-item data: per-frame arrays, and fixed-width rows padded with the fill."""
    cap, width = params.mdv_capacity, segments_width(params)
    return [frame_spec(frame, n, g) for frame in FRAME_ARRAYS if not frame.face] + [
        ArraySpec("segments", (n, width), (g, width), "int32", -1, ("item", "boundary"),
                  "segment boundaries, 0-based, first 0, last T; -1 after"),
        ArraySpec("windows", (n, cap, 2), (g, cap, 2), "int32", -1, ("item", "window", "edge"),
                  "level-1 windows [start, stop) in frames; -1 rows unused"),
    ]


def _face_specs(n: int, g: int) -> list[ArraySpec]:
    """The face track: per-frame arrays and per-item values (fill values for
    crops that do not follow the face)."""
    return ([frame_spec(frame, n, g) for frame in FRAME_ARRAYS if frame.face]
            + [_per_item(name, dtype, fill, description, n, g)
               for name, dtype, fill, description in _FACE_ITEM_ARRAYS])


def face_arrays_missing(names: Sequence[str], version: int, path: str) -> str | None:
    """Why a store of layout ``version`` holding arrays ``names`` lacks the face
    track, or None (it has it, or is of version 1 or 2, which never had it)."""
    if version != STORE_VERSION or all(name in names for name in FACE_ARRAYS):
        return None
    return (f"store {path} has no face track arrays (it was laid out by a development "
            f"build of ahdi before version {STORE_VERSION} held them); run ahdi upgrade "
            f"{path} NEW.zarr to copy it into a store that has them (nothing is "
            f"recomputed), or use --overwrite to replace it")


def array_names(representations: Sequence[str], labels: Sequence[str],
                version: int = STORE_VERSION) -> list[str]:
    """Names of every array of a store (of layout ``version``) holding
    ``representations`` and ``labels``: what a complete layout has. The face
    track (:data:`FACE_ARRAYS`) is not among them: a version-3 store laid
    out before it existed is complete, and :func:`face_arrays_missing` says
    what to do with it."""
    reps = list(representations)
    frames = [f.name for f in FRAME_ARRAYS if not f.face] if version >= 3 else ["motion"]
    return (list(_BASE_ARRAYS) + frames + reps + (["mdv_count"] if "mdv" in reps else [])
            + [f"label_{name}" for name in labels])


def array_specs(items: Sequence[Any], params: AhdiParams, representations: Sequence[str],
                items_per_shard: int = ITEMS_PER_SHARD) -> list[ArraySpec]:
    """Every array of a store for ``items``, in the order the layout creates them;
    ``items_per_shard`` items share each stored object of an array written per item."""
    n, g = len(items), int(items_per_shard)
    # The face track comes before the listing columns, whose values are
    # written at layout: a layout cut short before it is incomplete.
    return (_image_specs(n, params, representations, g) + _face_specs(n, g)
            + _listing_specs(items)
            + _status_specs(n, g) + _track_specs(n, params, g))


# ----------------------------------------------------------------------------
# what the layout could not store, refused before anything is written
# ----------------------------------------------------------------------------
def _bad_text(value: str) -> str | None:
    """Why ``value`` cannot be stored as Zarr text, or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds {value[exc.start:exc.end]!r}, which is not Unicode text"
    if "\x00" in value:
        return "holds a NUL character"
    return None


def _bad_label_name(name: str) -> str | None:
    """Why ``label_<name>`` cannot name an array (a folder of the store), or None."""
    if not name.strip():
        return "is empty"
    if "/" in name or "\\" in name:
        return "holds a path separator"
    if any(ord(ch) < 32 for ch in name):
        return "holds a control character"
    return _bad_text(name)


def check_listing(items: Sequence[Any], path: str) -> None:
    """Refuse an item listing the store cannot hold, naming the item and the value.

    Raises
    ------
    DatasetError
        A label name that cannot be an array name (``label_<name>`` is a
        folder of the store), or a video id, subject, source or text label
        that is not Unicode text (e.g. a file name in a foreign encoding).
    """
    names, kinds, _columns = labels_of(items)
    for name in names:
        why = _bad_label_name(name)
        if why:
            raise DatasetError(f"label column {name!r} {why}; it cannot name an array of "
                               f"store {path} (rename the column)")
    for item in items:
        vid = str(item.video_id)
        values = [("video id", vid), ("subject", "" if item.subject is None else str(item.subject)),
                  ("source", str(item.source.describe()))]
        values += [(f"label {name!r}", str(v)) for name, v in (item.labels or {}).items()
                   if kinds.get(str(name)) == "text" and v is not None]
        for what, value in values:
            why = _bad_text(value)
            if why:
                raise DatasetError(f"item {vid.encode('utf-8', 'backslashreplace').decode()}: "
                                   f"{what} {why}; store {path} cannot hold it")


# ----------------------------------------------------------------------------
# one item's result as the rows of its arrays
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ItemRows:
    """One item's rows: per-frame values unpadded, fixed-width rows padded with the fill."""

    n_frames: int
    frames: dict[str, np.ndarray]   # per-frame array name -> (T,) + tail values
    segments: np.ndarray        # (B,) int32, -1 after the boundaries
    windows: np.ndarray         # (C, 2) int32, -1 rows after the M windows
    images: dict[str, np.ndarray]   # rep -> (S, S, 3) uint8, 'mdv' -> (M, S, S, 3)
    eps: float
    face_found_share: float = math.nan   # NaN: no face track (a crop that does not follow)
    face_reference: int = -1


def _frame_values(result: Any, frame: FrameArray, t: int, who: str) -> np.ndarray:
    values = getattr(result, frame.field, None)
    if values is None:
        what = "face track" if frame.face else "result"
        raise StoreError(f"{who}: the {what} has no {frame.field!r}, which the store holds")
    values = np.asarray(values)
    if values.shape != (t,) + frame.tail:
        raise StoreError(f"{who}: {frame.field} has shape {values.shape}, "
                         f"expected {(t,) + frame.tail}")
    return values.astype(frame.dtype)


def item_rows(result: Any, params: AhdiParams, representations: Sequence[str],
              width: int, who: str, face: Any = None) -> ItemRows:
    """Check one item's result against the schema and turn it into rows.

    Parameters
    ----------
    result : object
        Fields ``ahdi, sdi, mean, flow`` ((S, S, 3) uint8 or None), ``mdv``
        ((M, S, S, 3) uint8 or None), ``motion`` ((T,)) and every other
        per-frame field of :data:`FRAME_ARRAYS`, ``eps``, ``bounds``
        (1-D int or None), ``windows`` ((M, 2) int) and ``n_frames`` (T).
    params : AhdiParams
        The store's parameters (S and the mdv capacity C).
    representations : sequence of str
        The store's representations; each must be in ``result``.
    width : int
        Columns B of the store's ``segments`` array.
    who : str
        Names the item in messages.
    face : FaceTrack, optional
        The item's :class:`~ahdi.pipeline.face_track.FaceTrack` (``--crop
        track`` / ``align``): fields ``boxes``, ``transforms``, ``found``,
        ``status`` (T rows each), ``reference`` and ``found_share``. None:
        the face arrays keep their fill values.

    Raises
    ------
    StoreError
        A shape, dtype or count the store cannot hold (nothing is written).
    """
    s, cap = params.size, params.mdv_capacity
    t = int(result.n_frames)
    if not 0 <= t <= FRAME_CAPACITY:
        raise StoreError(f"{who}: n_frames={t} is outside 0..{FRAME_CAPACITY}")
    frames = {frame.name: _frame_values(face if frame.face else result, frame, t, who)
              for frame in FRAME_ARRAYS if face is not None or not frame.face}
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
    for rep in representations:
        value = getattr(result, rep, None)
        if value is None:
            raise StoreError(f"{who}: the result has no {rep!r}, which the store holds")
        value = np.asarray(value)
        want = (m, s, s, 3) if rep == "mdv" else (s, s, 3)
        if value.shape != want or value.dtype != np.uint8:
            raise StoreError(f"{who}: {rep} is {value.dtype} {value.shape}, "
                             f"expected uint8 {want}")
        images[rep] = value

    # Fixed-width rows padded with the fill value, so a rewrite leaves
    # nothing of an earlier attempt.
    seg_row = np.full(width, -1, dtype=np.int32)
    if bounds is not None:
        seg_row[:bounds.size] = bounds
    win_rows = np.full((cap, 2), -1, dtype=np.int32)
    win_rows[:m] = windows
    eps = math.nan if result.eps is None else float(result.eps)
    if face is None:
        return ItemRows(t, frames, seg_row, win_rows, images, eps)
    return ItemRows(t, frames, seg_row, win_rows, images, eps,
                    float(np.float32(face.found_share)), int(face.reference))
