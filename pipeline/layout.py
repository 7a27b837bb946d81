"""Laying an AHDI store out, or reopening one to resume: always under its lock.

:func:`locked_store` checks everything that can be checked (parameters,
representations, video ids, label names, text) before it touches anything;
then it takes the writer lock (``<store>.lock``, beside the store, so it
exists before the store does) and, holding it, lays the store out
(:mod:`ahdi.pipeline.schema` lists the arrays) or reopens a matching one.
A run refused by the lock, or by a store made differently, has written
nothing.

A layout is written in place and recognised as complete by its files
(:func:`ahdi.pipeline.store_files.layout_problem`): one that was interrupted
holds no converted item, so the next run rebuilds it. On resume the item
listing (subjects, sources, label columns) is brought up to date: it is
data, not a reason to recompute, so an edited labels CSV takes effect even
when a column appears, vanishes or changes from numbers to text.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ahdi.kernels.compute import REPRESENTATIONS, check_representations
from ahdi.kernels.params import AhdiParams

from . import remote
from .errors import DatasetError, StoreError
from .lock import hold_lock
from .schema import (COMPRESSORS, COORDINATES, ITEMS_PER_SHARD, READABLE_VERSIONS, RELABELING,
                     STORE_VERSION, ArraySpec, array_specs, check_listing, label_spec,
                     labels_of, listing_columns)
from .shards import staged_items
from .store import Store, upgrade_hint
from .store_files import (clear_folder, consolidate, has_chunks, is_ahdi_store,
                          is_consolidated, layout_problem, lock_path, not_a_store_error,
                          open_root, zarr_store)

__all__ = ["create_store", "locked_store"]

_OVERWRITE_HINT = "use --overwrite to replace it, or another output path"


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
                     dataset: str, source: str, items_per_shard: int) -> dict[str, Any]:
    names, kinds, _columns = labels_of(items)
    return {
        "ahdi_store_version": STORE_VERSION,
        "items_per_shard": int(items_per_shard),
        # xarray makes these arrays coordinates of the item axis
        "coordinates": COORDINATES,
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
    # Every chunk written, even one of fill values only (an all-missing label
    # column): a chunk that is not there is then a damaged store.
    arr = group.create_array(
        spec.name, shape=spec.shape, chunks=spec.chunks, shards=spec.shards, dtype=spec.dtype,
        fill_value=spec.fill_value, compressors=COMPRESSORS,
        dimension_names=list(spec.dims), attributes={"description": spec.description},
        config={"write_empty_chunks": True})
    if spec.values is not None:
        arr[:] = spec.values


def _consolidate(path: str, draft: zarr.Group | None = None) -> None:
    """Consolidate the store's metadata; from ``draft`` (the layout in memory, whose
    root document is copied) rather than by reading every array's document back."""
    if draft is None:
        consolidate(path)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(draft.store)
    _copy_objects(draft.store, zarr_store(path), "zarr.json")


def _copy_objects(source: zarr.abc.store.Store, target: zarr.abc.store.Store,
                  prefix: str) -> None:
    """Copy the objects below ``prefix`` of ``source`` into ``target``: metadata
    documents first (as Zarr writes an array), then chunks, together."""
    prototype = default_buffer_prototype()

    async def put(key: str) -> None:
        await target.set(key, await source.get(key, prototype))

    async def copy() -> None:
        keys = [k async for k in source.list_prefix(prefix)]
        documents = [k for k in keys if k.endswith("zarr.json")]
        await asyncio.gather(*(put(k) for k in documents))
        await asyncio.gather(*(put(k) for k in keys if k not in documents))
    sync(copy())


def _layout(path: str, items: Sequence[Any], params: AhdiParams,
            representations: list[str], dataset: str, source: str,
            items_per_shard: int) -> Store:
    """Lay the store out in the empty (or absent) folder ``path``.

    The root document comes first, so an interrupted layout is an ahdi store
    that :func:`~ahdi.pipeline.store_files.layout_problem` calls incomplete.
    Each array is made in a draft in memory and copied at once: Zarr's own
    ``create_array`` reads and probes the root document (is it a group?) and
    the array's path for every array, 3 requests each on object storage.
    """
    attrs = _root_attributes(items, params, representations, dataset, source,
                             items_per_shard)
    try:
        target = zarr_store(path)
        zarr.open_group(store=target, mode="w-", zarr_format=3, attributes=attrs)
        draft = zarr.open_group(store=zarr.storage.MemoryStore(), mode="w-", zarr_format=3,
                                attributes=attrs)
        for spec in array_specs(items, params, representations, items_per_shard):
            _create_array(draft, spec)
            _copy_objects(draft.store, target, f"{spec.name}/")
        _consolidate(path, draft)
    except OSError as exc:
        raise StoreError(f"cannot lay out store {path}: {exc.strerror or exc}; free the "
                         f"space or fix the folder, then run the same command again "
                         f"(it rebuilds the half-made store)") from exc
    return Store(path, mode="r+")


