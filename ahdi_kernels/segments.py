"""Where the windows of a video lie: adaptive segmentation and fixed windows."""

from __future__ import annotations

import numpy as np


def resolve_eps(motion: np.ndarray, eps: float | str = "auto") -> float:
    """The activity threshold: ``eps`` itself, or 0.5 x median(MA) for 'auto'."""
    if eps == "auto":
        return 0.5 * float(np.median(motion))
    return float(eps)


def activity_energy(motion: np.ndarray, eps: float) -> np.ndarray:
    """Energy e_t = MA_t where the frame is active (MA_t > eps), else 0."""
    motion = np.asarray(motion, dtype=np.float64)
    return np.where(motion > eps, motion, 0.0)


def effective_segments(n_frames: int, n_segments: int, min_len: int) -> int:
    """Effective n = max(2, min(n, floor(T / min_len)))."""
    return max(2, min(n_segments, n_frames // min_len))


def _merge_short(bounds: list[int], min_len: int) -> list[int]:
    # Merge the earliest too-short segment into its shorter neighbour (the
    # earlier one on a tie) until none is short or only two segments remain.
    while len(bounds) > 3:
        lengths = np.diff(bounds)
        short = np.flatnonzero(lengths < min_len)
        if short.size == 0:
            break
        q = int(short[0])
        if q == 0:
            merge_with_previous = False
        elif q == len(lengths) - 1:
            merge_with_previous = True
        else:
            merge_with_previous = lengths[q - 1] <= lengths[q + 1]
        # Removing the boundary between q and its neighbour joins the two.
        del bounds[q if merge_with_previous else q + 1]
    return bounds


def segment_bounds(motion: np.ndarray, n_segments: int = 8, min_len: int = 3,
                   eps: float | str = "auto") -> np.ndarray:
    """Adaptive segmentation at equal quantiles of cumulative motion energy.

    Parameters
    ----------
    motion : np.ndarray
        (T,) motion curve MA_t, T >= 2.
    n_segments : int
        Primary number of segments n (>= 2).
    min_len : int
        Fewest frames in a segment; shorter ones are merged (never below 2
        segments).
    eps : float or 'auto'
        Activity threshold.

    Returns
    -------
    np.ndarray
        int64 boundaries ``s_0 = 0 < s_1 < ... < s_n = T`` (0-based, segment
        k is frames ``[s_k, s_{k+1})``), at least 3 values (2 segments).

    Notes
    -----
    High motion gives short segments, static stretches long ones. A static
    video (no active frame) is split into equal parts.
    """
    motion = np.asarray(motion, dtype=np.float64)
    if motion.ndim != 1:
        raise ValueError(f"motion must be 1-D, got shape {motion.shape}")
    n_frames = motion.shape[0]
    if n_frames < 2:
        raise ValueError(f"segmentation needs at least 2 frames, got {n_frames}")
    n = effective_segments(n_frames, n_segments, min_len)
    energy = activity_energy(motion, resolve_eps(motion, eps))
    cumulative = np.concatenate(([0.0], np.cumsum(energy)))
    total = cumulative[-1]
    if total > 0:
        inner = [int(np.searchsorted(cumulative, k * total / n, side="left"))
                 for k in range(1, n)]
    else:
        inner = [(k * n_frames) // n for k in range(1, n)]
    bounds = sorted(set([0, *inner, n_frames]))
    if len(bounds) < 3:
        # All the energy sits in one frame: every quantile lands on the same
        # boundary. Two halves are the least arbitrary split left.
        bounds = [0, n_frames // 2, n_frames]
    bounds = _merge_short(bounds, min_len)
    return np.asarray(bounds, dtype=np.int64)


def overlapping_windows(bounds: np.ndarray) -> np.ndarray:
    """Windows of two consecutive segments: segment q joined with q + 1.

    Returns
    -------
    np.ndarray
        (n - 1, 2) int64 ``[start, stop)`` frame ranges; consecutive windows
        share a whole segment. Two segments give one window, the video.
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    if bounds.ndim != 1 or bounds.size < 3:
        raise ValueError(f"need at least 2 segments (3 bounds), got {bounds.tolist()}")
    return np.stack((bounds[:-2], bounds[2:]), axis=1)


def fixed_windows(n_frames: int, segment_len: int = 10, stride: int | None = None) -> np.ndarray:
    """Fixed-length windows (the paper's Table 4 ablation).

    Parameters
    ----------
    n_frames : int
        Video length T.
    segment_len : int
        Window length L.
    stride : int or None
        Start step; None means L // 2 (windows overlap by half).

    Returns
    -------
    np.ndarray
        (M, 2) int64 ``[start, stop)`` ranges; the last window is shifted to
        end at T; a video shorter than L is one window.
    """
    if n_frames < 2:
        raise ValueError(f"windows need at least 2 frames, got {n_frames}")
    stride = max(1, segment_len // 2) if stride is None else int(stride)
    if n_frames <= segment_len:
        return np.array([[0, n_frames]], dtype=np.int64)
    starts = list(range(0, n_frames - segment_len + 1, stride))
    if starts[-1] + segment_len < n_frames:
        starts.append(n_frames - segment_len)
    starts_arr = np.asarray(starts, dtype=np.int64)
    return np.stack((starts_arr, starts_arr + segment_len), axis=1)


def level1_windows(motion: np.ndarray, params) -> tuple[np.ndarray | None, np.ndarray]:
    """Segment bounds and level-1 windows for a parameter set.

    Parameters
    ----------
    motion : np.ndarray
        (T,) motion curve.
    params : AhdiParams
        Uses segmentation, n_segments, min_len, eps, segment_len, stride, levels.

    Returns
    -------
    bounds : np.ndarray or None
        Adaptive segment boundaries; ``[0, T]`` for levels = 1 (the whole
        video is the one segment, as in ``reference.ahdi``); None in fixed
        mode.
    windows : np.ndarray
        (M, 2) int64 window ranges; levels = 1 gives the whole video.
    """
    n_frames = len(motion)
    if params.levels == 1:
        return (np.array([0, n_frames], dtype=np.int64),
                np.array([[0, n_frames]], dtype=np.int64))
    if params.segmentation == "fixed":
        return None, fixed_windows(n_frames, params.segment_len, params.fixed_stride)
    bounds = segment_bounds(motion, params.n_segments, params.min_len, params.eps)
    return bounds, overlapping_windows(bounds)
