"""Before and after a run's graph, by the lock holder: what to do, and tidying up.

:func:`plan_run` decides which items a run computes: items staged by an
earlier run that stopped before merging them are merged first (kept
without computing them again), staged leftovers of done items are
deleted, and every item not done is computed. It also widens the
per-frame arrays to ``FRAME_CAPACITY`` frames, the width merges write at.
:func:`finish_run` merges what is still staged (a stopped run, in this
process) and fits the per-frame arrays to the longest stored video, so
that xarray and dask see a few chunks per item group instead of 2**22
frames. Array metadata changes only here and at layout, under the lock.
"""

from __future__ import annotations

import numpy as np

from .schema import FRAME_CAPACITY
from .shards import merge_staged, remove_staged, set_frame_width, staged_items
from .store import Store
from .store_files import open_root

__all__ = ["plan_run", "finish_run", "fit_frame_width"]


def plan_run(store: Store) -> list[int]:
    """The items a run into ``store`` (open 'r+', its lock held) computes; widens
    the per-frame arrays.

    What an earlier run staged but did not merge (it was stopped) is merged
    first, so its results are kept without computing them again; then every
    item that is not done is computed: pending ones, failed ones (a rerun
    retries failures, also those merged just now) and those whose status
    chunk is damaged (read as pending). Staged objects of done items (a
    merge killed after its status write) go unmerged.
    """
    set_frame_width(store.path, FRAME_CAPACITY)
    staged = staged_items(store.path)
    if staged:
        status = store.statuses(unreadable="pending")
        remove_staged(store.path, [key for i, key in staged.items() if status[i] == "done"])
        _merge_all(store.path)
    return store.pending_indices()


def finish_run(path: str, merge: bool = True) -> None:
    """After a run (or a stop) in this process: merge what is still staged (when
    ``merge``), then fit the per-frame arrays to the longest done item."""
    if merge:
        _merge_all(path)
    fit_frame_width(path)


def _merge_all(path: str) -> None:
    """Merge every shard that holds staged items."""
    g = int(open_root(path).attrs["items_per_shard"])
    for shard in sorted({i // g for i in staged_items(path)}):
        merge_staged(path, shard)


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
