"""One video in one picture: motion curve, segments, MDV strip and images.

:func:`video_plot` is what ``ahdi inspect --video ID --plot FILE`` writes
and what the HTML page shows per item. It is drawn with matplotlib (a
:class:`~matplotlib.figure.Figure` rendered by Agg, no pyplot, so nobody's
backend or open figures change), imported inside the drawing functions so
that converting a store never loads it.

>>> from ahdi.pipeline.store import open_store                  # doctest: +SKIP
>>> from ahdi.pipeline.figures import save_png                  # doctest: +SKIP
>>> save_png("visit1.png", video_plot(open_store("out.zarr"), "p031/visit1"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .errors import StoreError
from .face_presence import frame_ranges
from .face_settings import FaceTrack
from .figures import REP_TITLES, label_caption, render_figure, resize_square
from .store import IMAGE_REPRESENTATIONS, Store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["video_plot", "find_item"]

_DPI = 100
_PLOT_WIDTH = 760                      # pixels; the HTML page shows it at full size

#: A band's drawing step: it gets the Figure and ``box(x, y, w, h)``, which
#: turns a pixel box measured from the band's top left into figure fractions.
_Draw = Callable[["Figure", Callable[..., list[float]]], None]


def find_item(store: Store, index_or_video_id: int | str) -> int:
    """The index of an item given by index or video id.

    Parameters
    ----------
    store : Store
        An opened store.
    index_or_video_id : int or str
        Item index, or its video id.

    Returns
    -------
    int
        The item's index.

    Raises
    ------
    ValueError
        No such item (the message lists a few known ids).
    """
    ids = [str(v) for v in store.video_ids()]
    key = index_or_video_id
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if 0 <= int(key) < len(ids):
            return int(key)
        raise StoreError(f"item index {key} out of range for store {store.path} "
                         f"with {len(ids)} items")
    key = str(key)
    if key in ids:
        return ids.index(key)
    few = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
    raise StoreError(f"no video {key!r} in store {store.path}; known ids: {few} "
                     f"({len(ids)} in all)")


def _shorten(text: str, most: int = 100) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


class _Bands:
    """Bands stacked top to bottom, sized in pixels, placed on one Figure.

    matplotlib lays figures out in fractions of the figure; the per-video
    figure is a column of fixed-height pieces whose number depends on the
    item, so each band is sized in pixels and placed once the total is known.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.bands: list[tuple[int, _Draw]] = []

    def add(self, height: int, draw: _Draw) -> None:
        self.bands.append((int(height), draw))

    def figure(self) -> Figure:
        from matplotlib.figure import Figure

        total = sum(h for h, _ in self.bands)
        fig = Figure(figsize=(self.width / _DPI, total / _DPI), dpi=_DPI, facecolor="white")
        top = 0
        for height, draw in self.bands:
            def box(x: float, y: float, w: float, h: float, _top: int = top) -> list[float]:
                """A pixel box (from the band's top left) in figure fractions."""
                return [x / self.width, 1 - (_top + y + h) / total, w / self.width, h / total]
            draw(fig, box)
            top += height
        return fig


def _text_band(bands: _Bands, text: str, size: float, height: int, *, color: str = "#1e1e1e",
               title: bool = False) -> None:
    """A line of text; ids, labels and errors are shown as written, never as TeX."""
    def draw(fig, box):
        if title:                       # the suptitle: what a reader of the Figure asks for
            x, y, _, _ = box(8, 4, 0, 0)
            fig.suptitle(text, x=x, y=y, ha="left", va="top", fontsize=size, color=color,
                         parse_math=False)
        else:
            x, y, _, _ = box(8, height / 2, 0, 0)
            fig.text(x, y, text, ha="left", va="center", fontsize=size, color=color,
                     parse_math=False)
    bands.add(height, draw)


