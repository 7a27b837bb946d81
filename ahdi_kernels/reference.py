"""Plain NumPy float64 reading of every step of the AHDI algorithm.

This module is the test suite's oracle: it is written for clarity, not for
speed, straight from the spec (``/work/shared/AHDI_SPEC.md``, mirrored in
``docs/algorithm.md``), and shares no code with the fast Numba kernels.
Every step is a small public function so a test can compare one step at a
time:

1. motion activity      :func:`grey_for_flow`, :func:`flow_fields`,
                        :func:`motion_activity`
2. segmentation         :func:`resolve_eps`, :func:`segment_bounds`,
                        :func:`fixed_windows`
3. overlapping windows  :func:`overlapping_windows`
4. level 1              :func:`arp_coefficients`, :func:`rank_pool`,
                        :func:`box_mean`, :func:`window_images`
5. information weights  :func:`information_weights`
6. level 2 and up       :func:`combine_windows`, :func:`hierarchical_pool`
7. to uint8             :func:`to_uint8`

plus the baselines :func:`sdi`, :func:`mean_image`, :func:`flow_picture`
and the whole chain :func:`ahdi`.

Only NumPy and OpenCV are used; OpenCV only for colour conversion, resizing,
Farneback optical flow and ``cartToPolar``. Frame indices are 0-based here:
the spec's frame ``I_t`` (t = 1..T) is ``frames[t - 1]``.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "arp_coefficients",
    "grey_for_flow",
    "flow_fields",
    "motion_activity",
    "resolve_eps",
    "segment_bounds",
    "fixed_windows",
    "overlapping_windows",
    "box_mean",
    "rank_pool",
    "window_images",
    "information_weights",
    "combine_windows",
    "hierarchical_pool",
    "to_uint8",
    "sdi",
    "mean_image",
    "flow_picture",
    "ahdi",
]

FARNEBACK_DEFAULT = (0.5, 3, 15, 3, 5, 1.2, 0)
FLAT_RANGE = 1e-6
"""Below this max - min range (in [0, 1] frame units) an image is flat."""
WEIGHT_DELTA = 1e-6
"""The delta of the information weights W_q = E_q / (sum_r E_r + delta)."""


# ----------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------
def _as_frames(frames) -> np.ndarray:
    """Return ``frames`` as a (T, H, W, 3) uint8 array, or raise ValueError.

    Accepts a 4-D array or a sequence of (H, W, 3) arrays.
    """
    if not isinstance(frames, np.ndarray):
        frames = list(frames)
        if len(frames) == 0:
            raise ValueError("AHDI needs at least 2 frames, got 0")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"all frames must have the same shape, got {sorted(shapes)}")
        dtypes = {np.asarray(f).dtype for f in frames}
        if dtypes != {np.dtype(np.uint8)}:
            raise ValueError(f"frames must be uint8, got {sorted(str(d) for d in dtypes)}")
        frames = np.stack([np.asarray(f) for f in frames])
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, S, S, 3), got {frames.shape}")
    if frames.shape[1] < 1 or frames.shape[2] < 1:
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    if frames.shape[0] < 2:
        raise ValueError(f"AHDI needs at least 2 frames, got {frames.shape[0]}")
    return frames


def _check_patch(patch) -> int:
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)):
        raise ValueError(f"patch must be an odd integer >= 1, got {patch!r}")
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be an odd integer >= 1, got {patch}")
    return int(patch)


def _as_stack(D) -> np.ndarray:
    """Window images as a float64 (M, S, S, 3) array with M >= 1."""
    D = np.asarray(D, dtype=np.float64)
    if D.ndim != 4 or D.shape[-1] != 3 or D.shape[0] < 1:
        raise ValueError(f"window images must have shape (M, S, S, 3) with M >= 1, "
                         f"got {D.shape}")
    return D


def _farneback_args(farneback) -> tuple:
    """The 7 Farneback values with the types OpenCV wants."""
    fb = tuple(farneback)
    if len(fb) != 7:
        raise ValueError(f"farneback needs 7 values (pyr_scale, levels, winsize, "
                         f"iterations, poly_n, poly_sigma, flags), got {len(fb)}")
    pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags = fb
    return (float(pyr_scale), int(levels), int(winsize), int(iterations),
            int(poly_n), float(poly_sigma), int(flags))


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with the spec's rule: INTER_AREA shrinking, INTER_LINEAR enlarging.

    "Shrinking" means the longest side gets smaller; an unchanged size is
    returned as is (a copy is not made).
    """
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img
    interp = cv2.INTER_AREA if max(width, height) < max(h, w) else cv2.INTER_LINEAR
    return cv2.resize(img, (width, height), interpolation=interp)


