"""The files of an ahdi store on disk: its root document, its completeness, its lock.

A store is a folder whose root ``zarr.json`` is a Zarr group carrying an
``ahdi_store_version`` attribute (:func:`is_ahdi_store`). It is complete
when every array its attributes call for exists with the columns written at
layout (:func:`layout_problem`); its writer lock is a file beside it
(:func:`lock_path`), so that the lock can be taken before the store exists.
Nothing here opens Zarr: these are file checks cheap enough for every open,
and :func:`chunk_error`, what to say about a chunk file that cannot be read.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from .errors import DamagedChunkError, StoreError
from .schema import LISTING_COLUMNS, RELABELING, array_names

__all__ = ["lock_path", "read_root_attrs", "is_ahdi_store", "is_consolidated",
           "not_a_store_error", "layout_problem", "LAYOUT_PROBLEMS", "chunk_error"]


# ----------------------------------------------------------------------------
# the store's files
# ----------------------------------------------------------------------------
def lock_path(path: str | os.PathLike) -> str:
    """The writer lock of the store at ``path``: ``<path>.lock``, beside it, so
    that it can be taken before the store exists."""
    return os.path.abspath(os.fspath(path)) + ".lock"


def _root_document(path: str) -> dict[str, Any] | None:
    """The root ``zarr.json`` of the Zarr group at ``path``, or None if it is not one."""
    try:
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
    for name in array_names(attrs.get("representations") or [], attrs.get("labels") or []):
        if not os.path.isfile(os.path.join(path, name, "zarr.json")):
            return "incomplete"
    for name in ("video_id", "source"):
        if not os.path.isfile(os.path.join(path, name, "c", "0")):
            return "incomplete"
    return None


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
