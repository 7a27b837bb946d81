"""The files of an ahdi store: its root document, its completeness, its lock, its objects.

A store is a folder whose root ``zarr.json`` is a Zarr group carrying an
``ahdi_store_version`` attribute (:func:`is_ahdi_store`). It is complete
when every array its attributes call for exists with the columns written at
layout (:func:`layout_problem`); its writer lock is a file beside it
(:func:`lock_path`), so that the lock can be taken before the store exists.
Besides these file checks (cheap enough for every open) and
:func:`chunk_error` (what to say about a chunk that cannot be read), this
is the one place that turns a store path into a Zarr store object
(:func:`zarr_store`) and reads, writes, lists and deletes plain objects in
it (the merge's staged items): every other module goes through these, and
each of them takes a path or a URL (``s3://bucket/x.zarr``: the store's
objects on object storage, through :mod:`ahdi.pipeline.remote`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from typing import Any

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from . import fence, remote
from .errors import DamagedChunkError, StoreError
from .schema import LISTING_COLUMNS, RELABELING, array_names

__all__ = ["lock_path", "read_root_attrs", "is_ahdi_store", "is_consolidated",
           "not_a_store_error", "layout_problem", "LAYOUT_PROBLEMS", "chunk_error",
           "zarr_store", "open_root", "consolidate", "put_object", "get_objects",
           "list_objects", "delete_objects", "remove_folder_if_empty", "has_chunks",
           "leftover_files", "remove_files", "clear_folder"]


# ----------------------------------------------------------------------------
# Zarr store objects and plain objects in them
# ----------------------------------------------------------------------------
def zarr_store(path: str, read_only: bool = False) -> zarr.abc.store.Store:
    """The Zarr store object of the store at ``path`` (a path or a URL): every module
    opens one here."""
    return remote.zarr_store(path, read_only, StoreError)


def _remote_fs(path: str) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a store at a URL."""
    return remote.filesystem(path, StoreError)


def _exist(path: str, keys: Sequence[str]) -> list[bool]:
    """Whether each object ``keys`` of the store at ``path`` exists."""
    if not remote.is_remote(path):
        return [os.path.isfile(os.path.join(path, *k.split("/"))) for k in keys]
    import asyncio

    store = zarr_store(path, read_only=True)

    async def every() -> list[bool]:
        return list(await asyncio.gather(*(store.exists(k) for k in keys)))
    with remote.remote_errors(f"store {path}", StoreError):
        return sync(every()) if keys else []


def open_root(path: str, mode: str = "r", consolidated: bool | None = None) -> zarr.Group:
    """The root group of the store at ``path``; ``consolidated=False`` reads every
    array's own metadata (after it changed), None uses the consolidated copy if any."""
    return zarr.open_group(store=zarr_store(path, read_only=mode == "r"), mode=mode,
                           use_consolidated=consolidated)