# ----------------------------------------------------------------------
# 4. approximate rank pooling
# ----------------------------------------------------------------------
def arp_coefficients(M: int) -> np.ndarray:
    """Approximate rank pooling coefficients alpha_tau(M), tau = 1..M.

    Parameters
    ----------
    M : int
        Number of pooled elements (>= 1).

    Returns
    -------
    numpy.ndarray
        float64 array of shape (M,):
        ``alpha_tau = 2 (M - tau + 1) - (M + 1) (H_M - H_{tau-1})`` with
        ``H_k = sum_{i=1..k} 1/i`` and ``H_0 = 0``.

    Notes
    -----
    The coefficients sum to 0 for every M (so ARP of a constant sequence
    is 0), and M = 1 gives ``[0.]``: one element has no dynamics.

    Examples
    --------
    >>> arp_coefficients(2)
    array([-0.5,  0.5])
    """
    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or M < 1:
        raise ValueError(f"M must be an integer >= 1, got {M!r}")
    M = int(M)
    # H[k] = H_k for k = 0..M, summed in order 1/1 + 1/2 + ...
    H = np.zeros(M + 1, dtype=np.float64)
    for k in range(1, M + 1):
        H[k] = H[k - 1] + 1.0 / k
    tau = np.arange(1, M + 1)
    return 2.0 * (M - tau + 1) - (M + 1) * (H[M] - H[tau - 1])


def rank_pool(frames_float) -> np.ndarray:
    """ARP of a sequence: ``sum_tau alpha_tau(M) * x_tau`` over axis 0.

    Parameters
    ----------
    frames_float : array_like
        (M, ...) sequence, M >= 2, any float values (frames in [0, 1]).

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``frames_float.shape[1:]``.
    """
    x = np.asarray(frames_float, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] < 2:
        n = x.shape[0] if x.ndim >= 1 else 0
        raise ValueError(f"rank pooling needs at least 2 frames, got {n} "
                         f"(one element has no dynamics)")
    alpha = arp_coefficients(x.shape[0])
    out = np.zeros(x.shape[1:], dtype=np.float64)
    for tau in range(x.shape[0]):          # in time order, one term at a time
        out += alpha[tau] * x[tau]
    return out


def box_mean(img, patch: int) -> np.ndarray:
    """p x p box mean over the first two axes (per channel if 3-D).

    Parameters
    ----------
    img : array_like
        (H, W) or (H, W, C) image.
    patch : int
        Odd box side p.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape.

    Notes
    -----
    The border is reflected with the edge pixel repeated, ``fedcba|abcdef``
    (OpenCV's ``BORDER_REFLECT``, NumPy's ``np.pad(mode='symmetric')``).
    The box sum is taken as the sum of the p * p shifted copies of the
    padded image, then divided by p * p.
    """
    p = _check_patch(patch)
    a = np.asarray(img, dtype=np.float64)
    if a.ndim not in (2, 3):
        raise ValueError(f"box_mean needs a 2-D or 3-D image, got shape {a.shape}")
    r = p // 2
    pad = [(r, r), (r, r)] + [(0, 0)] * (a.ndim - 2)
    padded = np.pad(a, pad, mode="symmetric")
    h, w = a.shape[:2]
    total = np.zeros_like(a)
    for dy in range(p):
        for dx in range(p):
            total += padded[dy:dy + h, dx:dx + w]
    return total / (p * p)