def _has_items(path: str) -> bool:
    """True once any item of the store at ``path`` has finished (a status chunk
    exists) or was computed (a staged result exists)."""
    return has_chunks(path, "status") or bool(staged_items(path))


def _clear(path: str) -> None:
    """Empty the ahdi store folder ``path``, so that an interruption leaves a store
    :func:`layout_problem` calls incomplete and without items: statuses first,
    the root document last."""
    clear_folder(path, "status", "zarr.json")


# ----------------------------------------------------------------------------
# reopening to resume
# ----------------------------------------------------------------------------
def _mismatch(path: str, attrs: dict[str, Any], params: AhdiParams,
              representations: list[str], video_ids: list[str],
              stored_ids: list[str]) -> str | None:
    """Say how an existing store differs from what was asked, or None."""
    version = attrs.get("ahdi_store_version")
    if version not in READABLE_VERSIONS:
        return (f"store {path} has layout version {version!r}, "
                f"this ahdi writes version {STORE_VERSION}; {_OVERWRITE_HINT}")
    if version != STORE_VERSION:
        return (f"store {path} has layout version {version}, which this ahdi reads but "
                f"does not write: {upgrade_hint(path)} and convert into that, or "
                f"{_OVERWRITE_HINT}")
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


def _replace_label_columns(path: str, items: Sequence[Any]) -> None:
    """Replace every ``label_*`` array and the root's ``labels``/``label_kinds``.

    The root attribute ``RELABELING`` is set first and removed last, so a
    reader never takes a half-replaced listing for a store, and the next run
    finishes the job (readers refuse it meanwhile, naming the fix).
    """
    names, kinds, columns = labels_of(items)
    open_root(path, "r+").attrs.update({RELABELING: True})
    group = open_root(path, "r+", consolidated=False)
    for name in [n for n in group.array_keys() if n.startswith("label_")]:
        del group[name]
    for name in names:
        _create_array(group, label_spec(name, kinds[name], columns[name]))
    group.attrs.update({"labels": names, "label_kinds": kinds})
    _consolidate(path)
    del open_root(path, "r+").attrs[RELABELING]


def _refresh_listing(store: Store, items: Sequence[Any]) -> Store:
    """On resume, bring subjects, sources and label columns up to date.

    They are not computed, so an edited labels CSV or a moved dataset root
    must not leave the old values in a store that is otherwise the same.
    Columns that keep their names and kinds are rewritten in place (only if
    they differ); otherwise every label column is replaced.
    """
    names, kinds, _labels = labels_of(items)
    columns = listing_columns(items)
    store.rewrite_column("subject", columns["subject"])
    store.rewrite_column("source", columns["source"])
    if (names == store.label_names and kinds == store.label_kinds
            and not store.attrs.get(RELABELING)):
        for name in names:
            store.rewrite_column(f"label_{name}", columns[f"label_{name}"])
        return store
    _replace_label_columns(store.path, items)
    return Store(store.path, mode="r+")


def _reopen_why_not(path: str, params: AhdiParams, representations: list[str],
                    video_ids: list[str]) -> tuple[Store | None, str | None]:
    """The ahdi store at ``path`` and why it cannot be resumed as asked (or None)."""
    problem = layout_problem(path)
    if problem == "incomplete":
        if not _has_items(path):
            return None, "its layout was interrupted"
        return None, (f"store {path} lacks arrays its attributes name (damaged, or "
                      f"edited by hand); {_OVERWRITE_HINT}")
    existing = Store(path, mode="r+")
    try:
        stored_ids = [str(v) for v in existing.video_ids()]
    except StoreError as exc:
        return existing, str(exc)
    return existing, _mismatch(path, existing.attrs, params, representations, video_ids,
                               stored_ids)


# ----------------------------------------------------------------------------
# entry points
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


