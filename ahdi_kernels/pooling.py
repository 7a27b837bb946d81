"""Patch-wise rank pooling: the Numba kernels and their thin public wrappers.

Public functions check their inputs and choose dtypes; the loops are the
private ``_`` kernels beside them (compiled once, cached on disk).
"""

from __future__ import annotations

import cv2
import numpy as np

from ._jit import jit
from .arp import arp_coefficients

DELTA = 1e-6  # keeps W_q finite where no window moves at all


@jit
def _accumulate_rows(frames, member_row, member_coef, out, block):
    # frames: (T, P) uint8; member_row/member_coef: (T, K) which output rows
    # frame t is added to, with which coefficient (-1 ends the list);
    # out: (R, P) float64, zeroed. Pixels are visited in blocks so the R
    # accumulator slices stay in cache while every frame's block is read
    # exactly once; per pixel the frames are summed in time order, so the
    # result does not depend on the block size. The 1-D slices let LLVM
    # vectorise the innermost loop (4x faster than 2-D indexing).
    n_frames, n_pixels = frames.shape
    n_members = member_row.shape[1]
    for p0 in range(0, n_pixels, block):
        p1 = min(p0 + block, n_pixels)
        for t in range(n_frames):
            src = frames[t, p0:p1]
            for k in range(n_members):
                row = member_row[t, k]
                if row < 0:
                    break
                c = member_coef[t, k]
                dst = out[row, p0:p1]
                for i in range(src.shape[0]):
                    dst[i] += c * src[i]


def _membership(n_frames: int, rows: list[tuple[int, int, np.ndarray]]):
    # For each frame, the output rows it contributes to and the coefficient.
    counts = np.zeros(n_frames, np.int64)
    for start, stop, _ in rows:
        counts[start:stop] += 1
    width = max(1, int(counts.max()))
    member_row = np.full((n_frames, width), -1, np.int64)
    member_coef = np.zeros((n_frames, width), np.float64)
    filled = np.zeros(n_frames, np.int64)
    for r, (start, stop, coef) in enumerate(rows):
        t = np.arange(start, stop)
        member_row[t, filled[t]] = r
        member_coef[t, filled[t]] = coef
        filled[t] += 1
    return member_row, member_coef


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    return frames


def rank_pool_windows(frames: np.ndarray, windows: np.ndarray, *, with_sdi: bool = False,
                      with_mean: bool = False, block: int = 4096) -> dict[str, np.ndarray]:
    """Approximate rank pooling of every window in one pass over the frames.

    Parameters
    ----------
    frames : np.ndarray
        (T, H, W, 3) uint8 frames. Each frame is read once, scaled to
        [0, 1] and added into the windows it belongs to; no float copy of
        the video is made.
    windows : np.ndarray
        (M, 2) ``[start, stop)`` frame ranges, each at least 2 frames long.
    with_sdi : bool
        Also pool all T frames (Bilen's dynamic image, no patch).
    with_mean : bool
        Also the per-pixel mean of the frames.
    block : int
        Pixels per cache block (does not change the result).

    Returns
    -------
    dict
        ``'windows'``: (M, H, W, 3) float64 ARP images (before the box mean);
        ``'sdi'`` and ``'mean'``: (H, W, 3) float64 when asked for.
    """
    frames = _check_frames(frames)
    return rank_pool_chunks([frames], frames.shape[0], frames.shape[1:], windows,
                            with_sdi=with_sdi, with_mean=with_mean, block=block)