def window_images(frames, windows, patch: int) -> np.ndarray:
    """Level-1 images D_q = B_p * ARP(frames[start:stop] / 255).

    Parameters
    ----------
    frames : array_like
        (T, S, S, 3) uint8 frames.
    windows : sequence of (int, int)
        ``[start, stop)`` 0-based frame ranges, each at least 2 frames.
    patch : int
        Odd box side p.

    Returns
    -------
    numpy.ndarray
        (M, S, S, 3) float64, M = len(windows).
    """
    frames = _as_frames(frames)
    p = _check_patch(patch)
    windows = [(int(a), int(b)) for a, b in windows]
    if not windows:
        raise ValueError("window_images needs at least one window")
    T = frames.shape[0]
    out = []
    for start, stop in windows:
        if not 0 <= start < stop <= T:
            raise ValueError(f"window ({start}, {stop}) is outside the {T} frames")
        if stop - start < 2:
            raise ValueError(f"window ({start}, {stop}) has fewer than 2 frames")
        x = frames[start:stop].astype(np.float64) / 255.0
        out.append(box_mean(rank_pool(x), p))
    return np.stack(out)


# ----------------------------------------------------------------------
# 1. motion activity
# ----------------------------------------------------------------------
def grey_for_flow(frame_rgb_uint8, flow_side: int) -> np.ndarray:
    """Grey frame that Farneback runs on.

    Parameters
    ----------
    frame_rgb_uint8 : numpy.ndarray
        (H, W, 3) RGB uint8 frame.
    flow_side : int
        Longest side of the result.

    Returns
    -------
    numpy.ndarray
        2-D uint8: ``cv2.cvtColor(RGB2GRAY)``, resized so its longest side
        is ``flow_side``; the other side is ``round(side * scale)`` (Python
        ``round``), at least 1. INTER_AREA when shrinking, INTER_LINEAR when
        enlarging, no resize when the longest side already is ``flow_side``.
    """
    f = np.asarray(frame_rgb_uint8)
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3:
        raise ValueError(f"a frame must be an (H, W, 3) uint8 array, got "
                         f"{f.dtype} {f.shape}")
    if flow_side < 1:
        raise ValueError(f"flow_side must be >= 1, got {flow_side}")
    grey = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    longest = max(h, w)
    if longest == flow_side:
        return grey
    scale = flow_side / longest
    if h >= w:
        new_h, new_w = flow_side, max(1, round(w * scale))
    else:
        new_h, new_w = max(1, round(h * scale)), flow_side
    return _resize(grey, new_w, new_h)


def flow_fields(frames, flow_side: int = 64, farneback=FARNEBACK_DEFAULT) -> list:
    """Farneback flows F_2..F_T between consecutive grey frames.

    Parameters
    ----------
    frames : array_like
        (T, S, S, 3) uint8 frames, T >= 2.
    flow_side : int
        Longest side of the grey frames.
    farneback : tuple
        ``(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags)``.

    Returns
    -------
    list of numpy.ndarray
        T - 1 float32 arrays of shape (h, w, 2):
        ``cv2.calcOpticalFlowFarneback(g_{t-1}, g_t, None, *farneback)``.
    """
    frames = _as_frames(frames)
    fb = _farneback_args(farneback)
    greys = [grey_for_flow(f, flow_side) for f in frames]
    return [cv2.calcOpticalFlowFarneback(greys[t - 1], greys[t], None, *fb)
            for t in range(1, len(greys))]


def _magnitude(flow: np.ndarray) -> np.ndarray:
    """Per-pixel |F| in float64."""
    fx = flow[..., 0].astype(np.float64)
    fy = flow[..., 1].astype(np.float64)
    return np.sqrt(fx * fx + fy * fy)


def motion_activity(frames, flow_side: int = 64,
                    farneback=FARNEBACK_DEFAULT) -> np.ndarray:
    """Motion activity MA_t, the mean flow magnitude per frame.

    Parameters
    ----------
    frames : array_like
        (T, S, S, 3) uint8 array or a list of (S, S, 3) uint8 frames, T >= 2.
    flow_side : int
        Longest side of the grey frames Farneback runs on.
    farneback : tuple
        Farneback parameters.

    Returns
    -------
    numpy.ndarray
        (T,) float64: ``MA_t = mean over pixels of |F_t|`` (px/frame at flow
        resolution) for t = 2..T, and ``MA_1 := MA_2``.
    """
    flows = flow_fields(frames, flow_side, farneback)
    ma = np.empty(len(flows) + 1, dtype=np.float64)
    for i, flow in enumerate(flows):
        ma[i + 1] = _magnitude(flow).mean()
    ma[0] = ma[1]
    return ma


