"""Read back every chunk a store must have, and repair what a rerun can redo.

``ahdi verify STORE`` is :func:`verify_store`: it decodes the status of
every item, every chunk of every done item (and the error of every failed
one) and the columns written at layout, checking each chunk's checksum and,
from version 2 on, that no chunk a done item must have is missing (in a
version-3 store, inside its shard: each shard's index is read and its
CRC32C checked, and a damaged index names every item of the shard). With
``repair=True`` it takes the store's lock and marks every item with a bad
chunk 'pending' (a damaged status chunk goes too), so the next ``ahdi
convert`` redoes exactly those items; it removes the temporary files that
writes cut short by a kill leave behind, and fits the per-frame arrays to
the longest stored video (a killed run leaves them wide).

>>> report = verify_store("out.zarr")                # doctest: +SKIP
>>> print(format_report(report))                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import zarr

from .chunks import DamagedIndex
from .errors import DamagedChunkError
from .resume import fit_frame_width
from .schema import FACE_ARRAYS, IMAGE_REPRESENTATIONS
from .shards import frame_names, required_chunks
from .store import Store, open_store
from .store_files import leftover_files, open_root, remove_files

__all__ = ["VerifyReport", "verify_store", "format_report", "describe"]

# Zarr's local store writes a chunk to '<chunk>.<uuid>.partial' and renames
# it into place; a kill between the two leaves the temporary file.
_PARTIAL_SUFFIX = ".partial"
# Bytes of decoded chunks read in one call: batches amortise Zarr's per-call cost.
_BATCH_BYTES = 64 * 2**20


@dataclasses.dataclass
class VerifyReport:
    """What :func:`verify_store` found (and repaired)."""

    path: str
    version: int
    n_items: int
    counts: dict[str, int]
    chunks: int = 0
    problems: list[DamagedChunkError] = dataclasses.field(default_factory=list)
    leftovers: list[str] = dataclasses.field(default_factory=list)
    repair: bool = False
    repaired: list[int] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damaged or missing chunk (left-over temporary files are harmless)."""
        return not self.problems

    @property
    def bad_items(self) -> list[int]:
        """Items with a bad chunk, which a rerun redoes once marked pending."""
        return sorted({p.index for p in self.problems if p.index is not None})


def describe(problem: DamagedChunkError) -> str:
    """``item <video_id>: array <name>: damaged chunk (<reason>)`` (no item for a column)."""
    where = f"item {problem.video_id}: " if problem.index is not None else ""
    return f"{where}array {problem.array}: {problem.kind} chunk ({problem.reason})"


