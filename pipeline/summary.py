"""Describe a store in words: the dict ``ahdi inspect --json`` prints and its text.

:func:`summary` reads an opened :class:`~ahdi.pipeline.store.Store` into a
JSON-serialisable dict; :func:`format_summary` lays that dict out as the
aligned text ``ahdi inspect`` prints. Nothing here draws: printing a summary
never loads matplotlib.

>>> from ahdi.pipeline.store import open_store                  # doctest: +SKIP
>>> print(format_summary(summary(open_store("out.zarr"))))      # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import DamagedChunkError
from .store import STATUSES, Store

__all__ = ["summary", "format_summary", "format_number", "label_detail"]

#: What a store column reads as where its chunk is damaged (readers pass it
#: as ``unreadable=``): no status, error or warning is spelled so.
UNREADABLE = "\x00unreadable"


def _column(read: Callable[..., np.ndarray], name: str, ids: np.ndarray,
            damaged: list[dict[str, Any]]) -> np.ndarray:
    """A per-item string column; an item whose chunk cannot be read back reads
    as '' and is listed in ``damaged``."""
    values = read(unreadable=UNREADABLE)
    for i in np.flatnonzero(values == UNREADABLE):
        damaged.append({"index": int(i), "video_id": str(ids[i]), "array": name})
        values[i] = ""
    return values


def _json_number(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _label_stats(kind: str, values: np.ndarray) -> dict[str, Any]:
    if kind == "number":
        values = np.asarray(values, dtype=np.float64)
        present = values[np.isfinite(values)]
        out: dict[str, Any] = {"kind": "number", "n_missing": int(values.size - present.size)}
        if present.size:
            out.update(min=_json_number(present.min()), max=_json_number(present.max()),
                       mean=_json_number(present.mean()))
        else:
            out.update(min=None, max=None, mean=None)
        return out
    texts = [str(v) for v in values]
    present = [v for v in texts if v != ""]
    counts = Counter(present)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return {"kind": "text", "n_missing": len(texts) - len(present),
            "n_distinct": len(counts), "values": {k: int(n) for k, n in top}}


def _faces(store: Store, ids: np.ndarray, status: np.ndarray,
           damaged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``[{index, video_id, face_found_share}]`` of the done items with a face
    track (``--crop track`` / ``align``); a damaged chunk is listed in ``damaged``."""
    if not store.has_face_track:
        return []
    done = [int(i) for i in np.flatnonzero(status == "done")]
    try:
        shares = dict(zip(done, store.face_found_shares(done)))
    except DamagedChunkError:   # read item by item to name the damaged ones
        shares = {}
        for i in done:
            try:
                shares[i] = store.face_found_shares([i])[0]
            except DamagedChunkError:
                damaged.append({"index": i, "video_id": str(ids[i]),
                                "array": "face_found_share"})
    return [{"index": i, "video_id": str(ids[i]), "face_found_share": _json_number(v)}
            for i, v in shares.items() if not math.isnan(float(v))]


def summary(store: Store) -> dict[str, Any]:
    """Describe a store as a JSON-serialisable dict (``ahdi inspect --json``).

    Parameters
    ----------
    store : Store
        An opened store (read-only is enough).

    Returns
    -------
    dict
        ``path, dataset, source, created, param_hash, params, versions,
        representations, size, n_items, counts {done, failed, pending},
        labels {name: {kind, n_missing, ...}}, failures [{index, video_id,
        error}], warnings [{index, video_id, warning}], faces [{index,
        video_id, face_found_share}] (done items of ``--crop track`` /
        ``align``: the share of frames showing the face), damaged [{index,
        video_id, array}]``: items whose status, error or warning chunk
        cannot be read back (their status is counted nowhere; ``ahdi
        verify`` checks every chunk). Numeric labels add
        ``min, max, mean`` (None when every value is missing); text labels
        add ``n_distinct`` and ``values``, the ten most frequent values with
        their counts.
    """
    attrs = store.attrs
    ids = store.video_ids()
    damaged: list[dict[str, Any]] = []
    status = _column(store.statuses, "status", ids, damaged)
    errors = _column(store.errors, "error", ids, damaged)
    warns = _column(store.warnings, "warning", ids, damaged)
    counts = {s: int(np.count_nonzero(status == s)) for s in STATUSES}
    kinds = store.label_kinds
    labels = {name: _label_stats(kinds.get(name, "text"), values)
              for name, values in store.labels().items()}
    failures = [{"index": int(i), "video_id": str(ids[i]), "error": str(errors[i])}
                for i in np.flatnonzero(status == "failed")]
    warnings = [{"index": int(i), "video_id": str(ids[i]), "warning": str(warns[i])}
                for i in range(len(ids)) if str(warns[i])]
    faces = _faces(store, ids, status, damaged)
    return {
        "path": store.path,
        "dataset": str(attrs.get("dataset", "")),
        "source": str(attrs.get("source", "")),
        "created": str(attrs.get("created", "")),
        "param_hash": store.param_hash,
        "params": dict(attrs.get("params") or {}),
        "versions": dict(attrs.get("versions") or {}),
        "representations": store.representations,
        "size": store.size,
        "n_items": store.n_items,
        "counts": {k: int(counts.get(k, 0)) for k in ("done", "failed", "pending")},
        "labels": labels,
        "failures": failures,
        "warnings": warnings,
        "faces": faces,
        "damaged": damaged,
    }