def _motion_band(bands: _Bands, motion: np.ndarray, eps: float, bounds: np.ndarray,
                 fixed: bool, fps: float, height: int = 260) -> None:
    """MA_t against frame, eps dashed, segment bounds (or window starts) as lines."""
    left, right, top, bottom = 64, 20, 30, 44

    def draw(fig, box):
        from matplotlib.ticker import MaxNLocator

        ax = fig.add_axes(box(left, top, bands.width - left - right, height - top - bottom))
        t = int(motion.size)
        finite = motion[np.isfinite(motion)]
        ymax = float(finite.max()) if finite.size else 1.0
        if math.isfinite(eps):
            ymax = max(ymax, eps)
        ax.set_ylim(0, ymax * 1.08 if ymax > 0 else 1.0)
        stops = [float(t - 1), 1.0] + [float(b) for b in bounds]
        ax.set_xlim(0, max(stops))
        # Frames are whole numbers: ticks at 2.5 or 7.5 would be mislabelled.
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10], integer=True,
                                                   min_n_ticks=2))
        ax.grid(axis="y", color="#e1e1e1", linewidth=0.8)
        ax.set_axisbelow(True)
        name = "window starts" if fixed else "segment bounds"
        crowded = len(bounds) > 30          # fixed windows: keep the curve readable
        for k, b in enumerate(bounds):
            ax.axvline(float(b), color="tab:green", linewidth=0.8 if crowded else 1,
                       alpha=0.5 if crowded else 1.0, gid="bound",
                       label=name if k == 0 else "_nolegend_")
        if math.isfinite(eps):
            ax.axhline(eps, color="tab:red", linewidth=1, linestyle=(0, (6, 4)),
                       label=f"eps = {eps:.3g}")
        if t and finite.size:
            ax.plot(np.arange(t), motion, color="tab:blue", linewidth=2 if t < 400 else 1,
                    label="MA$_t$", gid="motion")
        ax.set_xlabel("frame" + (f"  ({fps:.3g} fps)" if math.isfinite(fps) and fps > 0
                                 else ""), fontsize=9)
        ax.set_ylabel("MA$_t$ (px/frame)", fontsize=9)
        ax.tick_params(labelsize=8)
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda k: ("MA" not in labels[k],
                                                           "eps" not in labels[k]))
        ax.legend([handles[k] for k in order], [labels[k] for k in order], loc="lower right",
                  bbox_to_anchor=(1, 1), ncol=3, frameon=False, fontsize=8,
                  borderaxespad=0.3)
    bands.add(height, draw)


def _face_band(bands: _Bands, track: FaceTrack, height: int = 200) -> None:
    """The face track under the motion curve: the square's centre x and y and its
    side (source pixels) against frame; frames without a face shaded."""
    left, right, top, bottom = 64, 20, 26, 36
    boxes = np.asarray(track.boxes, dtype=np.float64)
    t = boxes.shape[0]
    faceless = frame_ranges(~np.asarray(track.found, bool))

    def draw(fig, box):
        from matplotlib.ticker import MaxNLocator

        ax = fig.add_axes(box(left, top, bands.width - left - right, height - top - bottom))
        frames = np.arange(t)
        for k, (first, last) in enumerate(faceless):   # 1-based, inclusive
            ax.axvspan(first - 1.5, last - 0.5, color="#d9d9d9", linewidth=0, gid="faceless",
                       label="no face" if k == 0 else "_nolegend_")
        side = boxes[:, 2]
        for values, name, color, gid in ((boxes[:, 0] + side / 2, "centre x", "tab:purple",
                                          "face_x"),
                                         (boxes[:, 1] + side / 2, "centre y", "tab:orange",
                                          "face_y"),
                                         (side, "size", "tab:brown", "face_size")):
            ax.plot(frames, values, color=color, linewidth=1.5 if t < 400 else 1,
                    label=name, gid=gid)
        ax.set_xlim(0, max(t - 1, 1))
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, steps=[1, 2, 5, 10], integer=True,
                                                   min_n_ticks=2))
        ax.grid(axis="y", color="#e1e1e1", linewidth=0.8)
        ax.set_axisbelow(True)
        ax.set_ylabel("face (source px)", fontsize=9)
        ax.set_xlabel("frame", fontsize=9)
        ax.tick_params(labelsize=8)
        share = f"face on {track.found_share:.0%} of frames"
        ax.set_title(share if track.reference >= 0 else "no face found: centre crop",
                     fontsize=9, loc="left", pad=4)
        ax.legend(loc="lower right", bbox_to_anchor=(1, 1), ncol=4, frameon=False,
                  fontsize=8, borderaxespad=0.3)
    bands.add(height, draw)


def _image_axes(fig, rect: list[float], img: np.ndarray, side: int):
    """An axes showing ``img`` resized to its on-screen ``side`` (no resampling blur)."""
    ax = fig.add_axes(rect)
    ax.imshow(resize_square(np.asarray(img, np.uint8), side), interpolation="nearest")
    ax.set_axis_off()
    return ax


