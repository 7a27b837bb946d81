"""The layout of an AHDI store: its schema, and laying it out or reopening it.

Before any video is converted, :func:`create_store` lays the whole store out
(docs/store.md): the root attributes and every array with its final shape,
chunks, dtype, fill value, dimension names and description, as listed by
:func:`array_specs`. The columns that come from the item listing (video id,
subject, source, labels) are written then; everything else is written per
item by :meth:`~ahdi.pipeline.store.Store.write_item`. An existing store
made the same way is reopened to resume instead; one made differently is
refused with a message that says what differs (:func:`_mismatch`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
import shutil
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from ahdi.kernels.compute import REPRESENTATIONS, check_representations
from ahdi.kernels.params import AhdiParams

from .errors import DatasetError, StoreError
from .lock import refuse_if_locked
from .store import (LOCK_NAME, MOTION_CAPACITY, MOTION_CHUNK, STORE_VERSION, Store,
                    is_ahdi_store, not_a_store_error, open_store)

__all__ = ["ArraySpec", "array_specs", "create_store", "segments_width"]

# Fixed codec settings: Zstandard without checksum is deterministic for a
# given input, so the same result written twice gives the same chunk bytes.
_COMPRESSORS = (ZstdCodec(level=3, checksum=False),)
_OVERWRITE_HINT = "use --overwrite to replace it, or another output path"
_ITEM = ("item",)
_IMAGE_DIMS = ("item", "y", "x", "channel")


def segments_width(params: AhdiParams) -> int:
    """Columns of the ``segments`` array: most boundaries an item can have.

    ``n_segments + 1`` for adaptive segmentation; for fixed windows the
    boundaries are the window starts plus T, so ``max_windows + 1``.
    """
    if params.segmentation == "adaptive":
        return params.n_segments + 1
    return params.max_windows + 1


# ----------------------------------------------------------------------------
# the schema
# ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArraySpec:
    """One array of the layout; ``values`` (if any) are written at layout."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: Any
    fill_value: Any
    dims: tuple[str, ...]
    description: str
    values: np.ndarray | None = None


def _per_item(name: str, dtype: Any, fill_value: Any, description: str, n: int) -> ArraySpec:
    """A (N,) array written by each item's task: chunk 1, so tasks never share a file."""
    return ArraySpec(name, (n,), (1,), dtype, fill_value, _ITEM, description)


def _image_specs(n: int, params: AhdiParams, representations: Sequence[str]) -> list[ArraySpec]:
    s, cap = params.size, params.mdv_capacity
    specs = []
    for rep in representations:
        if rep == "mdv":
            specs.append(ArraySpec(
                "mdv", (n, cap, s, s, 3), (1, 1, s, s, 3), "uint8", 0,
                ("item", "window", "y", "x", "channel"),
                "level-1 window images; slots >= mdv_count are empty"))
            specs.append(_per_item("mdv_count", "int32", 0,
                                   "number of level-1 window images of the item", n))
        else:
            specs.append(ArraySpec(rep, (n, s, s, 3), (1, s, s, 3), "uint8", 0, _IMAGE_DIMS,
                                   f"{rep} image, RGB uint8"))
    return specs


def _text(values: Sequence[Any]) -> np.ndarray:
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def _listing_specs(items: Sequence[Any]) -> list[ArraySpec]:
    """Columns of the item listing, written whole at layout (one chunk each)."""
    n = len(items)
    specs = [ArraySpec(name, (n,), (n,), str, "", _ITEM, description, _text(values))
             for name, values, description in (
                 ("video_id", [it.video_id for it in items], "video identifier"),
                 ("subject", [it.subject for it in items], "subject identifier"),
                 ("source", [it.source.describe() for it in items],
                  "where the video was read from"))]
    names, kinds, columns = _labels_of(items)
    for name in names:
        if kinds[name] == "number":
            specs.append(ArraySpec(f"label_{name}", (n,), (n,), "float64", math.nan, _ITEM,
                                   f"label {name!r} (NaN = missing)", columns[name]))
        else:
            specs.append(ArraySpec(f"label_{name}", (n,), (n,), str, "", _ITEM,
                                   f"label {name!r} ('' = missing)", columns[name]))
    return specs


def _status_specs(n: int) -> list[ArraySpec]:
    # Status is 'pending' by fill value: nothing to write until an item ends.
    return [
        _per_item("status", str, "pending",
                  "pending | done | failed; written last by each task", n),
        _per_item("error", str, "", "why the item failed ('' when it did not)", n),
        _per_item("warning", str, "", "reader warnings, one per line", n),
        _per_item("n_frames", "int32", 0, "frames T of the video", n),
        _per_item("fps", "float32", math.nan, "frames per second", n),
        _per_item("eps", "float32", math.nan, "activity threshold used (px/frame)", n),
    ]


