"""Look at a store: a summary, a montage, per-video plots and an HTML page.

Everything here reads an opened :class:`~ahdi.pipeline.store.Store` and returns
plain data or RGB uint8 pictures drawn with OpenCV (no matplotlib), so the
same functions serve ``ahdi inspect``, ``ahdi demo`` and a notebook.

>>> from ahdi.pipeline.store import open_store                  # doctest: +SKIP
>>> store = open_store("out.zarr")                         # doctest: +SKIP
>>> print(format_summary(summary(store)))                  # doctest: +SKIP
>>> save_png("montage.png", montage(store))                # doctest: +SKIP
>>> html_report(store, "report.html")                      # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ahdi.pipeline.store import IMAGE_REPRESENTATIONS, Store

__all__ = [
    "summary",
    "format_summary",
    "montage",
    "video_plot",
    "save_png",
    "export_pngs",
    "html_report",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_INK = (30, 30, 30)
_GREY = (120, 120, 120)
_LIGHT = (225, 225, 225)
_PAPER = (246, 246, 246)
_BLUE = (31, 119, 180)
_RED = (214, 39, 40)
_GREEN = (44, 160, 44)
_TITLES = {"ahdi": "AHDI", "sdi": "SDI", "mean": "mean", "flow": "flow", "mdv": "MDV"}
_PLOT_WIDTH = 760


# ----------------------------------------------------------------------------
# summary
# ----------------------------------------------------------------------------
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
        error}], warnings [{index, video_id, warning}]``. Numeric labels add
        ``min, max, mean`` (None when every value is missing); text labels
        add ``n_distinct`` and ``values``, the ten most frequent values with
        their counts.
    """
    attrs = store.attrs
    ids = store.video_ids()
    status = store.statuses()
    errors = store.errors()
    warns = store.warnings()
    counts = store.counts()
    kinds = store.label_kinds
    labels = {name: _label_stats(kinds.get(name, "text"), values)
              for name, values in store.labels().items()}
    failures = [{"index": int(i), "video_id": str(ids[i]), "error": str(errors[i])}
                for i in np.flatnonzero(status == "failed")]
    warnings = [{"index": int(i), "video_id": str(ids[i]), "warning": str(warns[i])}
                for i in range(len(ids)) if str(warns[i])]
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
    }


