"""Before and after a run's graph, by the lock holder: what to do, and tidying up.

:func:`plan_run` decides which items a run computes and which it only
merges: items already done are skipped, items staged by an earlier run
that stopped before merging them are merged without computing them again,
and staged leftovers of done items are deleted. It also widens the
per-frame arrays to ``FRAME_CAPACITY`` frames, the width merges write at.
:func:`finish_run` merges what is still staged (a stopped run, in this
process) and fits the per-frame arrays to the longest stored video, so
that xarray and dask see a few chunks per item group instead of 2**22
frames. Array metadata changes only here and at layout, under the lock.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import StoreError
from .schema import FRAME_CAPACITY, face_arrays_missing
from .shards import (merge_staged, remove_staged, set_frame_width, staged_failures,
                     staged_items)
from .store import Store
from .store_files import open_root

__all__ = ["RunPlan", "plan_run", "finish_run", "fit_frame_width"]


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """Items a run computes (``todo``) and items it only merges (``staged``)."""

    todo: list[int]
    staged: list[int]


def plan_run(store: Store) -> RunPlan:
    """Plan a run into ``store`` (open 'r+', its lock held); widen per-frame arrays.

    Done items are skipped (a damaged status reads as pending: redone);
    staged results that are not done are merged, not computed, but staged
    failures are computed again, as recorded failures are (a rerun retries
    failed items); staged objects of done items (a merge killed after its
    status write) go.
    """
    set_frame_width(store.path, FRAME_CAPACITY)
    status = store.statuses(unreadable="pending")
    staged = staged_items(store.path)
    retried = set(staged_failures(store.path, {i: key for i, key in staged.items()
                                              if status[i] != "done"}))
    remove_staged(store.path, [key for i, key in staged.items()
                               if status[i] == "done" or i in retried])
    waiting = sorted(i for i in staged if status[i] != "done" and i not in retried)
    todo = [i for i in range(store.n_items)
            if status[i] != "done" and (i not in staged or i in retried)]
    return RunPlan(todo, waiting)


def finish_run(path: str, merge: bool = True) -> None:
    """After a run (or a stop) in this process: merge what is still staged (when
    ``merge``), then fit the per-frame arrays to the longest done item."""
    if merge:
        g = int(open_root(path).attrs["items_per_shard"])
        for shard in sorted({i // g for i in staged_items(path)}):
            merge_staged(path, shard)
    fit_frame_width(path)


def fit_frame_width(path: str) -> int:
    """Per-frame arrays only as wide as the longest done item's curve; returns it."""
    group = open_root(path, "r", consolidated=False)
    try:
        done = np.asarray(group["status"][:]).astype(object) == "done"
        width = int(np.asarray(group["n_frames"][:])[done].max(initial=0))
    except Exception:   # a damaged status or n_frames chunk: stay wide enough
        width = FRAME_CAPACITY
    set_frame_width(path, width)
    return width
