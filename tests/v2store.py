"""A store of layout version 2, as ahdi wrote it before version 3, for tests and benchmarks.

Version 2: every array written per item has one chunk per item (no
shards), ``motion`` is 2**22 frames wide in chunks of (1, 4096), the root
has no ``items_per_shard`` or ``coordinates``, and each item's task wrote
its own chunks, every one of them (even fill-only), status last. This ahdi
reads such stores and ``ahdi upgrade`` copies them into version 3; here
they are made with plain Zarr from the version-3 schema, changed back.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline.layout import _root_attributes
from ahdi.pipeline.schema import (COMPRESSORS, FACE_ARRAYS, FRAME_CAPACITY, FRAME_CHUNK,
                                  array_specs, item_rows)

__all__ = ["make_v2_store", "write_v2_item", "write_v2_failure"]


def _v2_spec(spec):
    """A version-3 array spec as version 2 laid it out: one chunk per item."""
    if spec.values is not None:
        return spec                       # listing columns: one chunk, as before
    if spec.per_frame:
        return dataclasses.replace(spec, shape=(spec.shape[0], FRAME_CAPACITY),
                                   chunks=(1, FRAME_CHUNK), shards=None, per_frame=False)
    return dataclasses.replace(spec, chunks=(1,) + spec.shape[1:] if spec.name not in
                               ("mdv",) else (1, 1) + spec.shape[2:], shards=None)


def make_v2_store(path: str | os.PathLike, items: Sequence[Any], params: AhdiParams,
                  representations: Sequence[str]) -> zarr.Group:
    """Lay out a version-2 store at ``path`` (representations in canonical order)."""
    attrs = _root_attributes(items, params, list(representations), "d", "s", 1)
    attrs["ahdi_store_version"] = 2
    del attrs["items_per_shard"], attrs["coordinates"]
    group = zarr.open_group(str(path), mode="w-", zarr_format=3, attributes=attrs)
    for spec in array_specs(items, params, representations):
        if spec.name in FACE_ARRAYS:      # version 2 never held a face track
            continue
        spec = _v2_spec(spec)
        arr = group.create_array(spec.name, shape=spec.shape, chunks=spec.chunks,
                                 dtype=spec.dtype, fill_value=spec.fill_value,
                                 compressors=COMPRESSORS, dimension_names=list(spec.dims),
                                 attributes={"description": spec.description},
                                 config={"write_empty_chunks": True})
        if spec.values is not None:
            arr[:] = spec.values
    zarr.consolidate_metadata(str(path))
    return group


def write_v2_item(group: zarr.Group, index: int, result: Any, fps: float,
                  warnings: Sequence[str] = ()) -> None:
    """Write one item as version 2's task did: its own chunks, status last."""
    params = AhdiParams.from_dict(group.attrs["params"])
    reps = list(group.attrs["representations"])
    rows = item_rows(result, params, reps, group["segments"].shape[1], f"item {index}")

    def put(name):
        return group[name].with_config({"write_empty_chunks": True})

    motion = rows.frames["motion"]
    padded = np.full(-(-motion.size // FRAME_CHUNK) * FRAME_CHUNK, np.nan, np.float32)
    padded[:motion.size] = motion
    if padded.size:
        put("motion")[index, :padded.size] = padded
    put("segments")[index] = rows.segments
    put("windows")[index] = rows.windows
    for rep, value in rows.images.items():
        if rep == "mdv":
            if value.shape[0]:
                put("mdv")[index, :value.shape[0]] = value
            put("mdv_count")[index] = np.int32(value.shape[0])
        else:
            put(rep)[index] = value
    put("n_frames")[index] = np.int32(rows.n_frames)
    put("fps")[index] = np.float32(fps)
    put("eps")[index] = np.float32(rows.eps)
    put("warning")[index] = "\n".join(warnings)
    put("error")[index] = ""
    put("status")[index] = "done"


def write_v2_failure(group: zarr.Group, index: int, message: str) -> None:
    group["error"].with_config({"write_empty_chunks": True})[index] = message
    group["status"].with_config({"write_empty_chunks": True})[index] = "failed"