def _fmt_number(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value.is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def _indent_more(text: str, pad: str) -> str:
    return ("\n" + pad).join(str(text).splitlines() or [""])


def _label_line(stats: dict[str, Any]) -> str:
    if stats["kind"] == "number":
        body = (f"min {_fmt_number(stats.get('min'))}  max {_fmt_number(stats.get('max'))}  "
                f"mean {_fmt_number(stats.get('mean'))}")
    else:
        values = stats.get("values") or {}
        body = ", ".join(f"{k}: {n}" for k, n in values.items()) or "-"
        more = stats.get("n_distinct", len(values)) - len(values)
        if more > 0:
            body += f", ... ({more} more)"
    return f"{stats['kind']:<6}  {body}  (missing {stats['n_missing']})"


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
    width = max(len(k) for k, _ in head)
    lines = [f"{k:<{width}}  {v}" for k, v in head]

    failures = summary.get("failures") or []
    if failures:
        lines += ["", f"failures ({len(failures)})"]
        for f in failures:
            lead = f"  [{f['index']}] {f['video_id']}: "
            lines.append(lead + _indent_more(f["error"], " " * len(lead)))
    warns = summary.get("warnings") or []
    if warns:
        lines += ["", f"warnings ({len(warns)})"]
        for w in warns[:max_warnings]:
            lead = f"  [{w['index']}] {w['video_id']}: "
            lines.append(lead + _indent_more(w["warning"], " " * len(lead)))
        if len(warns) > max_warnings:
            lines.append(f"  ... and {len(warns) - max_warnings} more")

    params = summary.get("params") or {}
    if params:
        lines += ["", "parameters"]
        pw = max(len(k) for k in params)
        for k, v in params.items():
            shown = ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
            lines.append(f"  {k:<{pw}}  {shown}")

    labels = summary.get("labels") or {}
    lines += ["", "labels" if labels else "labels  (none)"]
    if labels:
        lw = max(len(k) for k in labels)
        for name, stats in labels.items():
            lines.append(f"  {name:<{lw}}  {_label_line(stats)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# drawing helpers
# ----------------------------------------------------------------------------
def _canvas(h: int, w: int, color: tuple[int, int, int] = _WHITE) -> np.ndarray:
    img = np.empty((max(1, h), max(1, w), 3), dtype=np.uint8)
    img[:] = color
    return img


def _text_size(text: str, scale: float, thickness: int = 1) -> tuple[int, int]:
    (w, h), base = cv2.getTextSize(text, _FONT, scale, thickness)
    return w, h + base


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only: replace anything else with '?'."""
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in str(text))


def _fit(text: str, width: int, scale: float, thickness: int = 1, keep: str = "end") -> str:
    """Shorten ``text`` with '..' until it fits ``width`` pixels."""
    text = _ascii(text)
    if _text_size(text, scale, thickness)[0] <= width:
        return text
    for n in range(len(text) - 1, 0, -1):
        short = ".." + text[-n:] if keep == "end" else text[:n] + ".."
        if _text_size(short, scale, thickness)[0] <= width:
            return short
    return ""


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.45,
         color: tuple[int, int, int] = _INK, thickness: int = 1, align: str = "left") -> None:
    """Draw ``text`` with its baseline at ``y``; ``align`` left, center or right of x."""
    text = _ascii(text)
    w, _ = _text_size(text, scale, thickness)
    if align == "center":
        x -= w // 2
    elif align == "right":
        x -= w
    cv2.putText(img, text, (int(x), int(y)), _FONT, scale, color, thickness, cv2.LINE_AA)


def _resize(img: np.ndarray, side: int) -> np.ndarray:
    """Square image to ``side`` pixels: area-averaged down, nearest-neighbour up."""
    if img.shape[0] == side and img.shape[1] == side:
        return img
    interp = cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_NEAREST
    return cv2.resize(img, (side, side), interpolation=interp)


def _title_band(text: str, width: int, scale: float = 0.55) -> np.ndarray:
    band = _canvas(int(30 * scale / 0.55) + 4, width)
    _put(band, _fit(text, width - 16, scale, 1, keep="start"), 8,
         band.shape[0] - 10, scale, _INK, 1)
    return band


def _vstack(parts: Sequence[np.ndarray], color: tuple[int, int, int] = _WHITE) -> np.ndarray:
    width = max(p.shape[1] for p in parts)
    rows = []
    for p in parts:
        if p.shape[1] < width:
            pad = _canvas(p.shape[0], width - p.shape[1], color)
            p = np.concatenate([p, pad], axis=1)
        rows.append(p)
    return np.concatenate(rows, axis=0)


def _nice_ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """Round tick values (1, 2, 5 x 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = np.arange(first, hi + step * 1e-6, step)
    return ticks[(ticks >= lo - 1e-12) & (ticks <= hi + 1e-12)]


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9))) if step < 1 else 0
    if step < 1 and not float(step * 10 ** decimals).is_integer():
        decimals += 1                      # 0.25 -> two decimals
    return f"{v:.{decimals}f}"


def _dashed_hline(img: np.ndarray, x0: int, x1: int, y: int, color, dash: int = 8,
                  gap: int = 5, thickness: int = 1) -> None:
    x = x0
    while x < x1:
        cv2.line(img, (x, y), (min(x + dash, x1), y), color, thickness, cv2.LINE_AA)
        x += dash + gap


# ----------------------------------------------------------------------------
# montage
# ----------------------------------------------------------------------------
def _label_caption(labels: dict[str, np.ndarray], kinds: dict[str, str], i: int,
                   most: int = 3) -> str:
    parts = []
    for name, values in list(labels.items())[:most]:
        v = values[i]
        if kinds.get(name) == "number":
            shown = "-" if not np.isfinite(v) else _fmt_number(v)
        else:
            shown = str(v) or "-"
        parts.append(f"{name}={shown}")
    return "  ".join(parts)