def _track_specs(n: int, params: AhdiParams) -> list[ArraySpec]:
    """Ragged per-item data in fixed-width rows padded with the fill value."""
    cap, width = params.mdv_capacity, segments_width(params)
    return [
        ArraySpec("motion", (n, MOTION_CAPACITY), (1, MOTION_CHUNK), "float32", math.nan,
                  ("item", "frame"),
                  "motion activity MA_t; row i holds n_frames[i] values, NaN after"),
        ArraySpec("segments", (n, width), (1, width), "int32", -1, ("item", "boundary"),
                  "segment boundaries, 0-based, first 0, last T; -1 after"),
        ArraySpec("windows", (n, cap, 2), (1, cap, 2), "int32", -1, ("item", "window", "edge"),
                  "level-1 windows [start, stop) in frames; -1 rows unused"),
    ]


def array_specs(items: Sequence[Any], params: AhdiParams,
                representations: Sequence[str]) -> list[ArraySpec]:
    """Every array of a store for ``items``, in the order the layout creates them."""
    n = len(items)
    return (_image_specs(n, params, representations) + _listing_specs(items)
            + _status_specs(n) + _track_specs(n, params))


# ----------------------------------------------------------------------------
# label columns
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# laying out
# ----------------------------------------------------------------------------
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


def _root_attributes(items: Sequence[Any], params: AhdiParams, representations: list[str],
                     dataset: str, source: str) -> dict[str, Any]:
    names, kinds, _columns = _labels_of(items)
    return {
        "ahdi_store_version": STORE_VERSION,
        "params": params.to_dict(),
        "param_hash": params.param_hash(),
        "versions": _versions(),
        "dataset": str(dataset),
        "source": str(source),
        "representations": list(representations),
        "labels": names,
        "label_kinds": kinds,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _create_array(group: zarr.Group, spec: ArraySpec) -> None:
    arr = group.create_array(
        spec.name, shape=spec.shape, chunks=spec.chunks, dtype=spec.dtype,
        fill_value=spec.fill_value, compressors=_COMPRESSORS,
        dimension_names=list(spec.dims), attributes={"description": spec.description})
    if spec.values is not None:
        arr[:] = spec.values


def _consolidate(path: str) -> None:
    # Array metadata never changes after the layout, so consolidated metadata
    # stays true; it lets xarray open the store with one read and no warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(path)


def _layout(path: str, items: Sequence[Any], params: AhdiParams,
            representations: list[str], dataset: str, source: str) -> None:
    attrs = _root_attributes(items, params, representations, dataset, source)
    group = zarr.open_group(store=path, mode="w-", zarr_format=3, attributes=attrs)
    for spec in array_specs(items, params, representations):
        _create_array(group, spec)
    _consolidate(path)


# ----------------------------------------------------------------------------
# reopening to resume
# ----------------------------------------------------------------------------
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


def _refresh_item_metadata(store: Store, items: Sequence[Any]) -> str | None:
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
    store.rewrite_column("subject", np.array([str(it.subject) for it in items], dtype=object))
    store.rewrite_column("source", np.array([it.source.describe() for it in items],
                                            dtype=object))
    for name in names:
        store.rewrite_column(f"label_{name}", columns[name])
    return None


def _reopen(path: str, items: list[Any], params: AhdiParams, representations: list[str],
            video_ids: list[str]) -> tuple[Store, str | None]:
    """Open the ahdi store at ``path``; return it and why it cannot be resumed (or None)."""
    existing = open_store(path, mode="r+")
    why = _mismatch(path, existing.attrs, params, representations, video_ids,
                    [str(v) for v in existing.video_ids()])
    if why is None:
        why = _refresh_item_metadata(existing, items)
    return existing, why


# ----------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------
def _canonical_representations(representations: Sequence[str]) -> list[str]:
    """Validate with the kernels' vocabulary; the store keeps its canonical order."""
    if isinstance(representations, str):
        representations = [representations]
    asked = check_representations(representations)
    return [r for r in REPRESENTATIONS if r in asked]


def _check_items(path: str, items: list[Any]) -> list[str]:
    """Video ids of ``items``, which must be some and unique."""
    if not items:
        raise DatasetError(f"no items to store in {path}")
    video_ids = [str(it.video_id) for it in items]
    if len(set(video_ids)) != len(video_ids):
        dup = sorted({v for v in video_ids if video_ids.count(v) > 1})[:5]
        raise DatasetError(f"video ids must be unique; repeated: {', '.join(dup)}")
    return video_ids


def create_store(path: str | os.PathLike, items: Sequence[Any], params: AhdiParams,
                 representations: Sequence[str], *, dataset: str, source: str,
                 overwrite: bool = False) -> Store:
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
    video_ids = _check_items(path, items)

    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise not_a_store_error(path)
        if is_ahdi_store(path):
            existing, why = _reopen(path, items, params, reps, video_ids)
            if why is None:
                return existing
            if not overwrite:
                raise StoreError(why)
            refuse_if_locked(os.path.join(path, LOCK_NAME), what=path)
            shutil.rmtree(path)
        elif os.listdir(path):
            raise not_a_store_error(path)
    try:
        _layout(path, items, params, reps, dataset, source)
    except zarr.errors.ContainsGroupError as exc:  # another process raced us
        raise StoreError(f"store {path} was created by someone else meanwhile; "
                         f"run again to resume it") from exc
    return Store(path, mode="r+")
