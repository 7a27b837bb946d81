"""The conversion graph: one Dask task chain per video, one merge per shard, into one store.

Each video is two tasks: ``compute`` (decode -> crop/resize -> Farneback
motion activity -> segmentation -> Numba pooling) and ``stage`` (its result
checked and written as one staged object of the store). Decoding, motion
and pooling share one task on purpose: segmentation needs the whole motion
curve before pooling starts, so the frames are buffered (RAM, then a local
temporary file) between them, and such a buffer must never travel between
workers. What travels to ``stage`` is the small result (a few images, the
per-frame curves and the face track). The tasks are in
:mod:`ahdi.pipeline.tasks`. Then one ``merge`` task per shard of G items,
after that shard's stage tasks, writes the shard's objects (:mod:`ahdi.pipeline.shards`): every
stored object has one writer.

No task raises: a failure is caught, staged as that item's error, and the
other videos go on.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import socket
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

import dask

from ahdi.kernels import AhdiParams
from ahdi.kernels.compute import check_representations

from . import remote, stopping
from .errors import ClusterError, ClusterPathError, SettingError
from .layout import locked_store
from .resume import finish_run, plan_run
from .schema import ITEMS_PER_SHARD
from .store import Store
from .tasks import (ItemOutcome, _MergeFailure, _stage_failure, compute_task, merge_task,
                    stage_task)

__all__ = ["convert", "ConvertReport", "ItemOutcome", "compute_task", "build_graph",
           "stage_nodes", "DEFAULT_SCHEDULER", "LOCAL_SCHEDULERS"]

DEFAULT_SCHEDULER = "threads"
LOCAL_SCHEDULERS = ("threads", "processes", "sync")


@dataclasses.dataclass
class ConvertReport:
    """Summary of a conversion run."""

    store_path: str
    n_items: int
    skipped: int
    outcomes: list[ItemOutcome]
    seconds: float
    dashboard: str | None = None

    @property
    def done(self) -> int:
        return sum(o.status == "done" for o in self.outcomes)

    @property
    def failed(self) -> list[ItemOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

def stage_nodes(store: Store, items: Sequence[Any], indices: Sequence[int],
                params: AhdiParams, representations: Sequence[str], *,
                memory_budget: int = 512 * 2**20, tmp_dir: str | None = None,
                decode_threads: int = 1) -> dict[int, list[tuple[int, Any]]]:
    """One delayed ``compute -> stage`` chain per item index: shard -> [(index, node)]."""
    reps = check_representations(representations)
    # What staging needs of the store, read here once: a stage task opens nothing.
    path, g = store.path, store.items_per_shard
    store_params, store_reps = store.params, store.representations
    stages: dict[int, list[tuple[int, Any]]] = {}
    for index in indices:
        item = items[index]
        name = f"{index:07d}"
        computed = dask.delayed(compute_task, pure=False, name=f"compute-{name}")(
            item, params, reps, memory_budget, tmp_dir, decode_threads)
        stages.setdefault(index // g, []).append((index, dask.delayed(
            stage_task, pure=False, name=f"stage-{name}")(
                computed, path, g, store_params, store_reps, index, item.video_id)))
    return stages


def build_graph(store: Store, items: Sequence[Any], indices: Sequence[int],
                params: AhdiParams, representations: Sequence[str], **options: Any) -> list:
    """:func:`stage_nodes` and one merge per shard after its stage nodes; returns
    the merge nodes. ``options`` are those of :func:`stage_nodes`."""
    stages = stage_nodes(store, items, indices, params, representations, **options)
    return [dask.delayed(merge_task, pure=False, name=f"merge-{shard:06d}")(
        store.path, shard, [node for _index, node in nodes])
        for shard, nodes in sorted(stages.items())]


def _decode_threads(scheduler: str, workers: int | None, n_items: int) -> int:
    # Videos are converted side by side, one per worker; FFmpeg's decoder
    # threads share out only the cores no other video is using. On a
    # cluster each worker already runs one task per core: one thread each.
    if scheduler.startswith("tcp://"):
        return 1
    cores = os.cpu_count() or 1
    busy = min(workers or cores, max(n_items, 1))
    return max(1, cores // busy)


def _check_worker_paths(store_path: str, probe_paths: Sequence[str]) -> str | None:
    # Runs on every worker before the graph: the usual cluster mistake is a
    # store or source on a disk the workers cannot see.
    host = socket.gethostname()
    if remote.is_remote(store_path):
        return remote.worker_problem(store_path, probe_paths, host)
    if not os.path.isdir(store_path):
        return f"worker on {host} cannot see the store folder {store_path}"
    if not os.access(store_path, os.W_OK):
        return f"worker on {host} cannot write to the store folder {store_path}"
    for path in probe_paths:
        try:
            seen = remote.exists(path, ClusterPathError)   # a source may be a URL
        except ClusterPathError as exc:
            return f"worker on {host}: {exc}"
        if not seen:
            return f"worker on {host} cannot see the source {path}"
    return None


def _probe_paths(items: Sequence[Any], limit: int = 3) -> list[str]:
    paths = []
    for item in items[:limit]:
        src = item.source
        paths.append(src.archive if src.archive else src.path)
    return paths


#: Seconds a distributed run waits for a first worker before it gives up.
WORKER_WAIT_S = 60.0




def _run_local(merges: list, scheduler: str, workers: int | None,
               on_outcome: Callable[[ItemOutcome], None]) -> tuple[list[ItemOutcome], list]:
    """Run the graph here; returns the stage outcomes and the merge results."""
    from concurrent.futures import ThreadPoolExecutor

    from dask.callbacks import Callback

    outcomes: list[ItemOutcome] = []

    class _Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, ItemOutcome):
                outcomes.append(result)
                on_outcome(result)

    n_workers = workers or os.cpu_count() or 1
    if scheduler == "sync":
        with _Progress():
            return outcomes, list(dask.compute(*merges, scheduler="sync"))
    # Our own pools: threads are waited for when the run stops (so that the
    # stopped run can merge what they staged), processes stopped at once.
    if scheduler == "threads":
        pool = ThreadPoolExecutor(n_workers, thread_name_prefix="ahdi-convert")
        try:
            with _Progress():
                merged = dask.compute(*merges, scheduler="threads", pool=pool)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return outcomes, list(merged)
    pool = ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=stopping.init_worker_process,
                               initargs=(os.getpid(),))
    try:
        with _Progress():
            merged = dask.compute(*merges, scheduler="processes", pool=pool)
    except BaseException:
        stopping.terminate_pool(pool)
        raise
    pool.shutdown(wait=True)
    return outcomes, list(merged)


def _run_distributed(stages: dict[int, list], address: str, store: Store, items, indices,
                     on_outcome, on_dashboard) -> tuple[list[ItemOutcome], list]:
    """Run the stage tasks on the cluster, and each shard's merge as soon as all its
    stage tasks have ended (a stage task the cluster gave up on is staged as failed
    here first): a merge never waits on a lost task. Returns the stage outcomes
    and the merge results."""
    from distributed import Client, as_completed

    store_path = store.path
    with Client(address, timeout="30s") as client:
        if on_dashboard and client.dashboard_link:
            on_dashboard(client.dashboard_link)
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except TimeoutError:
            raise ClusterError(f"no dask worker joined the scheduler at {address} within "
                               f"{WORKER_WAIT_S:.0f} s; start some with: dask worker "
                               f"{address}") from None
        problems = client.run(_check_worker_paths, store_path,
                              _probe_paths([items[i] for i in indices]))
        bad = sorted({msg for msg in problems.values() if msg})
        if bad:
            raise ClusterPathError("; ".join(bad) + (
                " (give every worker the credentials and network access to the object store)"
                if remote.is_remote(store_path) else " (put the source and the store on a "
                "filesystem every worker mounts at the same path)"))
        nodes = [(shard, index, node) for shard, pairs in sorted(stages.items())
                 for index, node in pairs]
        futures = client.compute([node for _shard, _index, node in nodes])
        which = {future.key: (shard, index)
                 for future, (shard, index, _node) in zip(futures, nodes)}
        left = {shard: len(pairs) for shard, pairs in stages.items()}
        merges = {shard: client.submit(merge_task, store_path, shard, pure=False)
                  for shard, count in sorted(left.items()) if count == 0}
        outcomes = []
        try:
            for future in as_completed(futures):
                shard, index = which[future.key]
                try:
                    outcome = future.result()
                except Exception as exc:
                    # The tasks never raise, so this is the cluster giving up on an
                    # item, e.g. KilledWorker: the video took down every worker that
                    # tried it (a decoder crash, memory). It fails alone.
                    item = items[index]
                    message = _stage_failure(store_path, store.items_per_shard, index, (
                        f"{item.source.describe()}: the cluster gave up on it: "
                        f"{type(exc).__name__}: {exc}"))
                    outcome = ItemOutcome(index, item.video_id, "failed", message)
                outcomes.append(outcome)
                on_outcome(outcome)
                left[shard] -= 1
                if not left[shard]:
                    merges[shard] = client.submit(merge_task, store_path, shard, pure=False)
            merged = []
            for shard, future in sorted(merges.items()):
                try:
                    merged.append(future.result())
                except Exception as exc:   # the cluster gave up on the merge itself
                    merged.append(_MergeFailure(shard, (
                        f"the cluster gave up on writing it: {type(exc).__name__}: {exc}; "
                        f"its result is kept and the next run writes it")))
        except BaseException:
            # Stopped: the cluster drops what has not started; tasks already
            # running finish their item (a staged object) or their shard.
            client.cancel(futures + list(merges.values()))
            raise
        return outcomes, merged


def _failed_merges(outcomes: list[ItemOutcome], merged: list, g: int) -> list[ItemOutcome]:
    """The outcomes, where a shard's merge failed its items' done outcomes failed."""
    failed = {m.shard: m.message for m in merged if isinstance(m, _MergeFailure)}
    return [dataclasses.replace(o, status="failed", error=f"{o.video_id}: {failed[o.index // g]}")
            if o.status == "done" and o.index // g in failed else o for o in outcomes]


def convert(items: Sequence[Any], store_path: str | os.PathLike, params: AhdiParams,
            representations: Sequence[str] = ("ahdi", "mdv"), *, dataset: str = "",
            source: str = "", scheduler: str | None = None, workers: int | None = None,
            overwrite: bool = False, memory_budget: int = 512 * 2**20,
            tmp_dir: str | None = None, decode_threads: int | None = None,
            on_start: Callable[[int, int], None] | None = None,
            on_outcome: Callable[[ItemOutcome], None] | None = None,
            on_dashboard: Callable[[str], None] | None = None,
            items_per_shard: int = ITEMS_PER_SHARD) -> ConvertReport:
    """Convert items into a store (created, or resumed when it matches).

    Parameters
    ----------
    items : sequence of Item
        What :func:`ahdi.pipeline.resolve.resolve_source` returns.
    store_path : path
        Output Zarr store.
    params : AhdiParams
        Method parameters.
    representations : sequence of str
        Any of 'ahdi', 'mdv', 'sdi', 'mean', 'flow'.
    dataset, source : str
        Recorded in the store's attributes.
    scheduler : str, optional
        'threads' (default), 'processes', 'sync', or a ``tcp://HOST:PORT``
        address of a dask.distributed scheduler.
    workers : int, optional
        Local workers (default: every core).
    overwrite : bool
        Replace a store made with other parameters.
    memory_budget : int
        Bytes of frames per video held in RAM before spilling to disk.
    tmp_dir : str, optional
        Temporary folder for spills and archive members.
    decode_threads : int, optional
        FFmpeg decoder threads per video; default: the cores that the
        videos converted side by side leave free (1 on a cluster).
    on_start, on_outcome, on_dashboard : callable, optional
        Progress hooks: (to_do, skipped), each finished item, dashboard URL.
        ``skipped`` counts items done before and items computed by a stopped
        run (merged, not computed again).
    items_per_shard : int
        G, items per stored object of a new store (docs/store.md).

    Returns
    -------
    ConvertReport
    """
    scheduler = scheduler or DEFAULT_SCHEDULER
    if scheduler not in LOCAL_SCHEDULERS and not scheduler.startswith("tcp://"):
        raise SettingError(f"scheduler must be one of {', '.join(LOCAL_SCHEDULERS)} or "
                         f"tcp://HOST:PORT, got {scheduler!r}")
    started = time.perf_counter()
    stopping.reset_stop()
    store_path = remote.absolute(os.fspath(store_path))
    # The lock is taken before the store is created or reopened: a refused
    # run writes nothing.
    with locked_store(store_path, items, params, representations, dataset=dataset,
                      source=source, overwrite=overwrite,
                      items_per_shard=items_per_shard) as store:
        # A resumed store: what a stopped run computed is merged, done items
        # are kept, pending and failed ones redone.
        indices = plan_run(store)
        skipped = len(items) - len(indices)
        if on_start:
            on_start(len(indices), skipped)
        outcomes: list[ItemOutcome] = []
        dashboard = None
        if indices:
            options = dict(memory_budget=memory_budget, tmp_dir=tmp_dir,
                           decode_threads=decode_threads or
                           _decode_threads(scheduler, workers, len(indices)))
            hook = on_outcome or (lambda outcome: None)
            try:
                if scheduler.startswith("tcp://"):
                    def remember(url: str) -> None:
                        nonlocal dashboard
                        dashboard = url
                        if on_dashboard:
                            on_dashboard(url)
                    stages = stage_nodes(store, items, indices, params,
                                         store.representations, **options)
                    outcomes, merged = _run_distributed(stages, scheduler, store, items,
                                                        indices, hook, remember)
                else:
                    merges = build_graph(store, items, indices, params, store.representations,
                                         **options)
                    outcomes, merged = _run_local(merges, scheduler, workers, hook)
            except BaseException:
                # Stopped: in this process nothing runs any more, so what was
                # computed is merged now (the shown statuses are then true);
                # elsewhere the next run merges it.
                if scheduler in ("threads", "sync"):
                    finish_run(store_path)
                raise
            outcomes = _failed_merges(outcomes, merged, store.items_per_shard)
        finish_run(store_path, merge=False)
    outcomes.sort(key=lambda o: o.index)
    return ConvertReport(store_path, len(items), skipped, outcomes,
                         time.perf_counter() - started, dashboard)
