"""Pictures of a store: a montage of its images, and PNG files.

:func:`montage` tiles the stored images with NumPy (captions drawn with
OpenCV) and returns an RGB uint8 array, so it serves ``ahdi inspect``,
``ahdi demo``, the HTML page and a notebook alike. :func:`save_png` is the
one checked PNG write of the package (the trainer's plots use it too) and
:func:`render_figure` turns a matplotlib Figure into pixels with Agg; the
per-video figure is in :mod:`ahdi.pipeline.video_figure`.

>>> from ahdi.pipeline.store import open_store                  # doctest: +SKIP
>>> store = open_store("out.zarr")                              # doctest: +SKIP
>>> save_png("montage.png", montage(store))                     # doctest: +SKIP
>>> export_pngs(store, "pngs/")                                 # doctest: +SKIP

An item whose chunks cannot be read back (a damaged store) is left out of
a montage and an export, with a warning on the ``ahdi.pipeline.figures``
logger that names it and says to run ``ahdi verify --repair``.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np

from .errors import DamagedChunkError, StoreError
from .face_presence import has_face_warning
from .store import Store
from .summary import UNREADABLE, format_number

__all__ = [
    "REP_TITLES",
    "montage",
    "label_caption",
    "resize_square",
    "render_figure",
    "encode_png",
    "save_png",
    "export_pngs",
    "export_name",
    "done_items",
    "readable",
    "face_warned",
]

log = logging.getLogger(__name__)

#: How each representation is titled in pictures.
REP_TITLES = {"ahdi": "AHDI", "sdi": "SDI", "mean": "mean", "flow": "flow", "mdv": "MDV"}

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_INK = (30, 30, 30)
_GREY = (120, 120, 120)
_PAPER = (246, 246, 246)
_FACE_MARK = (230, 120, 0)     # the border of a tile whose item has face warnings


# ----------------------------------------------------------------------------
# montage: NumPy tiles, OpenCV captions
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


def _fit(text: str, width: int, scale: float, keep: str = "end") -> str:
    """Shorten ``text`` with '..' until it fits ``width`` pixels."""
    text = _ascii(text)
    if _text_size(text, scale)[0] <= width:
        return text
    for n in range(len(text) - 1, 0, -1):
        short = ".." + text[-n:] if keep == "end" else text[:n] + ".."
        if _text_size(short, scale)[0] <= width:
            return short
    return ""


def _put(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.45,
         color: tuple[int, int, int] = _INK) -> None:
    """Draw ``text`` left-aligned with its baseline at ``y``."""
    cv2.putText(img, _ascii(text), (int(x), int(y)), _FONT, scale, color, 1, cv2.LINE_AA)


def resize_square(img: np.ndarray, side: int) -> np.ndarray:
    """Square image to ``side`` pixels: area-averaged down, nearest-neighbour up."""
    if img.shape[0] == side and img.shape[1] == side:
        return img
    interp = cv2.INTER_AREA if side < img.shape[0] else cv2.INTER_NEAREST
    return cv2.resize(img, (side, side), interpolation=interp)


def label_caption(labels: dict[str, np.ndarray], kinds: dict[str, str], i: int,
                  most: int = 3) -> str:
    """``name=value`` for item ``i``'s first ``most`` labels ('-' when missing).

    Parameters
    ----------
    labels : dict of str to np.ndarray
        ``store.labels()``.
    kinds : dict of str to str
        ``store.label_kinds`` ('number' or 'text' per label).
    i : int
        Item index.
    most : int
        Most labels shown.
    """
    parts = []
    for name, values in list(labels.items())[:most]:
        v = values[i]
        shown = format_number(v) if kinds.get(name) == "number" else (str(v) or "-")
        parts.append(f"{name}={shown}")
    return "  ".join(parts)


# ----------------------------------------------------------------------------
# damaged items: named and left out
# ----------------------------------------------------------------------------


def done_items(store: Store, indices: Sequence[int] | None = None) -> list[int]:
    """The done items among ``indices`` (all by default), in order; an item
    whose status chunk cannot be read is left out with a warning."""
    status = store.statuses(unreadable=UNREADABLE)
    asked = list(range(store.n_items)) if indices is None else [int(i) for i in indices]
    for i in asked:
        if not 0 <= i < store.n_items:
            raise StoreError(f"item index {i} out of range for store {store.path} "
                             f"with {store.n_items} items")
        if status[i] == UNREADABLE:
            log.warning(f"skipped: {store.damage('status', i, 'damaged', 'cannot be decoded')}")
    return [i for i in asked if status[i] == "done"]


def readable(store: Store, indices: Sequence[int],
             read: Callable[[int], Any]) -> Iterator[tuple[int, Any]]:
    """``(i, read(i))`` for each item whose chunks ``read`` can read back; an
    item with a damaged or missing chunk is skipped with a warning naming it."""
    for i in indices:
        try:
            value = read(i)
        except DamagedChunkError as err:
            log.warning(f"skipped: {err}")
            continue
        yield i, value


def _montage_items(store: Store, rep: str, indices: Sequence[int] | None) -> list[int]:
    """The asked items that are done; errors name the store and the counts."""
    if rep not in store.representations:
        raise StoreError(f"store {store.path} holds no {rep!r} images; it holds "
                         f"{', '.join(store.representations)}")
    done = done_items(store, indices)
    if not done:
        counts = store.counts()
        raise StoreError(f"no done item to show in store {store.path} ({counts['done']} "
                         f"done, {counts['failed']} failed, {counts['pending']} pending "
                         f"of {store.n_items}); convert it first")
    return done


def _montage_images(store: Store, rep: str, done: list[int],
                    most: int) -> list[tuple[int, np.ndarray]]:
    """The first ``most`` done items that read back, with their image."""
    def first_window(i: int) -> np.ndarray:
        # An item's MDV is a stack: its first window image stands for it.
        stack = store.mdv(i)
        return stack[0] if len(stack) else np.zeros((store.size, store.size, 3), np.uint8)

    read = first_window if rep == "mdv" else (lambda i: store.image(rep, i))
    shown = []
    for i, img in readable(store, done, read):
        shown.append((i, img))
        if len(shown) == most:
            break
    return shown


def face_warned(store: Store, indices: Sequence[int]) -> set[int]:
    """Items among ``indices`` whose stored warnings hold a face warning."""
    warnings = store.warnings(unreadable="")
    return {int(i) for i in indices if has_face_warning(warnings[i])}


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
        (H, W, 3) RGB uint8. Captions are drawn with OpenCV's ASCII font:
        other characters show as '?' (the per-video figure draws them).
        Items with face warnings (no face, or not on every frame: see
        :func:`~ahdi.pipeline.face_presence.has_face_warning`) get an orange
        border, explained by a legend line under the title.

    Raises
    ------
    ValueError
        The store holds no ``rep``, or none of the asked items is done.
    """
    done = _montage_items(store, rep, indices)
    tile = int(tile) if tile else min(store.size, 160)
    if tile < 8:
        raise ValueError(f"tile must be >= 8 pixels, got {tile}")
    most = max(1, int(max_items))
    shown = _montage_images(store, rep, done, most)
    if not shown:
        raise StoreError(f"no item of store {store.path} could be read back to show; "
                         f"run ahdi verify {store.path} --repair")
    n = len(shown)
    columns = int(columns) if columns else max(1, math.ceil(math.sqrt(n)))
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)

    cell_w = max(tile, 110)
    scale = 0.42 if cell_w >= 140 else 0.36
    line_h = _text_size("Ag", scale)[1] + 4
    labels = store.labels()
    kinds = store.label_kinds
    cell_h = tile + (2 if labels else 1) * line_h + 6
    gap = 6

    title = f"{REP_TITLES.get(rep, rep)}  {store.attrs.get('dataset', '')}  {n} of {store.n_items}"
    # done items never tried because the limit was reached (not damaged ones)
    left_out = len(done) - done.index(shown[-1][0]) - 1 if n == most else 0
    if left_out:
        title += f" (+{left_out} done)"
    width = max(columns * cell_w + (columns + 1) * gap, 260)
    warned = face_warned(store, [i for i, _img in shown])
    head = _canvas(31 + (line_h + 4 if warned else 0), width)
    _put(head, _fit(title, width - 16, 0.5, keep="start"), 8, 21, 0.5)
    if warned:
        cv2.rectangle(head, (8, 31), (8 + line_h - 4, 31 + line_h - 4), _FACE_MARK, 2)
        _put(head, _fit(f"face warnings: {len(warned)} (ahdi inspect --video ID)",
                        width - line_h - 16, scale), 8 + line_h + 2, 31 + line_h - 5, scale)
    grid = _canvas(rows * cell_h + (rows + 1) * gap, width, _PAPER)

    ids = store.video_ids()
    for k, (i, img) in enumerate(shown):
        r, c = divmod(k, columns)
        x = gap + c * (cell_w + gap)
        y = gap + r * (cell_h + gap)
        grid[y:y + cell_h, x:x + cell_w] = _WHITE
        xi = x + (cell_w - tile) // 2
        if i in warned:   # a border in the gap around the image: the image stays whole
            grid[y - 3:y + tile + 3, max(0, xi - 3):xi + tile + 3] = _FACE_MARK
        grid[y:y + tile, xi:xi + tile] = resize_square(np.asarray(img, dtype=np.uint8), tile)
        ty = y + tile + line_h
        _put(grid, _fit(str(ids[i]), cell_w - 8, scale), x + 4, ty, scale)
        if labels:
            cap = label_caption(labels, kinds, i)
            _put(grid, _fit(cap, cell_w - 8, scale, keep="start"), x + 4, ty + line_h,
                 scale, _GREY)
    return np.concatenate([head, grid], axis=0)