def montage(store: Store, rep: str = "ahdi", indices: Sequence[int] | None = None,
            columns: int | None = None, tile: int | None = None,
            max_items: int = 64) -> np.ndarray:
    """A grid of done items' images, each captioned with its id and labels.

    Parameters
    ----------
    store : Store
        An opened store.
    rep : str
        One of the store's image representations ('ahdi', 'sdi', 'mean',
        'flow'), or 'mdv' for each item's first level-1 window image.
    indices : sequence of int, optional
        Items to show, in order (default all). Failed and pending items are
        skipped.
    columns : int, optional
        Tiles per row (default about square).
    tile : int, optional
        Side of each image in pixels (default ``min(store.size, 160)``).
    max_items : int
        Most tiles drawn; the title says how many were left out.

    Returns
    -------
    np.ndarray
        (H, W, 3) RGB uint8.

    Raises
    ------
    ValueError
        The store holds no ``rep``, or none of the asked items is done.
    """
    if rep not in store.representations:
        raise ValueError(f"store {store.path} holds no {rep!r} images; it holds "
                         f"{', '.join(store.representations)}")
    status = store.statuses()
    asked = list(range(store.n_items)) if indices is None else [int(i) for i in indices]
    for i in asked:
        if not 0 <= i < store.n_items:
            raise ValueError(f"item index {i} out of range for store {store.path} "
                             f"with {store.n_items} items")
    done = [i for i in asked if status[i] == "done"]
    if not done:
        counts = store.counts()
        raise ValueError(f"no done item to show in store {store.path} ({counts['done']} "
                         f"done, {counts['failed']} failed, {counts['pending']} pending "
                         f"of {store.n_items}); convert it first")
    shown = done[:max(1, int(max_items))]
    tile = int(tile) if tile else min(store.size, 160)
    if tile < 8:
        raise ValueError(f"tile must be >= 8 pixels, got {tile}")
    n = len(shown)
    columns = int(columns) if columns else max(1, math.ceil(math.sqrt(n)))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)

    cell_w = max(tile, 110)
    scale = 0.42 if cell_w >= 140 else 0.36
    line_h = _text_size("Ag", scale)[1] + 4
    labels = store.labels()
    kinds = store.label_kinds
    n_lines = 2 if labels else 1
    cap_h = n_lines * line_h + 6
    gap = 6
    cell_h = tile + cap_h

    title = f"{_TITLES.get(rep, rep)}  {store.attrs.get('dataset', '')}  {n} of {store.n_items}"
    if len(done) > n:
        title += f" (+{len(done) - n} done)"
    width = columns * cell_w + (columns + 1) * gap
    head = _title_band(title, max(width, 260), 0.5)
    width = head.shape[1]
    grid = _canvas(rows * cell_h + (rows + 1) * gap, width, _PAPER)

    ids = store.video_ids()
    if rep == "mdv":
        images = [store.mdv(i)[:1] for i in shown]
        images = [m[0] if len(m) else np.zeros((store.size, store.size, 3), np.uint8)
                  for m in images]
    else:
        images = list(store.images(rep, shown))
    for k, (i, img) in enumerate(zip(shown, images)):
        r, c = divmod(k, columns)
        x = gap + c * (cell_w + gap)
        y = gap + r * (cell_h + gap)
        grid[y:y + cell_h, x:x + cell_w] = _WHITE
        xi = x + (cell_w - tile) // 2
        grid[y:y + tile, xi:xi + tile] = _resize(np.asarray(img, dtype=np.uint8), tile)
        ty = y + tile + line_h
        _put(grid, _fit(str(ids[i]), cell_w - 8, scale, 1), x + 4, ty, scale, _INK)
        if labels:
            cap = _label_caption(labels, kinds, i)
            _put(grid, _fit(cap, cell_w - 8, scale, 1, keep="start"), x + 4, ty + line_h,
                 scale, _GREY)
    return _vstack([head, grid])


# ----------------------------------------------------------------------------
# one video
# ----------------------------------------------------------------------------
def _find_item(store: Store, index_or_video_id: int | str) -> int:
    ids = [str(v) for v in store.video_ids()]
    key = index_or_video_id
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= int(key) < len(ids):
            return int(key)
        raise ValueError(f"item index {key} out of range for store {store.path} "
                         f"with {len(ids)} items")
    key = str(key)
    if key in ids:
        return ids.index(key)
    few = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    raise ValueError(f"no video {key!r} in store {store.path}; known ids: {few} "
                     f"({len(ids)} in all)")