def consolidate(path: str) -> None:
    """Rewrite the root's consolidated metadata from every array's own.

    Array metadata changes only under the lock (layout, new label columns,
    the per-frame width), each time followed by this; it lets xarray open
    the store with one read and no warning.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        zarr.consolidate_metadata(zarr_store(path))


def put_object(path: str, key: str, data: bytes) -> None:
    """Write ``data`` as object ``key`` (written whole or not at all)."""
    # LocalStore writes a temporary file and renames it into place.
    sync(zarr_store(path).set(key, default_buffer_prototype().buffer.from_bytes(data)))


def get_objects(path: str, keys: Sequence[str]) -> list[bytes | None]:
    """The objects ``keys`` (None for one that is not there), fetched together."""
    import asyncio

    store = zarr_store(path, read_only=True)
    prototype = default_buffer_prototype()

    async def one(key: str) -> bytes | None:
        buf = await store.get(key, prototype)
        return None if buf is None else buf.to_bytes()

    async def every() -> list[bytes | None]:
        return list(await asyncio.gather(*(one(k) for k in keys)))
    return sync(every()) if keys else []


def list_objects(path: str, prefix: str) -> list[str]:
    """Keys of the objects below ``prefix`` (e.g. ``'.staging/'``), sorted."""
    if remote.is_remote(path):
        fs, root = _remote_fs(path)
        top = f"{root.rstrip('/')}/{prefix.strip('/')}"
        with remote.remote_errors(f"store {path}", StoreError):
            fs.invalidate_cache(top)      # other processes write there
            found = fs.find(top, withdirs=False)
        start = len(root.rstrip("/")) + 1
        return sorted(k[start:] for k in found if k.startswith(top + "/"))
    if not os.path.isdir(os.path.join(path, prefix)):
        return []

    async def collect() -> list[str]:
        return [k async for k in zarr_store(path, read_only=True).list_prefix(prefix)]
    return sorted(sync(collect()))


def delete_objects(path: str, keys: Sequence[str]) -> None:
    """Delete the objects ``keys`` (one that is already gone is fine)."""
    fence.check_write_fence(path)   # fs.rm below bypasses the fenced Zarr store
    if remote.is_remote(path) and keys:
        # one request per 1000 objects instead of one per object
        fs, root = _remote_fs(path)
        with remote.remote_errors(f"store {path}", StoreError):
            fs.rm([f"{root.rstrip('/')}/{k}" for k in keys])
        return
    store = zarr_store(path)
    for key in keys:
        sync(store.delete(key))


def remove_folder_if_empty(path: str, prefix: str) -> None:
    """Remove the folders below ``prefix`` that hold no object any more (object
    storage has no folders)."""
    if remote.is_remote(path):
        return
    top = os.path.join(path, prefix)
    for folder, _dirs, _files in os.walk(top, topdown=False):   # children first
        try:
            os.rmdir(folder)
        except OSError:   # not empty, or gone
            pass


def has_chunks(path: str, array: str) -> bool:
    """True once any chunk of ``array`` is stored (e.g. an item's status)."""
    if remote.is_remote(path):
        return bool(list_objects(path, f"{array}/c/"))
    folder = os.path.join(path, array, "c")
    return os.path.isdir(folder) and bool(os.listdir(folder))


def leftover_files(path: str, suffix: str) -> list[str]:
    """Files below the store at ``path`` whose name ends with ``suffix``, relative
    (none on object storage, where an object is written whole or not at all)."""
    if remote.is_remote(path):
        return []
    found = []
    for folder, _dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(folder, f), path) for f in files
                  if f.endswith(suffix)]
    return sorted(found)


def remove_files(path: str, names: Sequence[str]) -> None:
    """Remove files of the store at ``path`` (relative names); one already gone is fine."""
    if remote.is_remote(path):
        delete_objects(path, names)
        return
    for rel in names:
        try:
            os.unlink(os.path.join(path, rel))
        except FileNotFoundError:
            pass


def clear_folder(path: str, first: str, last: str) -> None:
    """Empty the folder ``path``: entry ``first`` first, ``last`` last, so that an
    interruption leaves what the order promises."""
    if remote.is_remote(path):
        keys = list_objects(path, "")
        top = [k.split("/", 1)[0] for k in keys]
        order = sorted(range(len(keys)), key=lambda k: (top[k] != first, top[k] == last))
        fs, root = _remote_fs(path)
        with remote.remote_errors(f"store {path}", StoreError):
            for group in ([k for k in order if top[k] == first],
                          [k for k in order if top[k] not in (first, last)],
                          [k for k in order if top[k] == last]):
                if group:
                    fs.rm([f"{root.rstrip('/')}/{keys[k]}" for k in group])
        return
    entries = sorted(os.listdir(path), key=lambda e: (e != first, e == last))
    for entry in entries:
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        else:
            os.unlink(full)


# ----------------------------------------------------------------------------
# the store's files
# ----------------------------------------------------------------------------
def lock_path(path: str | os.PathLike) -> str:
    """The writer lock of the store at ``path``: ``<path>.lock``, beside it, so
    that it can be taken before the store exists (a lock object beside a store on
    object storage)."""
    return remote.absolute(os.fspath(path)) + ".lock"