# ----------------------------------------------------------------------------
# reading chunks
# ----------------------------------------------------------------------------
def _batch_size(arr: zarr.Array) -> int:
    row = int(np.prod(arr.shape[1:], dtype=np.int64)) * max(1, arr.dtype.itemsize or 8)
    return int(max(1, min(256, _BATCH_BYTES // max(row, 1))))


def _decode_rows(arr: zarr.Array, rows: Sequence[int],
                 on_bad: Callable[[int, BaseException], None],
                 keep: bool = False) -> dict[int, np.ndarray]:
    """Decode the chunks of ``rows`` (whole rows of a per-item array); call
    ``on_bad(row, exc)`` for each row that cannot be read; return the values
    when ``keep``."""
    values: dict[int, np.ndarray] = {}
    step = _batch_size(arr)
    for start in range(0, len(rows), step):
        batch = list(rows[start:start + step])
        try:
            block = np.asarray(arr.oindex[np.asarray(batch, dtype=np.int64)])
        except Exception:  # some chunk of the batch is bad: find which, row by row
            block = None
        for k, i in enumerate(batch):
            if block is not None:
                if keep:
                    values[i] = block[k]
                continue
            try:
                value = np.asarray(arr[i])
            except Exception as exc:  # zarr's codecs share no exception base
                on_bad(i, exc)
                continue
            if keep:
                values[i] = value
    return values


class _Checker:
    """Checks chunks of one store and collects what is wrong."""

    def __init__(self, store: Store, report: VerifyReport) -> None:
        self.store = store
        self.group = open_root(store.path, "r")
        self.presence = store.presence()
        self.report = report
        self.strict = store.version >= 2   # version 1 wrote no chunk of fill values only

    def bad(self, name: str, index: int | None, kind: str,
            reason: str | BaseException) -> None:
        self.report.problems.append(self.store.damage(name, index, kind, reason))

    def present(self, name: str, chunks: Iterable[tuple[int, Sequence[int]]]) -> set[int]:
        """Items (of ``(item, position)`` pairs, the position of a chunk's first
        element) whose chunk is not stored, or whose shard index is damaged, each
        reported once; nothing is missing in a version-1 store."""
        missing: set[int] = set()
        for i, position in chunks:
            self.report.chunks += 1
            if not self.strict or i in missing:
                continue
            try:
                why, kind = self.presence.missing(name, position), "missing"
            except DamagedIndex as exc:
                why, kind = str(exc), "damaged"
            if why:
                missing.add(i)
                self.bad(name, i, kind, why)
        return missing

    def rows(self, name: str, rows: Sequence[int], keep: bool = False) -> dict[int, np.ndarray]:
        """Check the chunk of array ``name`` holding each item of ``rows``."""
        arr = self.group[name]
        missing = self.present(name, ((i, pos) for i in rows
                                      for pos in required_chunks(arr, i)))
        ok = [i for i in rows if i not in missing]
        return _decode_rows(arr, ok, lambda i, exc: self.bad(name, i, "damaged", exc), keep)

    def stacks(self, name: str, needs: dict[int, dict[str, int]]) -> None:
        """Check every chunk of items' stacks along axis 1 (``needs[i]`` gives the
        item's ``n_frames`` or ``windows``): the mdv stack, per-frame arrays."""
        arr = self.group[name]
        for i, need in needs.items():
            positions = required_chunks(arr, i, **need)
            if self.present(name, ((i, pos) for pos in positions)) or not positions:
                continue
            try:
                arr[i, :positions[-1][1] + arr.chunks[1]]
            except Exception as exc:
                self.bad(name, i, "damaged", exc)

    def column(self, name: str) -> None:
        """Check a column written whole at layout (one chunk)."""
        if self.present(name, [(None, (0,))]):
            return
        try:
            self.group[name][:]
        except Exception as exc:
            self.bad(name, None, "damaged", exc)


def _check(store: Store, report: VerifyReport) -> None:
    check = _Checker(store, report)
    for name in ["video_id", "subject", "source"] + [f"label_{n}" for n in store.label_names]:
        check.column(name)
    arr = check.group["status"]
    status = _decode_rows(arr, range(store.n_items),
                          lambda i, exc: check.bad("status", i, "damaged", exc), keep=True)
    report.chunks += store.n_items
    done = [i for i, v in sorted(status.items()) if str(v) == "done"]
    failed = [i for i, v in sorted(status.items()) if str(v) == "failed"]
    check.rows("error", failed)
    reps = store.representations
    names = ["error", "warning", "fps", "eps", "segments", "windows"]
    names += [r for r in reps if r in IMAGE_REPRESENTATIONS]
    names += [name for name in FACE_ARRAYS if name in check.group
              and check.group[name].ndim == 1]   # per item; the per-frame ones below
    for name in names:
        check.rows(name, done)
    frames = check.rows("n_frames", done, keep=True)     # and the curves they call for
    for name in frame_names(check.group):
        check.stacks(name, {i: {"n_frames": int(t)} for i, t in frames.items()})
    if "mdv" in reps:
        mdv_counts = check.rows("mdv_count", done, keep=True)
        check.stacks("mdv", {i: {"windows": int(m)} for i, m in mdv_counts.items()})


def _run(store: Store, repair: bool) -> VerifyReport:
    report = VerifyReport(store.path, store.version, store.n_items, store.counts(),
                          repair=repair)
    _check(store, report)
    # columns first, then item by item
    report.problems.sort(key=lambda p: (p.index is not None, p.index or 0, p.array))
    report.leftovers = leftover_files(store.path, _PARTIAL_SUFFIX)
    if repair:
        report.repaired = report.bad_items
        store.mark_pending(report.repaired)
        remove_files(store.path, report.leftovers)
        fit_frame_width(store.path)
    return report


def verify_store(path: str | os.PathLike, *, repair: bool = False) -> VerifyReport:
    """Read back every chunk a store must have; report (and repair) the bad ones.

    Parameters
    ----------
    path : str or PathLike
        An ahdi store.
    repair : bool
        Hold the store's lock, mark every item with a bad chunk 'pending'
        (the next ``ahdi convert`` redoes it) and remove temporary files of
        writes cut short. Columns written at layout are not per item: the
        report says how to rewrite them.

    Returns
    -------
    VerifyReport
        ``problems`` holds one :class:`~ahdi.pipeline.errors.DamagedChunkError`
        per bad chunk (the first missing chunk of an item's array only);
        ``ok`` is True when there is none.

    Raises
    ------
    StoreError
        Not an ahdi store, or (with ``repair``) another process writes it.
    """
    store = open_store(path, mode="r+" if repair else "r")
    if not repair:
        return _run(store, repair=False)
    with store.lock():
        return _run(store, repair=True)


def format_report(report: VerifyReport) -> str:
    """The lines ``ahdi verify`` prints: one per bad chunk, then a summary."""
    c = report.counts
    lines = [describe(p) for p in report.problems]
    columns = sum(p.index is None for p in report.problems)
    found = (f"{len(report.problems)} bad chunks in {len(report.bad_items)} items"
             + (f" and {columns} columns" if columns else "")) if report.problems else \
        "all readable"
    lines.append(f"store {report.path}: {report.n_items} items ({c['done']} done, "
                 f"{c['failed']} failed, {c['pending']} pending); {report.chunks} chunks "
                 f"checked; {found}")
    if report.version < 2:
        lines.append("store version 1: its chunks carry no checksum and fill-only chunks "
                     "were never written, so only undecodable chunks are found")
    if report.leftovers:
        fate = "removed" if report.repair else "harmless; --repair removes them"
        lines.append(f"{len(report.leftovers)} temporary files of writes cut short ({fate})")
    if report.repaired:
        lines.append(f"marked {len(report.repaired)} items pending: run the same ahdi "
                     f"convert command to redo them")
    elif report.bad_items:
        lines.append(f"run ahdi verify {report.path} --repair, then the same ahdi convert "
                     f"command, to redo {len(report.bad_items)} items")
    if any(p.index is None for p in report.problems):
        lines.append("damaged columns: the same ahdi convert command rewrites subject, "
                     "source and labels; a damaged video_id needs --overwrite")
    return "\n".join(lines)