def rank_pool_chunks(chunks, n_frames: int, frame_shape: tuple[int, ...], windows: np.ndarray,
                     *, with_sdi: bool = False, with_mean: bool = False,
                     block: int = 4096) -> dict[str, np.ndarray]:
    """:func:`rank_pool_windows` over frames that arrive in consecutive chunks.

    Parameters
    ----------
    chunks : iterable of np.ndarray
        (k, H, W, 3) uint8 arrays holding frames 0..T-1 in time order (e.g.
        :meth:`FrameBuffer.chunks`); each is used before the next is asked
        for, so only one chunk need be in memory. Per pixel the frames are
        still summed in time order: the result is bit-identical to one array.
    n_frames : int
        Total number of frames T.
    frame_shape : tuple of int
        (H, W, 3).
    windows, with_sdi, with_mean, block
        As in :func:`rank_pool_windows`.
    """
    if n_frames < 2:
        raise ValueError(f"rank pooling needs at least 2 frames, got {n_frames}")
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    rows = []
    for start, stop in windows:
        if not 0 <= start < stop <= n_frames or stop - start < 2:
            raise ValueError(f"window [{start}, {stop}) is not a range of at least 2 "
                             f"frames within 0..{n_frames}")
        rows.append((int(start), int(stop), arp_coefficients(stop - start) / 255.0))
    if with_sdi:
        rows.append((0, n_frames, arp_coefficients(n_frames) / 255.0))
    if with_mean:
        rows.append((0, n_frames, np.full(n_frames, 1.0 / (255.0 * n_frames))))
    member_row, member_coef = _membership(n_frames, rows)
    frame_shape = tuple(frame_shape)
    out = np.zeros((len(rows), int(np.prod(frame_shape))), np.float64)
    t0 = 0
    for chunk in chunks:
        chunk = _check_frames(chunk)
        t1 = t0 + chunk.shape[0]
        if chunk.shape[1:] != frame_shape or t1 > n_frames:
            raise ValueError(f"chunk of frames {t0}..{t1} with shape {chunk.shape[1:]} does "
                             f"not fit {n_frames} frames of {frame_shape}")
        _accumulate_rows(chunk.reshape(chunk.shape[0], -1), member_row[t0:t1],
                         member_coef[t0:t1], out, int(block))
        t0 = t1
    if t0 != n_frames:
        raise ValueError(f"chunks held {t0} frames, expected {n_frames}")
    out = out.reshape((len(rows),) + frame_shape)
    result = {"windows": out[: len(windows)]}
    if with_sdi:
        result["sdi"] = out[len(windows)]
    if with_mean:
        result["mean"] = out[-1]
    return result


def box_mean(image: np.ndarray, patch: int, out: np.ndarray | None = None) -> np.ndarray:
    """p x p box mean over the two spatial axes, border ``fedcba|abcdef``.

    Parameters
    ----------
    image : np.ndarray
        (H, W) or (H, W, C) image (computed in float64).
    patch : int
        Odd side p >= 1, at most the image's smaller side.
    out : np.ndarray, optional
        C-contiguous float64 array of the same shape to write into; may be
        ``image`` itself (in place). Reusing memory matters: a fresh 1 MB
        result costs more in page faults than the filter itself.

    Returns
    -------
    np.ndarray
        float64 image of the same shape (``out`` when given).

    Notes
    -----
    ``cv2.boxFilter`` with ``BORDER_REFLECT``: a fused Numba running-sum
    version was measured 10x slower (1.2 ms against 0.12 ms on 224 x 224 x 3).
    """
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be an odd integer >= 1, got {patch}")
    image = np.ascontiguousarray(image, dtype=np.float64)
    if image.ndim not in (2, 3):
        raise ValueError(f"box_mean needs an (H, W) or (H, W, C) image, got {image.shape}")
    if min(image.shape[:2]) < patch:
        raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} is smaller than "
                         f"the {patch}x{patch} patch")
    if out is None:
        out = np.empty_like(image)
    elif out.shape != image.shape or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {image.shape}")
    if patch == 1:
        out[...] = image
        return out
    if image.ndim == 3 and image.shape[2] > 4:
        for c in range(image.shape[2]):
            out[..., c] = box_mean(image[..., c], patch)
        return out
    cv2.boxFilter(image, -1, (patch, patch), dst=out, normalize=True,
                  borderType=cv2.BORDER_REFLECT)
    return out


@jit
def _channel_mean_abs(images, out):
    # images: (M, H, W, C) -> out (M, H, W): mean over channels of |x|.
    m, h, w, c = images.shape
    for q in range(m):
        for y in range(h):
            for x in range(w):
                s = 0.0
                for k in range(c):
                    s += abs(images[q, y, x, k])
                out[q, y, x] = s / c


