"""OpenCV's ``INTER_AREA`` shrink of uint8 images, byte for byte, in Numba.

``cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)`` takes
one of three paths: a bilinear emulation when a side grows, ``resizeAreaFast``
when both scales are whole numbers (448 -> 224), and otherwise the generic
path of ``ResizeArea_Invoker``: per source row a horizontal pass of weighted
sums into a float32 row buffer, then a float32 accumulation of those rows into
each output row, rounded half to even and saturated. :func:`area_shrink`
reproduces that generic path step by step, in the same float32 operations in
the same order (no fastmath, so no fused multiply-add either), hence the
same bytes. It is cheaper than OpenCV's own loop for two reasons:

- a source row that two output rows share is summed once (OpenCV sums it
  again for each), and
- a crop is read straight from the frame's rows: a view with packed pixels
  is never copied (``cv2.resize`` copies a non-contiguous view first).

``cv2.resize`` stays the reference (``tests/test_area.py`` compares the two
on random shapes and real frames) and handles every other case
(:func:`takes_generic_area` says which). One thread per call: the row
order, and so the result, never depends on how many threads run.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._jit import jit

# OpenCV's threshold for a partial source pixel at a cell's edge
# (computeResizeAreaTab): a sliver thinner than this is left out.
_SLIVER = 1e-3
# OpenCV's test for a whole-number scale (is_area_fast): |scale - round| < DBL_EPSILON.
_DBL_EPSILON = float(np.finfo(np.float64).eps)


def takes_generic_area(src_width: int, src_height: int, width: int, height: int) -> bool:
    """Whether ``cv2.resize`` with ``INTER_AREA`` takes OpenCV's generic path.

    That is the only path :func:`area_shrink` reproduces: neither side grows,
    and the two scales are not both whole numbers. The scales are computed
    as OpenCV computes them (``1 / (dst / src)`` in double precision).

    Parameters
    ----------
    src_width, src_height : int
        Size of the source image in pixels.
    width, height : int
        Target size in pixels.

    Returns
    -------
    bool
        True when both sides shrink or stay and at least one scale is
        fractional.
    """
    if not (0 < width <= src_width and 0 < height <= src_height):
        return False
    scale_x = 1.0 / (width / src_width)
    scale_y = 1.0 / (height / src_height)
    whole = (abs(scale_x - round(scale_x)) < _DBL_EPSILON
             and abs(scale_y - round(scale_y)) < _DBL_EPSILON)
    return not whole


@functools.lru_cache(maxsize=256)
def _area_table(src_size: int, dst_size: int, channels: int):
    """OpenCV's computeResizeAreaTab along one axis.

    Returns
    -------
    tuple of np.ndarray
        ``(src_index, dst_index, alpha)``: entry k adds ``alpha[k]`` times
        source element ``src_index[k]`` to output element ``dst_index[k]``
        (indices already multiplied by ``channels``), ordered by output
        element as OpenCV orders them. Read-only: the cache shares them.
    """
    # Each output element takes the whole source elements of its cell plus at
    # most two partial ones, and the cells do not overlap: at most
    # src_size + 2 * dst_size entries.
    capacity = src_size + 2 * dst_size
    src_index = np.empty(capacity, np.int64)
    dst_index = np.empty(capacity, np.int64)
    alpha = np.empty(capacity, np.float64)
    n = _area_entries(src_size, dst_size, channels, src_index, dst_index, alpha)
    # _horizontal_pass relies on every output element having an entry.
    if n < 0 or np.unique(dst_index[:n]).size != dst_size:
        raise AssertionError(f"area table {src_size} -> {dst_size}: an output without "
                             f"input, or more entries than cells allow")
    # The weights are computed in double and stored as float, as OpenCV does.
    table = (src_index[:n].copy(), dst_index[:n].copy(), alpha[:n].astype(np.float32))
    for array in table:
        array.setflags(write=False)
    return table


@jit
def _area_entries(src_size, dst_size, channels, src_index, dst_index, alpha):
    """Fill the table's entries in OpenCV's order (double precision); returns how many.

    In Numba because a crop whose size changes from frame to frame needs a new
    table per frame: in Python one took 0.5-0.9 ms, more than the shrink itself.
    """
    scale = 1.0 / (dst_size / src_size)
    k = 0
    for dx in range(dst_size):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src_size - fsx1)
        sx2 = min(math.floor(fsx2), src_size - 1)
        sx1 = min(math.ceil(fsx1), sx2)
        if k + (sx2 - sx1) + 2 > src_index.shape[0]:
            return -1  # cannot happen (see _area_table); never write past the arrays
        if sx1 - fsx1 > _SLIVER:
            src_index[k] = (sx1 - 1) * channels
            dst_index[k] = dx * channels
            alpha[k] = (sx1 - fsx1) / cell
            k += 1
        for sx in range(sx1, sx2):
            src_index[k] = sx * channels
            dst_index[k] = dx * channels
            alpha[k] = 1.0 / cell
            k += 1
        if fsx2 - sx2 > _SLIVER:
            src_index[k] = sx2 * channels
            dst_index[k] = dx * channels
            alpha[k] = min(min(fsx2 - sx2, 1.0), cell) / cell
            k += 1
    return k


def _pixel_span(image: np.ndarray) -> tuple[np.ndarray, int]:
    """An (H, W, C) uint8 image as one flat run of bytes and its row stride.

    A view whose pixels are packed within each row (a crop of a bigger
    frame, or a frame with padded rows as PyAV gives them) is read in place:
    the flat run spans the bytes from its first pixel to its last, and the
    kernel skips what lies between its rows. Anything else is copied first.
    A flat C-contiguous run is what makes the kernel fast: Numba indexes it
    without a run-time stride.
    """
    h, w, channels = image.shape
    row = w * channels
    stride = image.strides[0]
    if image.strides[1:] != (channels, 1) or (h > 1 and stride < row):
        image = np.ascontiguousarray(image)
        stride = row
    if image.flags.c_contiguous:
        return image.reshape(-1), row
    span = (h - 1) * stride + row
    return np.lib.stride_tricks.as_strided(image, (span,), (1,)), stride


def area_shrink(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)``, same bytes.

    Parameters
    ----------
    image : np.ndarray
        (H, W) or (H, W, C) uint8 image; any view (a crop of a frame is read
        in place when its pixels are packed within each row).
    width, height : int
        Target size; must take OpenCV's generic area path
        (:func:`takes_generic_area`).

    Returns
    -------
    np.ndarray
        (height, width, C) uint8, C-contiguous; (height, width) for one
        channel, as ``cv2.resize`` returns it.

    Raises
    ------
    ValueError
        For an image that is not 2-D or 3-D uint8, or a size that
        ``cv2.resize`` would not shrink by its generic area path.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"area_shrink needs a 2-D or 3-D uint8 image, got {image.dtype} "
                         f"{image.shape}")
    h, w = image.shape[:2]
    if not takes_generic_area(w, h, width, height):
        raise ValueError(f"area_shrink cannot take {w}x{h} to {width}x{height}: only a "
                         f"shrink by a fractional scale follows OpenCV's generic area path")
    channels = image.shape[2] if image.ndim == 3 else 1
    pixels, row_stride = _pixel_span(image.reshape(h, w, channels))
    out = np.empty((height, width * channels), np.uint8)
    _shrink(pixels, row_stride, out, channels, *_area_table(w, width, channels),
            *_area_table(h, height, 1))
    # cv2.resize's own shapes: one channel comes back 2-D, whatever came in.
    return out.reshape((height, width) if channels == 1 else (height, width, channels))


@jit
def _horizontal_pass(pixels, start, buf, channels, src_index, dst_index, alpha):
    """buf = the weighted sums of the source row at ``pixels[start:]`` (float32).

    Each output element's entries are consecutive in the table, so for one
    and three channels the running sums stay in registers and are stored when
    the output element changes: the same additions in the same order as
    OpenCV's ``buf[d] += S[s] * alpha``, without a store and reload between
    them. Every output element has at least one entry (``_area_table``), so
    every element of ``buf`` is written.
    """
    d_run = dst_index[0]
    if channels == 1:
        t = np.float32(0.0)
        for k in range(src_index.shape[0]):
            d = dst_index[k]
            if d != d_run:
                buf[d_run] = t
                t = np.float32(0.0)
                d_run = d
            t = t + np.float32(pixels[start + src_index[k]]) * alpha[k]
        buf[d_run] = t
    elif channels == 3:
        t0 = t1 = t2 = np.float32(0.0)
        for k in range(src_index.shape[0]):
            d = dst_index[k]
            if d != d_run:
                buf[d_run] = t0
                buf[d_run + 1] = t1
                buf[d_run + 2] = t2
                t0 = t1 = t2 = np.float32(0.0)
                d_run = d
            s = start + src_index[k]
            a = alpha[k]
            t0 = t0 + np.float32(pixels[s]) * a
            t1 = t1 + np.float32(pixels[s + 1]) * a
            t2 = t2 + np.float32(pixels[s + 2]) * a
        buf[d_run] = t0
        buf[d_run + 1] = t1
        buf[d_run + 2] = t2
    else:
        for d in range(buf.shape[0]):
            buf[d] = np.float32(0.0)
        for k in range(src_index.shape[0]):
            s = start + src_index[k]
            d = dst_index[k]
            a = alpha[k]
            for c in range(channels):
                buf[d + c] = buf[d + c] + np.float32(pixels[s + c]) * a


@jit
def _store_row(acc, out_row):
    """saturate_cast<uchar>(float): round half to even, clamp to 0..255."""
    for d in range(acc.shape[0]):
        v = np.rint(acc[d])
        out_row[d] = 0 if v < 0 else (255 if v > 255 else np.uint8(v))


@jit
def _shrink(pixels, row_stride, out, channels, x_src, x_dst, x_alpha, y_src, y_dst, y_alpha):
    """ResizeArea_Invoker over all output rows, in OpenCV's order of operations."""
    width = out.shape[1]
    buf = np.empty(width, np.float32)
    acc = np.zeros(width, np.float32)
    previous = y_dst[0]
    last_row = -1
    for j in range(y_src.shape[0]):
        beta = y_alpha[j]
        dy = y_dst[j]
        sy = y_src[j]
        if sy != last_row:  # a row shared by two output rows: its sums are the same
            _horizontal_pass(pixels, sy * row_stride, buf, channels, x_src, x_dst, x_alpha)
            last_row = sy
        if dy != previous:
            _store_row(acc, out[previous])
            for d in range(width):
                acc[d] = beta * buf[d]
            previous = dy
        else:
            for d in range(width):
                acc[d] = acc[d] + beta * buf[d]
    _store_row(acc, out[previous])