def _motion_panel(motion: np.ndarray, eps: float, bounds: np.ndarray, fixed: bool,
                  fps: float, width: int, height: int = 260) -> np.ndarray:
    img = _canvas(height, width)
    left, right, top, bottom = 64, 20, 30, 44
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    t = int(motion.size)
    finite = motion[np.isfinite(motion)]
    ymax = float(finite.max()) if finite.size else 1.0
    if math.isfinite(eps):
        ymax = max(ymax, eps)
    ymax = ymax * 1.08 if ymax > 0 else 1.0
    xmax = float(max(t - 1, 1))

    def px(f: float) -> int:
        return int(round(x0 + (x1 - x0) * f / xmax))

    def py(v: float) -> int:
        return int(round(y1 - (y1 - y0) * v / ymax))

    # grid and ticks
    yt = _nice_ticks(0.0, ymax, 6)
    ystep = float(yt[1] - yt[0]) if yt.size > 1 else 1.0
    for v in yt:
        y = py(v)
        cv2.line(img, (x0, y), (x1, y), _LIGHT, 1)
        cv2.line(img, (x0 - 4, y), (x0, y), _INK, 1)
        _put(img, _tick_label(v, ystep), x0 - 7, y + 4, 0.38, _INK, align="right")
    xt = _nice_ticks(0.0, xmax, 8)
    xstep = float(xt[1] - xt[0]) if xt.size > 1 else 1.0
    for v in xt:
        x = px(v)
        cv2.line(img, (x, y1), (x, y1 + 4), _INK, 1)
        _put(img, _tick_label(v, xstep), x, y1 + 17, 0.38, _INK, align="center")

    # segment bounds (or fixed windows' starts)
    for b in np.asarray(bounds).reshape(-1):
        x = px(min(float(b), xmax))
        cv2.line(img, (x, y0), (x, y1), _GREEN, 1)
    # eps
    if math.isfinite(eps):
        _dashed_hline(img, x0, x1, py(eps), _RED, thickness=1)
    # the curve
    if t >= 1 and finite.size:
        xs = np.round(x0 + (x1 - x0) * np.arange(t) / xmax).astype(np.int32)
        vals = np.where(np.isfinite(motion), motion, 0.0)
        ys = np.round(y1 - (y1 - y0) * vals / ymax).astype(np.int32)
        pts = np.stack([xs, ys], axis=1).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, _BLUE, 2 if t < 400 else 1, cv2.LINE_AA)
    cv2.rectangle(img, (x0, y0), (x1, y1), _INK, 1)

    # axis titles
    frame_title = "frame" + (f"  ({fps:.3g} fps)" if math.isfinite(fps) and fps > 0 else "")
    _put(img, frame_title, (x0 + x1) // 2, height - 8, 0.42, _INK, align="center")
    _put(img, "MA_t (px/frame)", 6, top - 12, 0.42, _INK)
    # legend, top right
    items = [("MA_t", _BLUE, "line"),
             (f"eps = {eps:.3g}" if math.isfinite(eps) else "eps: n/a", _RED, "dash"),
             ("window starts" if fixed else "segment bounds", _GREEN, "line")]
    lx = x1
    for label, color, style in reversed(items):
        tw, _ = _text_size(label, 0.4)
        lx -= tw
        _put(img, label, lx, top - 12, 0.4, _INK)
        lx -= 26
        yy = top - 16
        if style == "dash":
            _dashed_hline(img, lx, lx + 20, yy, color, dash=5, gap=3)
        else:
            cv2.line(img, (lx, yy), (lx + 20, yy), color, 2, cv2.LINE_AA)
        lx -= 14
    return img


def _mdv_strip(mdv: np.ndarray, windows: np.ndarray, width: int,
               max_rows: int = 3) -> np.ndarray:
    m = int(mdv.shape[0])
    gap = 4
    if m == 0:
        band = _title_band("MDV: no level-1 windows", width, 0.5)
        return band
    s = int(mdv.shape[1])
    thumb = (width - gap * (m + 1)) // m
    thumb = int(min(max(thumb, 48), max(s, 64), 120))
    per_row = max(1, (width - gap) // (thumb + gap))
    rows = min(math.ceil(m / per_row), max_rows)
    shown = min(m, rows * per_row)
    caption = thumb >= 56
    cap_h = 16 if caption else 0
    title = f"MDV: {m} level-1 window images" + (
        f" (first {shown} shown)" if shown < m else "")
    band = _title_band(title, width, 0.5)
    grid = _canvas(rows * (thumb + cap_h + gap) + gap, width)
    for k in range(shown):
        r, c = divmod(k, per_row)
        x = gap + c * (thumb + gap)
        y = gap + r * (thumb + cap_h + gap)
        grid[y:y + thumb, x:x + thumb] = _resize(mdv[k], thumb)
        if caption and k < len(windows):
            a, b = int(windows[k][0]), int(windows[k][1])
            _put(grid, _fit(f"{a}-{b}", thumb, 0.36), x + thumb // 2, y + thumb + 12, 0.36,
                 _GREY, align="center")
    return _vstack([band, grid])


def _image_row(images: list[tuple[str, np.ndarray]], width: int) -> np.ndarray:
    gap = 8
    n = len(images)
    s = int(images[0][1].shape[0])
    side = (width - gap * (n + 1)) // n
    side = int(min(side, max(s, 128), 224))
    title_h = 22
    row = _canvas(title_h + side + gap, width)
    x = gap
    for name, img in images:
        _put(row, name, x + side // 2, title_h - 6, 0.5, _INK, align="center")
        row[title_h:title_h + side, x:x + side] = _resize(img, side)
        x += side + gap
    return row


def video_plot(store: Store, index_or_video_id: int | str) -> np.ndarray:
    """One video: its motion curve, MDV strip and images, in one picture.

    Top to bottom: a title (id, status, frames, fps, labels); the motion
    activity MA_t against frame with ``eps`` dashed and the segment
    boundaries as vertical lines (the window starts in fixed mode); the
    MDV window images in a row (with their frame ranges when large enough);
    the AHDI and any SDI, mean and flow images, titled.

    Parameters
    ----------
    store : Store
        An opened store.
    index_or_video_id : int or str
        Item index, or its video id.

    Returns
    -------
    np.ndarray
        (H, W, 3) RGB uint8. A failed or pending item gives a short panel
        saying so (with its error).

    Raises
    ------
    ValueError
        No such item (the message lists a few known ids).
    """
    i = _find_item(store, index_or_video_id)
    width = _PLOT_WIDTH
    row = store.item_table()[i]
    vid = str(row["video_id"])
    status = str(row["status"])
    label_text = _label_caption(store.labels(), store.label_kinds, i, most=8)

    if status != "done":
        parts = [_title_band(f"{vid}  [{i}]  {status}", width, 0.6)]
        msg = str(row.get("error") or "") if status == "failed" else "not converted yet"
        body_lines = []
        for line in (msg.splitlines() or [""]):
            while line:
                cut = len(line)
                while cut > 1 and _text_size(line[:cut], 0.45)[0] > width - 24:
                    cut -= 1
                body_lines.append(line[:cut])
                line = line[cut:]
        body_lines = body_lines[:12] or [""]
        body = _canvas(22 * len(body_lines) + 14, width)
        for k, line in enumerate(body_lines):
            _put(body, line, 12, 24 + 22 * k, 0.45, _RED if status == "failed" else _GREY)
        if label_text:
            parts.append(_title_band(label_text, width, 0.45))
        return _vstack(parts + [body])

    t = int(row["n_frames"])
    fps = float(row["fps"]) if row["fps"] is not None else math.nan
    eps = store.eps(i)
    fixed = store.params.segmentation == "fixed"
    motion = np.asarray(store.motion(i), dtype=np.float64)
    bounds = store.segments(i)
    windows = store.windows(i)
    if fixed and windows.size:
        bounds = np.unique(np.concatenate([windows[:, 0], [t]]))

    head = f"{vid}  [{i}]  {t} frames" + (f", {fps:.3g} fps" if math.isfinite(fps) else "")
    parts = [_title_band(head, width, 0.6)]
    if label_text:
        parts.append(_title_band(label_text, width, 0.45))
    parts.append(_motion_panel(motion, eps, bounds, fixed, fps, width))
    if "mdv" in store.representations:
        parts.append(_mdv_strip(store.mdv(i), windows, width))
    singles = [(_TITLES[r], store.image(r, i)) for r in IMAGE_REPRESENTATIONS
               if r in store.representations]
    if singles:
        parts.append(_image_row(singles, width))
    return _vstack(parts)


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def _png_bytes(rgb: np.ndarray) -> bytes:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return buf.tobytes()


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Write an RGB uint8 image as PNG, creating parent folders.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    ValueError
        ``rgb`` is not an (H, W, 3) uint8 array.
    """
    path = os.fspath(path)
    data = _png_bytes(rgb)
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise OSError(f"cannot write PNG {path}: {exc.strerror or exc}") from exc
    return path


def _safe_name(video_id: str) -> str:
    return str(video_id).replace("/", "__").replace("\\", "__")


def export_pngs(store: Store, out_dir: str | os.PathLike,
                representations: Sequence[str] | None = None) -> list[str]:
    """Write every done item's images as PNG files.

    Files are ``<out_dir>/<rep>/<id>.png`` for the single images and
    ``<out_dir>/mdv/<id>_<k>.png`` for the k-th MDV window image, where
    ``<id>`` is the video id with ``/`` replaced by ``__``.

    Parameters
    ----------
    store : Store
        An opened store.
    out_dir : str or PathLike
        Folder to write into (created).
    representations : sequence of str, optional
        Which to export (default every one the store holds).

    Returns
    -------
    list of str
        The paths written, item by item.

    Raises
    ------
    ValueError
        A representation the store does not hold.
    """
    out_dir = os.fspath(out_dir)
    reps = list(store.representations if representations is None else representations)
    missing = [r for r in reps if r not in store.representations]
    if missing:
        raise ValueError(f"store {store.path} holds no {', '.join(missing)}; it holds "
                         f"{', '.join(store.representations)}")
    ids = store.video_ids()
    done = [int(i) for i in np.flatnonzero(store.statuses() == "done")]
    written: list[str] = []
    for i in done:
        name = _safe_name(ids[i])
        for rep in reps:
            if rep == "mdv":
                for k, img in enumerate(store.mdv(i)):
                    written.append(save_png(os.path.join(out_dir, "mdv", f"{name}_{k}.png"),
                                            img))
            else:
                written.append(save_png(os.path.join(out_dir, rep, f"{name}.png"),
                                        store.image(rep, i)))
    return written


# ----------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1000px;color:#222;background:#fafafa;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:20px 0 6px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 12px 3px 0;text-align:left;
vertical-align:top}th{font-weight:600;color:#555}
code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{white-space:pre-wrap;margin:0}
.done{color:#2c7a2c}.failed{color:#c62828}.pending{color:#777}
.err{background:#fff0f0;border-left:3px solid #c62828;padding:4px 8px}
.warn{background:#fff8e6;border-left:3px solid #e0a000;padding:4px 8px}
img{max-width:100%;height:auto;display:block;image-rendering:auto}
.item{margin:18px 0;padding:8px;background:#fff;border:1px solid #e4e4e4}
.muted{color:#777}
"""


def _data_uri(rgb: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(rgb)).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def html_report(store: Store, path: str | os.PathLike, max_items: int = 200) -> str:
    """Write one self-contained HTML page describing a store.

    The page holds the summary (counts, parameters, labels, failures with
    their messages, warnings), the AHDI montage (or the first image
    representation the store holds) and every item's :func:`video_plot`,
    up to ``max_items`` items. Images are embedded as base64 PNG data URIs
    and the CSS is inline, so the file can be opened or mailed alone.

    Parameters
    ----------
    store : Store
        An opened store.
    path : str or PathLike
        The HTML file to write (parent folders are created).
    max_items : int
        Most items given a plot (and a montage tile); the page says how many
        were left out.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    path = os.fspath(path)
    info = summary(store)
    c = info["counts"]
    ids = [str(v) for v in store.video_ids()]
    status = store.statuses()
    title = f"ahdi store {os.path.basename(info['path'].rstrip(os.sep)) or info['path']}"

    body: list[str] = [f"<h1>{_e(title)}</h1>",
                       f"<p class='muted'><code>{_e(info['path'])}</code></p>"]
    body.append(_html_table([
        ("dataset", _e(f"{info['dataset']} (source: {info['source']})")),
        ("created", _e(info["created"])),
        ("parameter hash", f"<code>{_e(info['param_hash'])}</code>"),
        ("representations", _e(", ".join(info["representations"]))),
        ("image size", _e(f"{info['size']} x {info['size']}")),
        ("items", f"{info['n_items']}: <span class='done'>{c['done']} done</span>, "
                  f"<span class='failed'>{c['failed']} failed</span>, "
                  f"<span class='pending'>{c['pending']} pending</span>"),
    ]))

    if info["failures"]:
        body.append(f"<h2>Failures ({len(info['failures'])})</h2>")
        for f in info["failures"]:
            body.append(f"<div class='err'><b>[{f['index']}] {_e(f['video_id'])}</b>"
                        f"<pre>{_e(f['error'])}</pre></div>")
    if info["warnings"]:
        body.append(f"<h2>Warnings ({len(info['warnings'])})</h2>")
        for w in info["warnings"]:
            body.append(f"<div class='warn'><b>[{w['index']}] {_e(w['video_id'])}</b>"
                        f"<pre>{_e(w['warning'])}</pre></div>")

    body.append("<h2>Parameters</h2>")
    body.append(_html_table([(f"<code>{_e(k)}</code>", _e(v))
                             for k, v in info["params"].items()]))
    if info["versions"]:
        body.append("<p class='muted'>" + _e(", ".join(
            f"{k} {v}" for k, v in info["versions"].items() if v)) + "</p>")

    body.append("<h2>Labels</h2>")
    if info["labels"]:
        rows = []
        for name, st in info["labels"].items():
            if st["kind"] == "number":
                detail = (f"min {_fmt_number(st['min'])}, max {_fmt_number(st['max'])}, "
                          f"mean {_fmt_number(st['mean'])}")
            else:
                detail = ", ".join(f"{k}: {n}" for k, n in st["values"].items()) or "-"
                if st["n_distinct"] > len(st["values"]):
                    detail += f", ... ({st['n_distinct'] - len(st['values'])} more)"
            rows.append((f"<code>{_e(name)}</code>", _e(st["kind"]), _e(detail),
                         _e(f"{st['n_missing']} missing")))
        body.append(_html_table(rows, ("name", "kind", "values", "missing")))
    else:
        body.append("<p class='muted'>none</p>")

    limit = max(0, int(max_items))
    if c["done"]:
        rep = next((r for r in ("ahdi",) + IMAGE_REPRESENTATIONS + ("mdv",)
                    if r in store.representations), store.representations[0])
        body.append(f"<h2>Montage ({_e(_TITLES.get(rep, rep))})</h2>")
        body.append(f"<img alt='montage of {_e(rep)}' "
                    f"src='{_data_uri(montage(store, rep, max_items=max(1, limit)))}'>")

    body.append("<h2>Items</h2>")
    shown = list(range(min(store.n_items, limit)))
    if len(shown) < store.n_items:
        body.append(f"<p class='muted'>first {len(shown)} of {store.n_items} items shown "
                    f"(max_items={limit})</p>")
    for i in shown:
        st = str(status[i])
        body.append(f"<div class='item' id='item-{i}'><h3>[{i}] {_e(ids[i])} "
                    f"<span class='{_e(st)}'>{_e(st)}</span></h3>")
        body.append(f"<img alt='{_e(ids[i])}' src='{_data_uri(video_plot(store, i))}'>")
        body.append("</div>")

    page = ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as exc:
        raise OSError(f"cannot write HTML report {path}: {exc.strerror or exc}") from exc
    return path