# ----------------------------------------------------------------------
# 2. segmentation
# ----------------------------------------------------------------------
def _as_motion(ma) -> np.ndarray:
    ma = np.asarray(ma, dtype=np.float64)
    if ma.ndim != 1:
        raise ValueError(f"motion activity must be 1-D, got shape {ma.shape}")
    if ma.shape[0] < 2:
        raise ValueError(f"AHDI needs at least 2 frames, got {ma.shape[0]}")
    if not np.all(np.isfinite(ma)):
        raise ValueError("motion activity must be finite")
    return ma


def resolve_eps(ma, eps="auto") -> float:
    """The activity threshold epsilon.

    Parameters
    ----------
    ma : array_like
        (T,) motion activity.
    eps : float or 'auto'
        A number >= 0, or 'auto' = 0.5 * median(ma).

    Returns
    -------
    float
    """
    if isinstance(eps, str):
        if eps != "auto":
            raise ValueError(f"eps must be 'auto' or a number >= 0, got {eps!r}")
        return 0.5 * float(np.median(np.asarray(ma, dtype=np.float64)))
    value = float(eps)
    if not value >= 0:
        raise ValueError(f"eps must be 'auto' or a number >= 0, got {eps!r}")
    return value


def segment_bounds(ma, n_segments: int = 8, min_len: int = 3,
                   eps="auto") -> np.ndarray:
    """Adaptive segment boundaries at equal quantiles of motion energy.

    Parameters
    ----------
    ma : array_like
        (T,) motion activity, T >= 2.
    n_segments : int
        Primary number of segments n (>= 1; the effective number is >= 2).
    min_len : int
        Fewest frames in a segment (>= 1).
    eps : float or 'auto'
        Activity threshold, see :func:`resolve_eps`.

    Returns
    -------
    numpy.ndarray
        int64 0-based boundaries ``b``: ``b[0] = 0``, ``b[-1] = T``, strictly
        increasing; segment k is frames ``b[k]:b[k+1]``. At least 2 segments.

    Notes
    -----
    1. ``n_eff = max(2, min(n, T // min_len))``.
    2. Energy ``e_t = ma_t`` if ``ma_t > eps`` else 0. ``C = [0, cumsum(e)]``
       so ``C[j]`` is the energy of frames before j, and ``total = C[T]``.
    3. If ``total == 0`` (static video): ``s_k = (k * T) // n_eff``.
       Otherwise ``s_k`` is the smallest j in 0..T with
       ``C[j] >= k * total / n_eff`` (k = 1..n_eff - 1); ``s_0 = 0``,
       ``s_n = T``.
    4. Repeated boundaries (empty segments) are dropped. If only one
       segment is left (all energy in the last frame) the video is split in
       two at ``T // 2``; T >= 2 keeps both halves non-empty.
    5. While more than 2 segments remain, the earliest segment shorter than
       ``min_len`` is merged into its shorter neighbour (the earlier one on
       a tie, the only one at either end).
    """
    ma = _as_motion(ma)
    if isinstance(n_segments, bool) or int(n_segments) != n_segments or n_segments < 1:
        raise ValueError(f"n_segments must be an integer >= 1, got {n_segments!r}")
    if isinstance(min_len, bool) or int(min_len) != min_len or min_len < 1:
        raise ValueError(f"min_len must be an integer >= 1, got {min_len!r}")
    T = ma.shape[0]
    n_eff = max(2, min(int(n_segments), T // int(min_len)))
    threshold = resolve_eps(ma, eps)

    energy = np.where(ma > threshold, ma, 0.0)
    C = np.concatenate([[0.0], np.cumsum(energy)])
    total = C[T]

    bounds = [0]
    for k in range(1, n_eff):
        if total == 0:
            s = (k * T) // n_eff
        else:
            target = k * total / n_eff
            s = T                                  # guard against rounding
            for j in range(T + 1):
                if C[j] >= target:
                    s = j
                    break
        bounds.append(s)
    bounds.append(T)

    # drop empty segments (bounds are non-decreasing)
    kept = [bounds[0]]
    for b in bounds[1:]:
        if b != kept[-1]:
            kept.append(b)
    bounds = kept
    if len(bounds) == 2:
        bounds = [0, T // 2, T]

    # enforce min_len, never below 2 segments
    while len(bounds) - 1 > 2:
        lengths = [bounds[i + 1] - bounds[i] for i in range(len(bounds) - 1)]
        short = [i for i, n in enumerate(lengths) if n < min_len]
        if not short:
            break
        q = short[0]
        last = len(lengths) - 1
        if q == 0:
            other = 1
        elif q == last:
            other = q - 1
        else:
            other = q - 1 if lengths[q - 1] <= lengths[q + 1] else q + 1
        # merging segments q and other removes the boundary between them
        del bounds[max(q, other)]
    return np.asarray(bounds, dtype=np.int64)


def fixed_windows(T: int, segment_len: int = 10, stride: int | None = None) -> list:
    """Windows of ``fixed`` segmentation (the paper's Table 4 ablation).

    Parameters
    ----------
    T : int
        Number of frames (>= 2).
    segment_len : int
        Window length L (>= 2).
    stride : int or None
        Start step; None means ``max(1, L // 2)``.

    Returns
    -------
    list of (int, int)
        ``[start, stop)`` ranges: ``[(0, T)]`` when ``T <= L``; otherwise
        starts ``0, stride, ...`` up to ``T - L``, plus a last window
        ``(T - L, T)`` when the regular ones stop short of T.
    """
    T, L = int(T), int(segment_len)
    if T < 2:
        raise ValueError(f"AHDI needs at least 2 frames, got {T}")
    if L < 2:
        raise ValueError(f"segment_len must be >= 2, got {L}")
    if stride is None:
        stride = max(1, L // 2)
    stride = int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if T <= L:
        return [(0, T)]
    windows = [(s, s + L) for s in range(0, T - L + 1, stride)]
    if windows[-1][1] < T:
        windows.append((T - L, T))
    return windows


def overlapping_windows(bounds) -> list:
    """Level-1 windows: window q is segment q joined with segment q + 1.

    Parameters
    ----------
    bounds : array_like
        Segment boundaries (at least 3 values: 2 segments).

    Returns
    -------
    list of (int, int)
        ``(bounds[q], bounds[q + 2])`` for q = 0..len(bounds) - 3; with two
        segments, the one window ``(0, T)``.
    """
    b = [int(x) for x in np.asarray(bounds).ravel()]
    if len(b) < 3:
        raise ValueError(f"overlapping windows need at least 2 segments, got bounds {b}")
    if any(b[i + 1] <= b[i] for i in range(len(b) - 1)):
        raise ValueError(f"bounds must be strictly increasing, got {b}")
    return [(b[q], b[q + 2]) for q in range(len(b) - 2)]


# ----------------------------------------------------------------------
# 5-6. information weights and the levels above 1
# ----------------------------------------------------------------------
def information_weights(D, patch: int, delta: float = WEIGHT_DELTA) -> np.ndarray:
    """Per-pixel weights of the window images.

    Parameters
    ----------
    D : array_like
        (M, S, S, 3) window images.
    patch : int
        Odd box side p.
    delta : float
        Guard against division by zero.

    Returns
    -------
    numpy.ndarray
        (M, S, S) float64: ``E_q = B_p * mean_c |D_q|`` and
        ``W_q = E_q / (sum_r E_r + delta)``.
    """
    D = _as_stack(D)
    p = _check_patch(patch)
    E = np.stack([box_mean(np.abs(Dq).mean(axis=-1), p) for Dq in D])
    denom = np.zeros(E.shape[1:], dtype=np.float64)
    for Eq in E:                            # in window order
        denom += Eq
    return E / (denom + delta)


def combine_windows(D, patch: int, level2: str = "weighted") -> np.ndarray:
    """One level of combination of a run of window images.

    Parameters
    ----------
    D : array_like
        (m, S, S, 3) images.
    patch : int
        Odd box side p of the information weights.
    level2 : {'weighted', 'arp'}
        weighted: ``sum_q W_q * D_q``. arp: ``sum_q alpha_q(m) * m * W_q * D_q``
        (ARP across the windows), and ``D[0]`` when m == 1.

    Returns
    -------
    numpy.ndarray
        (S, S, 3) float64.
    """
    D = _as_stack(D)
    if level2 not in ("weighted", "arp"):
        raise ValueError(f"level2 must be one of ('weighted', 'arp'), got {level2!r}")
    m = D.shape[0]
    if level2 == "arp" and m == 1:
        return D[0].copy()
    W = information_weights(D, patch)
    if level2 == "weighted":
        coef = np.ones(m)
    else:
        coef = arp_coefficients(m) * m
    out = np.zeros(D.shape[1:], dtype=np.float64)
    for q in range(m):
        out += coef[q] * W[q][..., None] * D[q]
    return out


def hierarchical_pool(D, patch: int, levels: int = 2, window: int = 3,
                      level2: str = "weighted") -> np.ndarray:
    """Combine the level-1 images into the AHDI.

    Parameters
    ----------
    D : array_like
        (M, S, S, 3) level-1 images.
    patch : int
        Odd box side p.
    levels : int
        Hierarchy depth (>= 2 here; level 1 is :func:`window_images`).
    window : int
        Run length of the intermediate levels (>= 2).
    level2 : {'weighted', 'arp'}
        See :func:`combine_windows`.

    Returns
    -------
    numpy.ndarray
        (S, S, 3) float64.

    Notes
    -----
    For levels >= 3, ``levels - 2`` times, while the sequence is longer than
    ``window``, the sequence is replaced by the combination of each run of
    ``window`` consecutive images (stride 1). The last level combines what
    is left.
    """
    seq = _as_stack(D)
    if levels < 2:
        raise ValueError(f"hierarchical_pool needs levels >= 2, got {levels}")
    if window < 2:
        raise ValueError(f"window must be >= 2, got {window}")
    for _ in range(levels - 2):
        if len(seq) <= window:
            break
        seq = np.stack([combine_windows(seq[i:i + window], patch, level2)
                        for i in range(len(seq) - window + 1)])
    return combine_windows(seq, patch, level2)


# ----------------------------------------------------------------------
# 7. to uint8
# ----------------------------------------------------------------------
def to_uint8(x, normalize: str = "minmax") -> np.ndarray:
    """Map a float image to uint8 over all its values (all channels).

    Parameters
    ----------
    x : array_like
        Float image (frames in [0, 1] units).
    normalize : {'minmax', 'percentile'}
        minmax: ``lo, hi = min, max``. percentile:
        ``lo, hi = np.percentile(x, [1, 99])`` and x clipped to [lo, hi].

    Returns
    -------
    numpy.ndarray
        uint8 of the same shape: ``floor(255 (x - lo) / (hi - lo) + 0.5)``,
        or all 0 when ``hi - lo < 1e-6`` (a flat image).
    """
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        raise ValueError("to_uint8 needs a non-empty image")
    if not np.all(np.isfinite(a)):
        raise ValueError("to_uint8 needs finite values")
    if normalize == "minmax":
        lo, hi = a.min(), a.max()
    elif normalize == "percentile":
        lo, hi = np.percentile(a, [1, 99])
        a = np.clip(a, lo, hi)
    else:
        raise ValueError(f"normalize must be one of ('minmax', 'percentile'), "
                         f"got {normalize!r}")
    if hi - lo < FLAT_RANGE:
        return np.zeros(a.shape, dtype=np.uint8)
    y = 255.0 * (a - lo) / (hi - lo)
    return np.floor(y + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------
# baselines
# ----------------------------------------------------------------------
def sdi(frames) -> np.ndarray:
    """Bilen's single dynamic image: ARP of all frames / 255 (no patch).

    Returns
    -------
    numpy.ndarray
        (S, S, 3) float64.
    """
    frames = _as_frames(frames)
    return rank_pool(frames.astype(np.float64) / 255.0)


def mean_image(frames) -> np.ndarray:
    """Per-pixel mean of the frames / 255, (S, S, 3) float64."""
    frames = _as_frames(frames)
    x = frames.astype(np.float64) / 255.0
    out = np.zeros(x.shape[1:], dtype=np.float64)
    for f in x:
        out += f
    return out / x.shape[0]


def flow_picture(frames, size: int, flow_side: int = 64,
                 farneback=FARNEBACK_DEFAULT) -> np.ndarray:
    """HSV picture of the video's motion, as RGB uint8.

    Parameters
    ----------
    frames : array_like
        (T, S, S, 3) uint8 frames, T >= 2.
    size : int
        Output side.
    flow_side, farneback
        As in :func:`motion_activity`.

    Returns
    -------
    numpy.ndarray
        (size, size, 3) uint8 RGB.

    Notes
    -----
    At flow resolution: ``V = sum_t F_t`` (vector field) and
    ``A = sum_t |F_t|`` (magnitude field), in float64.
    Hue = ``floor(angle / 2 + 0.5) mod 180`` with ``angle`` in degrees from
    ``cv2.cartToPolar(Vx, Vy, angleInDegrees=True)`` (OpenCV's 8-bit hue,
    0..179; the mod folds 359.x degrees back onto 0, the same direction).
    Value = ``floor(255 * A / max(A) + 0.5)``, 0 everywhere when max(A) is 0.
    Saturation = 255. ``cv2.COLOR_HSV2RGB``, then resized to size x size
    (INTER_LINEAR enlarging, INTER_AREA shrinking).
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    flows = flow_fields(frames, flow_side, farneback)
    vec = np.zeros(flows[0].shape, dtype=np.float64)
    mag = np.zeros(flows[0].shape[:2], dtype=np.float64)
    for flow in flows:
        vec += flow.astype(np.float64)
        mag += _magnitude(flow)
    _, angle = cv2.cartToPolar(np.ascontiguousarray(vec[..., 0]),
                               np.ascontiguousarray(vec[..., 1]),
                               angleInDegrees=True)
    hue = np.mod(np.floor(angle / 2.0 + 0.5), 180.0)
    peak = mag.max()
    if peak > 0:
        value = np.floor(255.0 * mag / peak + 0.5)
    else:
        value = np.zeros_like(mag)
    hsv = np.stack([hue, np.full_like(mag, 255.0), value], axis=-1).astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return _resize(rgb, size, size)


# ----------------------------------------------------------------------
# the whole chain
# ----------------------------------------------------------------------
def ahdi(frames, params) -> dict:
    """Every representation of one video, step by step.

    Parameters
    ----------
    frames : array_like
        (T, S, S, 3) uint8 frames (or a list of (S, S, 3)), S == params.size,
        T >= 2.
    params : ahdi.kernels.params.AhdiParams
        The parameter set.

    Returns
    -------
    dict
        ``motion`` (T,) float64; ``eps`` float; ``bounds`` int64 segment
        boundaries (adaptive), ``[0, T]`` when ``levels == 1``, None for
        ``fixed``; ``windows`` (M, 2) int64; ``mdv_float`` (M, S, S, 3)
        float64; ``ahdi_float`` (S, S, 3) float64; ``ahdi`` and ``mdv``
        (each window image normalised on its own) uint8; ``sdi``, ``mean``
        (float images mapped with ``params.normalize``) and ``flow`` uint8.

    Notes
    -----
    ``levels == 1`` skips segmentation (motion is still reported): one
    window of all frames and ``ahdi_float = B_p * ARP(all frames / 255)``,
    which is also the single MDV image.
    """
    frames = _as_frames(frames)
    T, H, W, _ = frames.shape
    if H != W or H != params.size:
        raise ValueError(f"frames must be (T, {params.size}, {params.size}, 3) for "
                         f"size={params.size}, got {frames.shape}")
    p = _check_patch(params.patch)

    motion = motion_activity(frames, params.flow_side, params.farneback)
    eps = resolve_eps(motion, params.eps)

    if params.levels == 1:
        bounds = np.array([0, T], dtype=np.int64)
        windows = [(0, T)]
    elif params.segmentation == "fixed":
        bounds = None
        windows = fixed_windows(T, params.segment_len, params.fixed_stride)
    else:
        bounds = segment_bounds(motion, params.n_segments, params.min_len, eps)
        windows = overlapping_windows(bounds)

    D = window_images(frames, windows, p)
    if params.levels == 1:
        ahdi_float = D[0].copy()
    else:
        ahdi_float = hierarchical_pool(D, p, params.levels, params.window, params.level2)

    norm = params.normalize
    return {
        "motion": motion,
        "eps": eps,
        "bounds": bounds,
        "windows": np.asarray(windows, dtype=np.int64).reshape(-1, 2),
        "mdv_float": D,
        "ahdi_float": ahdi_float,
        "ahdi": to_uint8(ahdi_float, norm),
        "mdv": np.stack([to_uint8(Dq, norm) for Dq in D]),
        "sdi": to_uint8(sdi(frames), norm),
        # The mean image is already in [0, 1]: mapped as is, not stretched.
        "mean": np.floor(255.0 * mean_image(frames) + 0.5).astype(np.uint8),
        "flow": flow_picture(frames, params.size, params.flow_side, params.farneback),
    }