def _root_document(path: str) -> dict[str, Any] | None:
    """The root ``zarr.json`` of the Zarr group at ``path``, or None if it is not one."""
    try:
        if remote.is_remote(path):
            raw = get_objects(path, ["zarr.json"])[0]
            if raw is None:
                return None
            doc = json.loads(raw)
        else:
            with open(os.path.join(path, "zarr.json"), encoding="utf-8") as f:
                doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("node_type") == "group" else None


def read_root_attrs(path: str) -> dict[str, Any] | None:
    """Root attributes of the Zarr group at ``path``, or None if it is not one."""
    attrs = (_root_document(path) or {}).get("attributes")
    return attrs if isinstance(attrs, dict) else None


def is_consolidated(path: str) -> bool:
    """True when the root document at ``path`` carries consolidated metadata."""
    return bool((_root_document(path) or {}).get("consolidated_metadata"))


def is_ahdi_store(path: str) -> bool:
    """True when ``path`` holds a Zarr group with an ``ahdi_store_version`` attribute."""
    attrs = read_root_attrs(path)
    return attrs is not None and "ahdi_store_version" in attrs


def not_a_store_error(path: str) -> StoreError:
    """The error for a path that exists and is not an ahdi store."""
    return StoreError(f"{path} exists and is not an ahdi store "
                      f"(no zarr.json with an 'ahdi_store_version' attribute); "
                      f"choose another output path")


def layout_problem(path: str) -> str | None:
    """Why the ahdi store at ``path`` cannot be read as it is, or None.

    ``'incomplete'``: its layout was interrupted (an array, or the video ids
    or sources written at layout, are missing); no item was converted into
    it yet, so rebuilding it loses nothing. ``'relabeling'``: its label
    columns were being replaced when that was interrupted.
    """
    attrs = read_root_attrs(path) or {}
    if attrs.get(RELABELING):
        return "relabeling"
    version = attrs.get("ahdi_store_version")
    names = array_names(attrs.get("representations") or [], attrs.get("labels") or [],
                        version if isinstance(version, int) else 0)
    keys = [f"{name}/zarr.json" for name in names] + ["video_id/c/0", "source/c/0"]
    return None if all(_exist(path, keys)) else "incomplete"


LAYOUT_PROBLEMS = {
    "incomplete": "was not completely laid out (the command creating it was interrupted); "
                  "run the same ahdi convert command again to rebuild it",
    "relabeling": "had its labels being replaced when that was interrupted; run the same "
                  "ahdi convert command again to finish",
}


def _reason(exc: BaseException) -> str:
    """One line saying why a chunk could not be decoded."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"""\bb(['"])(.*?)\1""", r"\2", text)[:200]


def _repair_hint(path: str, array: str) -> str:
    if array == "video_id":
        return "the store's list of items is lost; convert again with --overwrite"
    if array in LISTING_COLUMNS or array.startswith("label_"):
        return "run the same ahdi convert command again: it rewrites this column"
    return (f"run ahdi verify {path} --repair, then the same ahdi convert command "
            f"to redo the item")


def chunk_error(path: str, array: str, index: int | None, video_id: str, kind: str,
                reason: str | BaseException) -> DamagedChunkError:
    """The error for a ``kind`` ('damaged' or 'missing') chunk of ``array`` of item
    ``index`` (None: a column of the whole store) in the store at ``path``, saying
    how to repair it; ``reason`` is a text or the exception reading it raised."""
    if isinstance(reason, BaseException):
        reason = _reason(reason)
    where = f"item {video_id}: " if index is not None else ""
    return DamagedChunkError(f"store {path}: {where}array {array}: {kind} chunk ({reason}); "
                             f"{_repair_hint(path, array)}", store=path, array=array,
                             index=index, video_id=video_id, kind=kind, reason=reason)
