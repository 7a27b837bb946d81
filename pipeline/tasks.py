"""The tasks of one item: ``compute`` (decode and compute its images) and ``stage``
(its result checked and staged in the store), and the shard's ``merge``.

:mod:`ahdi.pipeline.graph` wires them into one Dask graph. No task raises:
a failure is caught, staged as that item's error, and the other videos go
on. What travels from ``compute`` to ``stage`` is small: the images, the
per-frame curves, the face track (``--crop track`` / ``align``) and the
warnings; the frames stay in the compute task's buffer.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Any, Sequence

from ahdi.kernels import AhdiParams, compute_ahdi
from ahdi.kernels.params import TRACKED_CROPS

from . import stopping
from .errors import VideoError
from .schema import item_rows, segments_width
from .shards import Staged, merge_staged, stage_failure, stage_item
from .video import open_video

__all__ = ["ItemOutcome", "frame_budgets", "compute_task", "stage_task", "merge_task"]


@dataclasses.dataclass
class ItemOutcome:
    """What became of one item in a run."""

    index: int
    video_id: str
    status: str  # 'done' | 'failed'
    error: str = ""
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclasses.dataclass
class _Failure:
    message: str
    seconds: float


def _pin_threads() -> None:
    # Parallelism comes from converting several videos at once; OpenCV's own
    # thread pool would only oversubscribe the cores. One thread per call
    # also keeps results independent of the machine's core count.
    import cv2

    cv2.setNumThreads(1)
    _tune_malloc()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED = False


def _tune_malloc() -> None:
    # dask.distributed's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536,
    # which also freezes glibc's mmap threshold at 128 kB: every 224 x 224
    # frame (150 kB) a task allocates then becomes an mmap/munmap pair with
    # fresh page faults, measured 1.24x slower per video than the threaded
    # default. Serve such blocks from the heap again and keep up to 64 MB of
    # freed heap per process. glibc only; elsewhere nothing changes.
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 2**20)
    except (OSError, AttributeError):
        pass


def _describe_error(source_name: str, exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, VideoError) or source_name in message:
        return message
    if isinstance(exc, (ValueError, OSError)):
        return f"{source_name}: {message}"
    # An unexpected error: keep its type and the innermost frame for a bug report.
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {where[0].filename}:{where[0].lineno})" if where else ""
    return f"{source_name}: {type(exc).__name__}: {message}{at}"


def frame_budgets(memory_budget: int, crop: str) -> tuple[int, int]:
    """How one video's memory budget is shared: (frames kept by the reader, the
    frame buffer's budget before what the reader still holds is taken off).

    ``face``: half may hold a short clip's frames decoded by the face search,
    so the clip is not decoded twice; the buffer gets what that replay does
    not use (known before the buffer starts: the search ends first).
    ``track`` / ``align``: the follower's queue of raw frames waiting for
    the first face fills before the buffer gets any frame but drains into it
    (and a clip smaller than S x S grows on the way), so both may peak
    together: the queue gets a quarter and the buffer the rest, which keeps
    their sum within the budget. A quarter, because the queue costs only on
    clips whose face shows late (frames beyond it get the centre crop) while
    every tracked clip's buffer would spill sooner with a larger share; at
    512 MB the queue still holds 4 s of 640 x 480 video at 30 fps.
    """
    if crop in TRACKED_CROPS:
        queue = memory_budget // 4
        return queue, memory_budget - queue
    return memory_budget // 2, memory_budget


def compute_task(item, params: AhdiParams, representations: tuple[str, ...],
                 memory_budget: int, tmp_dir: str | None, decode_threads: int = 1):
    """Decode one item and compute its images; returns (result, fps, warnings,
    seconds, face track or None) or _Failure."""
    _pin_threads()
    started = time.perf_counter()
    try:
        kept, buffered = frame_budgets(memory_budget, params.crop)
        with stopping.task_running(), \
                open_video(item.source, params, tmp_dir, decode_threads=decode_threads,
                           replay_budget=kept) as reader:
            # A stopped run leaves between frames; the with-blocks remove temp files.
            result = compute_ahdi(stopping.frames_until_stopped(reader), params, representations,
                                  memory_budget=buffered - reader.replay_bytes,
                                  tmp_dir=tmp_dir)
            return (result, float(reader.fps), tuple(reader.warnings),
                    time.perf_counter() - started, reader.face_track)
    except Exception as exc:  # recorded per item; the graph goes on
        return _Failure(_describe_error(item.source.describe(), exc),
                        time.perf_counter() - started)
    except stopping.ConversionCancelled:
        stopping.leave_worker_process()
        raise   # not a failure: the item stays pending


def stage_task(computed, store_path: str, items_per_shard: int, params: AhdiParams,
               representations: Sequence[str], index: int, video_id: str) -> ItemOutcome:
    """Stage one item's result (or its failure) in the store at ``store_path``, for
    its shard's merge. ``items_per_shard``, ``params`` and ``representations``
    are the store's own (passed in, so that a worker need not open the store)."""
    if isinstance(computed, _Failure):
        message = _stage_failure(store_path, items_per_shard, index, computed.message)
        return ItemOutcome(index, video_id, "failed", message, (), computed.seconds)
    result, fps, warnings, seconds, face = computed
    try:
        rows = item_rows(result, params, representations,
                         segments_width(params), f"item {index} of store {store_path}",
                         face)
        stage_item(store_path, index, items_per_shard,
                   Staged(rows, fps, "\n".join(str(w) for w in warnings)))
    except Exception as exc:
        message = f"{video_id}: writing to the store failed: {type(exc).__name__}: {exc}"
        message = _stage_failure(store_path, items_per_shard, index, message)
        return ItemOutcome(index, video_id, "failed", message, warnings, seconds)
    return ItemOutcome(index, video_id, "done", "", warnings, seconds)


def _stage_failure(store_path: str, items_per_shard: int, index: int, message: str) -> str:
    # Even recording a failure can fail (disk full, store removed): the item
    # then stays pending for the next run, and the run itself goes on.
    try:
        stage_failure(store_path, index, items_per_shard, message)
    except Exception as exc:
        message += (f" (and recording this in the store failed: {type(exc).__name__}: {exc};"
                    f" the item stays pending)")
    return message


@dataclasses.dataclass
class _MergeFailure:
    shard: int
    message: str


def merge_task(store_path: str, shard: int, _stages: Sequence[Any] = ()):
    """Merge one shard's staged items (after ``_stages``, its stage tasks); returns
    what :func:`~ahdi.pipeline.shards.merge_staged` does, or a _MergeFailure."""
    try:
        return merge_staged(store_path, shard)
    except Exception as exc:   # disk full, store removed: the items stay staged
        return _MergeFailure(shard, f"writing to the store failed: {type(exc).__name__}: "
                                    f"{exc}; its result is kept and the next run writes it")