def _mdv_bands(bands: _Bands, mdv: np.ndarray, windows: np.ndarray, max_rows: int = 3) -> None:
    """The level-1 window images in rows, each captioned with its frame range."""
    width, gap, m = bands.width, 4, int(mdv.shape[0])
    if m == 0:
        _text_band(bands, "MDV: no level-1 windows", 11, 28)
        return
    thumb = (width - gap * (m + 1)) // m
    thumb = int(min(max(thumb, 48), max(int(mdv.shape[1]), 64), 120))
    per_row = max(1, (width - gap) // (thumb + gap))
    rows = min(math.ceil(m / per_row), max_rows)
    shown = min(m, rows * per_row)
    cap_h = 16 if thumb >= 56 else 0
    _text_band(bands, f"MDV: {m} level-1 window images"
               + (f" (first {shown} shown)" if shown < m else ""), 11, 28)

    def draw(fig, box):
        for k in range(shown):
            r, c = divmod(k, per_row)
            x, y = gap + c * (thumb + gap), gap + r * (thumb + cap_h + gap)
            ax = _image_axes(fig, box(x, y, thumb, thumb), mdv[k], thumb)
            if cap_h and k < len(windows):
                ax.text(0.5, -0.03, f"{int(windows[k][0])}–{int(windows[k][1])}",
                        transform=ax.transAxes, ha="center", va="top", fontsize=8,
                        color="#787878")
    bands.add(rows * (thumb + cap_h + gap) + gap, draw)


def _image_band(bands: _Bands, images: list[tuple[str, np.ndarray]]) -> None:
    gap, title_h, n = 8, 22, len(images)
    side = (bands.width - gap * (n + 1)) // n
    side = int(min(side, max(int(images[0][1].shape[0]), 128), 224))

    def draw(fig, box):
        for k, (name, img) in enumerate(images):
            ax = _image_axes(fig, box(gap + k * (side + gap), title_h, side, side), img, side)
            ax.set_title(name, fontsize=10, pad=4)
    bands.add(title_h + side + gap, draw)


def _not_done_bands(bands: _Bands, status: str, error: str) -> None:
    msg = error if status == "failed" else "not converted yet"
    lines = [piece for line in (msg.splitlines() or [""])
             for piece in (textwrap.wrap(line, 96) or [""])][:12] or [""]
    color = "#c62828" if status == "failed" else "#787878"

    def draw(fig, box):
        x, y, _, _ = box(12, 8, 0, 0)
        fig.text(x, y, "\n".join(lines), ha="left", va="top", fontsize=9, color=color,
                 family="monospace", linespacing=1.5, parse_math=False)
    bands.add(22 * len(lines) + 14, draw)


def _video_figure(store: Store, index_or_video_id: int | str) -> Figure:
    """The matplotlib Figure :func:`video_plot` renders (tests read its texts)."""
    i = find_item(store, index_or_video_id)
    row = store.item_table([i])[0]
    vid, status = str(row["video_id"]), str(row["status"])
    label_text = label_caption(store.labels(), store.label_kinds, i, most=8)
    bands = _Bands(_PLOT_WIDTH)

    if status != "done":
        _text_band(bands, _shorten(f"{vid}  [{i}]  {status}"), 13, 30, title=True)
        if label_text:
            _text_band(bands, _shorten(label_text, 120), 9.5, 24)
        _not_done_bands(bands, status, str(row.get("error") or ""))
        return bands.figure()

    t = int(row["n_frames"])
    fps = float(row["fps"]) if row["fps"] is not None else math.nan
    bounds = store.segments(i)
    windows = store.windows(i)
    fixed = store.params.segmentation == "fixed"
    if fixed and windows.size:
        bounds = np.unique(np.concatenate([windows[:, 0], [t]]))
    head = f"{vid}  [{i}]  {t} frames" + (f", {fps:.3g} fps" if math.isfinite(fps) else "")
    _text_band(bands, _shorten(head), 13, 30, title=True)
    if label_text:
        _text_band(bands, _shorten(label_text, 120), 9.5, 24)
    _motion_band(bands, np.asarray(store.motion(i), dtype=np.float64), store.eps(i),
                 np.asarray(bounds).reshape(-1), fixed, fps)
    track = store.face_track(i) if store.has_face_track else None
    if track is not None and t:
        _face_band(bands, track)
    if "mdv" in store.representations:
        _mdv_bands(bands, store.mdv(i), windows)
    singles = [(REP_TITLES[r], store.image(r, i)) for r in IMAGE_REPRESENTATIONS
               if r in store.representations]
    if singles:
        _image_band(bands, singles)
    return bands.figure()


def video_plot(store: Store, index_or_video_id: int | str) -> np.ndarray:
    """One video: its motion curve, MDV strip and images, in one picture.

    Top to bottom: a title (id, status, frames, fps) and a line of labels;
    the motion activity MA_t against frame (integer ticks) with ``eps``
    dashed and the segment boundaries as vertical lines (the window starts
    in fixed mode); for ``--crop track`` / ``align``, the face track (the
    square's centre and side in source pixels, frames without a face
    shaded); the MDV window images in rows (with their frame ranges
    when large enough); the AHDI and any SDI, mean and flow images, titled.
    Drawn with matplotlib, so ids and labels in any script show as written.

    Parameters
    ----------
    store : Store
        An opened store.
    index_or_video_id : int or str
        Item index, or its video id.

    Returns
    -------
    np.ndarray
        (H, W, 3) RGB uint8, 760 pixels wide. A failed or pending item gives
        a short panel saying so (with its error).

    Raises
    ------
    StoreError
        No such item (the message lists a few known ids).
    DamagedChunkError
        A chunk of the item cannot be read back (the message names it and
        says to run ``ahdi verify --repair``).
    """
    return render_figure(_video_figure(store, index_or_video_id))