@jit
def _normalise_weights(energy, delta):
    # energy: (M, H, W) -> in place W_q = E_q / (sum_r E_r + delta), summing
    # the windows in a fixed order.
    m, h, w = energy.shape
    for y in range(h):
        for x in range(w):
            total = delta
            for q in range(m):
                total += energy[q, y, x]
            for q in range(m):
                energy[q, y, x] /= total


def information_weights(images: np.ndarray, patch: int, delta: float = DELTA) -> np.ndarray:
    """Per-pixel weights of the window images (spec step 5).

    Parameters
    ----------
    images : np.ndarray
        (M, H, W, 3) float64 window images D_q.
    patch : int
        Side of the box mean giving each patch's local dynamic energy.
    delta : float
        Added to the denominator so static pixels get weight 0, not NaN.

    Returns
    -------
    np.ndarray
        (M, H, W) float64 ``W_q = E_q / (sum_r E_r + delta)`` with
        ``E_q = box_mean(mean_c |D_q|)``.
    """
    images = np.ascontiguousarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"window images must have shape (M, H, W, C), got {images.shape}")
    energy = np.empty(images.shape[:3], np.float64)
    _channel_mean_abs(images, energy)
    for q in range(energy.shape[0]):
        box_mean(energy[q], patch, out=energy[q])
    _normalise_weights(energy, float(delta))
    return energy


@jit
def _weighted_sum(images, weights, coef, out):
    # out = sum_q coef[q] * weights[q] * images[q], summed in window order.
    m, h, w, c = images.shape
    for y in range(h):
        for x in range(w):
            for k in range(c):
                s = 0.0
                for q in range(m):
                    s += coef[q] * weights[q, y, x] * images[q, y, x, k]
                out[y, x, k] = s


def combine_windows(images: np.ndarray, patch: int, level2: str = "weighted") -> np.ndarray:
    """Combine window images into one (spec step 6).

    Parameters
    ----------
    images : np.ndarray
        (M, H, W, 3) float64 window images.
    patch : int
        Patch side for the information weights.
    level2 : {'weighted', 'arp'}
        ``weighted``: sum_q W_q * D_q. ``arp``: ARP across windows,
        sum_q alpha_q(m) * m * W_q * D_q; a single window is returned as is.

    Returns
    -------
    np.ndarray
        (H, W, 3) float64.
    """
    images = np.ascontiguousarray(images, dtype=np.float64)
    m = images.shape[0]
    if level2 == "weighted":
        coef = np.ones(m, np.float64)
    elif level2 == "arp":
        if m == 1:
            return images[0].copy()
        coef = arp_coefficients(m) * m
    else:
        raise ValueError(f"level2 must be 'weighted' or 'arp', got {level2!r}")
    weights = information_weights(images, patch)
    out = np.empty(images.shape[1:], np.float64)
    _weighted_sum(images, weights, np.ascontiguousarray(coef), out)
    return out


def hierarchical_pool(images: np.ndarray, patch: int, levels: int = 2, window: int = 3,
                      level2: str = "weighted") -> np.ndarray:
    """Pool level-1 window images up the hierarchy into the AHDI (float).

    Parameters
    ----------
    images : np.ndarray
        (M, H, W, 3) level-1 images D_1..D_M.
    patch, level2
        As in :func:`combine_windows`.
    levels : int
        Hierarchy depth; levels >= 3 first replaces the sequence by the
        combination of each run of ``window`` consecutive images (stride 1),
        levels - 2 times while it is longer than ``window``.
    window : int
        Run length of the intermediate levels.

    Returns
    -------
    np.ndarray
        (H, W, 3) float64 AHDI.
    """
    sequence = np.asarray(images, dtype=np.float64)
    for _ in range(max(0, levels - 2)):
        if sequence.shape[0] <= window:
            break
        sequence = np.stack([combine_windows(sequence[i:i + window], patch, level2)
                             for i in range(sequence.shape[0] - window + 1)])
    return combine_windows(sequence, patch, level2)