def format_number(value: Any) -> str:
    """A label value for people: '-' for missing, integers without '.0', else 4 digits."""
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return "-"
    if value.is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def label_detail(stats: dict[str, Any], sep: str = "  ") -> str:
    """One label's values in a line: ``min/max/mean`` or the most frequent values.

    Parameters
    ----------
    stats : dict
        One entry of ``summary(store)["labels"]``.
    sep : str
        What separates min, max and mean of a numeric label.

    Returns
    -------
    str
        E.g. ``min 0  max 4  mean 1.75`` or ``m: 4, f: 1, ... (3 more)``.
    """
    if stats["kind"] == "number":
        return sep.join(f"{k} {format_number(stats.get(k))}" for k in ("min", "max", "mean"))
    values = stats.get("values") or {}
    body = ", ".join(f"{k}: {n}" for k, n in values.items()) or "-"
    more = stats.get("n_distinct", len(values)) - len(values)
    if more > 0:
        body += f", ... ({more} more)"
    return body


def _indent_more(text: str, pad: str) -> str:
    return ("\n" + pad).join(str(text).splitlines() or [""])


def _head_lines(summary: dict[str, Any]) -> list[str]:
    c = summary["counts"]
    head = [
        ("store", summary["path"]),
        ("dataset", f"{summary['dataset']} (source: {summary['source']})"),
        ("created", summary["created"]),
        ("param hash", summary["param_hash"]),
        ("images", f"{', '.join(summary['representations'])} "
                   f"({summary.get('size', '?')} x {summary.get('size', '?')})"),
        ("items", f"{summary['n_items']}: {c['done']} done, {c['failed']} failed, "
                  f"{c['pending']} pending"),
    ]
    faces = summary.get("faces") or []
    if faces:
        low = min(faces, key=lambda e: e["face_found_share"])
        mean = sum(e["face_found_share"] for e in faces) / len(faces)
        head.append(("faces", f"found on {mean:.0%} of the frames of {len(faces)} tracked "
                              f"items on average; fewest: {low['face_found_share']:.0%} "
                              f"([{low['index']}] {low['video_id']})"))
    width = max(len(k) for k, _ in head)
    return [f"{k:<{width}}  {v}" for k, v in head]


def _message_lines(title: str, entries: list[dict[str, Any]], key: str,
                   most: int | None = None) -> list[str]:
    """A titled block of ``[index] id: message`` lines, continuation lines indented."""
    if not entries:
        return []
    lines = ["", f"{title} ({len(entries)})"]
    for e in entries[:most]:
        lead = f"  [{e['index']}] {e['video_id']}: "
        lines.append(lead + _indent_more(e[key], " " * len(lead)))
    if most is not None and len(entries) > most:
        lines.append(f"  ... and {len(entries) - most} more")
    return lines


def _damaged_lines(summary: dict[str, Any]) -> list[str]:
    entries = summary.get("damaged") or []
    if not entries:
        return []
    lines = ["", f"damaged ({len(entries)}): run ahdi verify {summary['path']} --repair, "
                 f"then the same ahdi convert command"]
    lines += [f"  [{e['index']}] {e['video_id']}: array {e['array']}: damaged chunk"
              for e in entries]
    return lines


def _param_lines(params: dict[str, Any]) -> list[str]:
    if not params:
        return []
    lines = ["", "parameters"]
    pw = max(len(k) for k in params)
    for k, v in params.items():
        shown = ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
        lines.append(f"  {k:<{pw}}  {shown}")
    return lines


def _label_lines(labels: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["", "labels" if labels else "labels  (none)"]
    if labels:
        lw = max(len(k) for k in labels)
        for name, stats in labels.items():
            lines.append(f"  {name:<{lw}}  {stats['kind']:<6}  {label_detail(stats)}  "
                         f"(missing {stats['n_missing']})")
    return lines


def format_summary(summary: dict[str, Any], *, max_warnings: int = 10) -> str:
    """The text ``ahdi inspect`` prints for a :func:`summary`.

    Parameters
    ----------
    summary : dict
        What :func:`summary` returned.
    max_warnings : int
        Most warnings listed; the rest are counted. Failures are all listed.

    Returns
    -------
    str
        Aligned lines, without a trailing newline.
    """
    lines = _head_lines(summary)
    lines += _damaged_lines(summary)
    lines += _message_lines("failures", summary.get("failures") or [], "error")
    lines += _message_lines("warnings", summary.get("warnings") or [], "warning",
                            most=max_warnings)
    lines += _param_lines(summary.get("params") or {})
    lines += _label_lines(summary.get("labels") or {})
    return "\n".join(lines)
