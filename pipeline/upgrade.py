"""``ahdi upgrade OLD NEW``: a store of an earlier layout version copied into the current one.

This ahdi reads stores of versions 1 and 2 but writes only version 3
(:data:`~ahdi.pipeline.schema.STORE_VERSION`). :func:`upgrade_store` lays
out NEW with OLD's parameters, representations and item listing, then
copies every done and failed item through the same shard writes a
conversion makes, so NEW holds exactly what converting the same videos
into version 3 would have written: nothing is computed again. OLD is only
read (its lock is held meanwhile) and stays as it was; remove it once NEW
is checked. An interrupted upgrade is resumed by the same command: items
already in NEW are kept.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from . import remote
from .errors import DamagedChunkError, StoreError
from .layout import locked_store
from .lock import hold_lock
from .resume import finish_run, plan_run
from .schema import STORE_VERSION, ItemRows, segments_width
from .shards import Staged, shard_lock, write_shard
from .store import Store, lock_path, open_store
from .store_files import open_root

__all__ = ["UpgradeReport", "upgrade_store"]


@dataclasses.dataclass
class UpgradeReport:
    """What :func:`upgrade_store` copied."""

    old: str
    new: str
    old_version: int
    counts: dict[str, int]
    skipped: int = 0
    damaged: list[str] = dataclasses.field(default_factory=list)


class _Described:
    """An item's source as the listing recorded it."""

    def __init__(self, text: str) -> None:
        self._text = text

    def describe(self) -> str:
        return self._text


def _listing(old: Store) -> list[Any]:
    """OLD's items as the layout takes them: video id, subject, source, labels."""
    labels = old.labels()
    kinds = old.label_kinds
    items = []
    for i, (vid, subject, source) in enumerate(zip(old.video_ids(), old.subjects(),
                                                   old.sources())):
        values = {}
        for name, column in labels.items():
            value = column[i]
            if kinds.get(name) == "number":
                values[name] = None if math.isnan(float(value)) else float(value)
            else:
                values[name] = str(value)
        items.append(types.SimpleNamespace(video_id=str(vid), subject=str(subject),
                                           source=_Described(str(source)), labels=values))
    return items


def _item(old: Store, i: int, row: dict[str, Any]) -> Staged:
    """Item ``i`` of OLD as the merge takes it (``row``: its item_table row)."""
    if row["status"] == "failed":
        return Staged(None, error=str(row["error"]))
    params = old.params
    segments = np.full(segments_width(params), -1, dtype=np.int32)
    bounds = old.segments(i)
    segments[:bounds.size] = bounds
    windows = np.full((params.mdv_capacity, 2), -1, dtype=np.int32)
    stored = old.windows(i)
    windows[:stored.shape[0]] = stored
    images = {rep: old.mdv(i) if rep == "mdv" else old.image(rep, i)
              for rep in old.representations}
    rows = ItemRows(old.n_frames(i), {"motion": old.motion(i)}, segments, windows, images,
                    old.eps(i))
    return Staged(rows, float(row["fps"]), str(row["warning"]))


def upgrade_store(old_path: str | os.PathLike, new_path: str | os.PathLike, *,
                  on_item: Callable[[int], None] | None = None) -> UpgradeReport:
    """Copy the store at ``old_path`` (layout version 1 or 2, or a version-3 store
    laid out before the face track) into a version-3 store; the face arrays of
    the copied items hold their fill values (no face track recorded).

    Parameters
    ----------
    old_path : str or PathLike
        The store to read; it is not changed.
    new_path : str or PathLike
        Where the version-3 store goes (absent, empty, or an interrupted
        upgrade of the same store, which is resumed).
    on_item : callable, optional
        Called with each item index copied.

    Returns
    -------
    UpgradeReport
        Items per status in NEW; ``damaged`` names OLD's items whose chunks
        could not be read (left pending in NEW: ``ahdi convert`` into NEW
        computes them).

    Raises
    ------
    StoreError
        OLD is no store, already of the current version, or locked; NEW is
        something else or a store of other items or parameters.
    """
    old_path = remote.absolute(os.fspath(old_path))
    new_path = remote.absolute(os.fspath(new_path))
    old = open_store(old_path)
    if old.version == STORE_VERSION and old.has_face_track:
        raise StoreError(f"store {old_path} already has layout version {STORE_VERSION}; "
                         f"there is nothing to upgrade")
    if old_path == new_path:
        raise StoreError(f"ahdi upgrade writes a new store beside {old_path}; give it "
                         f"another path")
    attrs = old.attrs
    with hold_lock(lock_path(old_path), what=old_path), \
            locked_store(new_path, _listing(old), old.params, old.representations,
                         dataset=str(attrs.get("dataset", "")),
                         source=str(attrs.get("source", ""))) as new:
        report = UpgradeReport(old_path, new_path, int(old.version), {})
        pending = plan_run(new)
        table = old.item_table()
        todo = [i for i in pending if table[i]["status"] in ("done", "failed")]
        report.skipped = new.n_items - len(pending)
        g = new.items_per_shard
        group = open_root(new_path, "r+")
        for shard in sorted({i // g for i in todo}):
            staged = {}
            for i in (i for i in todo if i // g == shard):
                try:
                    staged[i] = _item(old, i, table[i])
                except DamagedChunkError as exc:
                    report.damaged.append(str(exc))
                    continue
                if on_item:
                    on_item(i)
            with shard_lock(new_path, shard):
                write_shard(group, shard, g, staged, new_path)
        finish_run(new_path)
        report.counts = open_store(new_path).counts()
    return report
