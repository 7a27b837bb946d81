"""Read back every chunk a store must have, and repair what a rerun can redo.

``ahdi verify STORE`` is :func:`verify_store`: it decodes the status of
every item, every chunk of every done item (and the error of every failed
one) and the columns written at layout, checking each chunk's checksum and,
in a store of version 2, that no chunk a done item must have is missing.
With ``repair=True`` it takes the store's lock and marks every item with a
bad chunk 'pending' (a damaged status chunk goes too), so the next
``ahdi convert`` redoes exactly those items; and it removes the temporary
files that writes cut short by a kill leave behind.

>>> report = verify_store("out.zarr")                # doctest: +SKIP
>>> print(format_report(report))                     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import zarr

from .errors import DamagedChunkError
from .schema import IMAGE_REPRESENTATIONS, MOTION_CHUNK
from .store import Store, open_store

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
        self.group = zarr.open_group(store.path, mode="r")
        self.report = report
        self.strict = store.version >= 2   # version 1 wrote no chunk of fill values only

    def bad(self, name: str, index: int | None, kind: str,
            reason: str | BaseException) -> None:
        self.report.problems.append(self.store.damage(name, index, kind, reason))

    def present(self, name: str, chunks: Iterable[tuple[int, Sequence[int]]]) -> set[int]:
        """Items (of ``(item, chunk coords)`` pairs) whose chunk file is missing,
        each reported once; nothing is missing in a version-1 store."""
        missing: set[int] = set()
        for i, coords in chunks:
            self.report.chunks += 1
            if not self.strict or i in missing:
                continue
            file = self.store.chunk_file(name, coords)
            if not os.path.exists(file):
                missing.add(i)
                self.bad(name, i, "missing",
                         f"no file {os.path.relpath(file, self.store.path)}")
        return missing

    def rows(self, name: str, rows: Sequence[int], keep: bool = False) -> dict[int, np.ndarray]:
        """Check the one chunk per item of array ``name`` for ``rows``."""
        arr = self.group[name]
        tail = (0,) * (arr.ndim - 1)
        missing = self.present(name, ((i, (i,) + tail) for i in rows))
        ok = [i for i in rows if i not in missing]
        return _decode_rows(arr, ok, lambda i, exc: self.bad(name, i, "damaged", exc), keep)

    def stacks(self, name: str, counts: dict[int, int], chunk: int, inner: int) -> None:
        """Check items' first ``counts[i]`` values along axis 1 (``chunk`` per chunk
        file; ``inner`` zero coordinates after it): the mdv stack, the motion row."""
        arr = self.group[name]
        for i, count in counts.items():
            n_chunks = -(-count // chunk)
            if self.present(name, ((i, (i, k) + (0,) * inner) for k in range(n_chunks))):
                continue
            try:
                arr[i, :n_chunks * chunk]
            except Exception as exc:
                self.bad(name, i, "damaged", exc)

    def column(self, name: str) -> None:
        """Check a column written whole at layout (one chunk)."""
        self.report.chunks += 1
        file = self.store.chunk_file(name, (0,))
        if self.strict and not os.path.exists(file):
            self.bad(name, None, "missing", f"no file {os.path.relpath(file, self.store.path)}")
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
    for name in names:
        check.rows(name, done)
    frames = check.rows("n_frames", done, keep=True)     # and the motion they call for
    check.stacks("motion", {i: int(t) for i, t in frames.items()}, MOTION_CHUNK, 0)
    if "mdv" in reps:
        mdv_counts = check.rows("mdv_count", done, keep=True)
        check.stacks("mdv", {i: int(m) for i, m in mdv_counts.items()}, 1, 3)


def _leftovers(path: str) -> list[str]:
    found = []
    for folder, _dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(folder, f), path) for f in files
                  if f.endswith(_PARTIAL_SUFFIX)]
    return sorted(found)


def _run(store: Store, repair: bool) -> VerifyReport:
    report = VerifyReport(store.path, store.version, store.n_items, store.counts(),
                          repair=repair)
    _check(store, report)
    # columns first, then item by item
    report.problems.sort(key=lambda p: (p.index is not None, p.index or 0, p.array))
    report.leftovers = _leftovers(store.path)
    if repair:
        report.repaired = report.bad_items
        store.mark_pending(report.repaired)
        for rel in report.leftovers:
            try:
                os.unlink(os.path.join(store.path, rel))
            except FileNotFoundError:
                pass
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