def _is_empty(path: str) -> bool:
    """True when nothing is at ``path`` (no folder, an empty one, no object below a URL)."""
    if remote.is_remote(path):
        return remote.kind(path, StoreError) is None
    return not os.path.lexists(path) or not os.listdir(path)


def _refuse_foreign(path: str) -> None:
    """Refuse a path that holds something other than an ahdi store (or nothing)."""
    if remote.is_remote(path):
        found = remote.kind(path, StoreError)
        if found == "file" or (found == "folder" and not is_ahdi_store(path)):
            raise not_a_store_error(path)
        if found is None:
            remote.check_bucket(path, StoreError)
        return
    if os.path.lexists(path):
        if not os.path.isdir(path) or (not is_ahdi_store(path) and os.listdir(path)):
            raise not_a_store_error(path)
    elif not os.path.isdir(os.path.dirname(path)):
        raise StoreError(f"cannot create store {path}: the folder "
                         f"{os.path.dirname(path)} does not exist")


def _create_or_reopen(path: str, items: list[Any], params: AhdiParams, reps: list[str],
                      video_ids: list[str], dataset: str, source: str,
                      overwrite: bool, items_per_shard: int) -> Store:
    """What :func:`locked_store` does once it holds the lock."""
    _refuse_foreign(path)   # again: the folder may have changed before we took the lock
    if _is_empty(path):
        return _layout(path, items, params, reps, dataset, source, items_per_shard)
    existing, why = _reopen_why_not(path, params, reps, video_ids)
    if why is None:
        if not is_consolidated(path):   # a layout cut short at its very last step
            _consolidate(path)
        return _refresh_listing(existing, items)
    if existing is not None and not overwrite:
        raise StoreError(why)
    if existing is None and _has_items(path) and not overwrite:
        raise StoreError(why)
    _clear(path)
    return _layout(path, items, params, reps, dataset, source, items_per_shard)


@contextlib.contextmanager
def locked_store(path: str | os.PathLike, items: Sequence[Any], params: AhdiParams,
                 representations: Sequence[str], *, dataset: str, source: str,
                 overwrite: bool = False, stale_after: float = 600.0,
                 items_per_shard: int = ITEMS_PER_SHARD) -> Iterator[Store]:
    """Hold the store's lock, lay the store out or reopen it, and yield it.

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
        Replace an existing ahdi store made with other parameters or items,
        or one that cannot be read. A path that is not an ahdi store is
        never removed.
    stale_after : float
        Seconds after which another host's unrefreshed lock is stale
        (:func:`ahdi.pipeline.lock.hold_lock`).
    items_per_shard : int
        G, items per stored object of a new store (a store being resumed
        keeps its own).

    Yields
    ------
    Store
        Opened with ``mode='r+'``, its lock held until the block ends. Every
        array and attribute exists; new items are 'pending'. On resume,
        statuses are kept and the items' subjects, sources and label
        columns are brought up to date (they are not computed).

    Raises
    ------
    StoreError
        The path is not an ahdi store, or is one made differently (without
        ``overwrite``), or another process holds the lock. Nothing was
        written.
    DatasetError
        No items, repeated video ids, a label name or text the store cannot
        hold. Nothing was written.
    ValueError
        Unknown representation.
    """
    path = remote.absolute(os.fspath(path))
    reps = _canonical_representations(representations)
    if not isinstance(params, AhdiParams):
        raise TypeError(f"params must be an AhdiParams, got {type(params).__name__}")
    items = list(items)
    video_ids = _check_items(path, items)
    check_listing(items, path)
    _refuse_foreign(path)   # before the lock: no lock file beside someone else's folder
    with hold_lock(lock_path(path), stale_after=stale_after, what=path):
        yield _create_or_reopen(path, items, params, reps, video_ids, dataset, source,
                                overwrite, items_per_shard)


def create_store(path: str | os.PathLike, items: Sequence[Any], params: AhdiParams,
                 representations: Sequence[str], *, dataset: str, source: str,
                 overwrite: bool = False, items_per_shard: int = ITEMS_PER_SHARD) -> Store:
    """Lay out a new store, or reopen a matching one to resume; then release the lock.

    What :func:`locked_store` does, for a caller that writes afterwards
    without holding the lock (tests, a notebook). Same parameters, result
    and errors.
    """
    with locked_store(path, items, params, representations, dataset=dataset,
                      source=source, overwrite=overwrite,
                      items_per_shard=items_per_shard) as store:
        return store