# ----------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------
def render_figure(fig: Any) -> np.ndarray:
    """Draw a matplotlib Figure with Agg, leaving pyplot and the backend alone.

    Returns
    -------
    np.ndarray
        (H, W, 3) RGB uint8, H and W the figure's size in pixels.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) RGB uint8 image.

    Raises
    ------
    ValueError
        ``rgb`` is not an (H, W, 3) uint8 array, or OpenCV cannot encode it.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return buf.tobytes()


def save_png(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Write an RGB uint8 image as PNG, creating parent folders.

    The bytes are encoded in memory and written with Python's own file
    calls, so a failed write raises instead of being reported as a False
    nobody reads (``cv2.imwrite``).

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
    data = encode_png(rgb)
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise OSError(f"cannot write PNG {path}: {exc.strerror or exc}") from exc
    return path


def export_name(index: int, video_id: str, n_items: int) -> str:
    """A file name stem for one item: its index (zero-padded to the store's
    count) and its id with every character but letters, digits, ``.``,
    ``-`` and ``_`` turned into ``_``, cut to 80 characters. The index
    keeps two ids that sanitise alike (``x/y``, ``x__y``, ``x\\y``) apart."""
    width = len(str(max(n_items - 1, 0)))
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(video_id)).strip(".")[:80]
    return f"{index:0{width}d}_{safe}" if safe else f"{index:0{width}d}"


def export_pngs(store: Store, out_dir: str | os.PathLike,
                representations: Sequence[str] | None = None) -> list[str]:
    """Write every done item's images as PNG files.

    Files are ``<out_dir>/<rep>/<name>.png`` for the single images and
    ``<out_dir>/mdv/<name>_<k>.png`` for the k-th MDV window image, where
    ``<name>`` is :func:`export_name` (index and sanitised id): distinct
    for every item and the same every time. An item whose chunks cannot be
    read back is skipped with a warning naming it.

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
    StoreError
        A representation the store does not hold.
    OSError
        A file cannot be written (the message names it).
    """
    out_dir = os.fspath(out_dir)
    reps = list(store.representations if representations is None else representations)
    missing = [r for r in reps if r not in store.representations]
    if missing:
        raise StoreError(f"store {store.path} holds no {', '.join(missing)}; it holds "
                         f"{', '.join(store.representations)}")
    ids = store.video_ids()

    def images(i: int) -> dict[str, Any]:     # read all first: a damaged item writes nothing
        return {rep: store.mdv(i) if rep == "mdv" else store.image(rep, i) for rep in reps}

    written: list[str] = []
    for i, item in readable(store, done_items(store), images):
        name = export_name(i, ids[i], store.n_items)
        for rep, value in item.items():
            if rep == "mdv":
                written += [save_png(os.path.join(out_dir, "mdv", f"{name}_{k}.png"), img)
                            for k, img in enumerate(value)]
            else:
                written.append(save_png(os.path.join(out_dir, rep, f"{name}.png"), value))
    return written
