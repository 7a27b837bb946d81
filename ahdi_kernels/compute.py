"""One entry point: a stream of frames in, the AHDI and its companions out."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np

from .buffer import FrameBuffer
from .motion import MotionActivity, flow_picture
from .normalize import to_uint8
from .params import AhdiParams
from .pooling import box_mean, hierarchical_pool, rank_pool_chunks
from .segments import level1_windows, resolve_eps

REPRESENTATIONS = ("ahdi", "mdv", "sdi", "mean", "flow")


@dataclasses.dataclass
class AhdiResult:
    """What :func:`compute_ahdi` returns for one video.

    Attributes
    ----------
    ahdi, sdi, mean, flow : np.ndarray or None
        (S, S, 3) RGB uint8 images; None when not requested.
    mdv : np.ndarray or None
        (M, S, S, 3) uint8 level-1 window images, each normalised on its own.
    ahdi_float : np.ndarray or None
        (S, S, 3) float64 AHDI before normalisation.
    motion : np.ndarray
        (T,) float64 motion activity MA_t.
    eps : float
        Activity threshold used.
    bounds : np.ndarray or None
        Adaptive segment boundaries (0-based, first 0, last T); ``[0, T]``
        for levels = 1; None in fixed mode.
    windows : np.ndarray
        (M, 2) int64 ``[start, stop)`` ranges of the level-1 windows.
    n_frames : int
        Number of frames T.
    """

    motion: np.ndarray
    eps: float
    bounds: np.ndarray | None
    windows: np.ndarray
    n_frames: int
    ahdi: np.ndarray | None = None
    mdv: np.ndarray | None = None
    sdi: np.ndarray | None = None
    mean: np.ndarray | None = None
    flow: np.ndarray | None = None
    ahdi_float: np.ndarray | None = None


def check_representations(representations: Iterable[str]) -> tuple[str, ...]:
    """Validate and de-duplicate representation names, keeping their order."""
    reps = tuple(dict.fromkeys(representations))
    unknown = [r for r in reps if r not in REPRESENTATIONS]
    if unknown:
        raise ValueError(f"unknown representation(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(REPRESENTATIONS)}")
    if not reps:
        raise ValueError("no representation requested")
    return reps


def compute_ahdi(frames: Iterable[np.ndarray], params: AhdiParams | None = None,
                 representations: Iterable[str] = ("ahdi", "mdv"), *,
                 memory_budget: int = 512 * 2**20, tmp_dir: str | None = None) -> AhdiResult:
    """Turn a video into its adaptive hierarchical dynamic image.

    The frames are decoded once: motion activity is measured as they
    arrive while they go into a :class:`FrameBuffer` (RAM up to
    ``memory_budget``, then a temporary file), because segmentation needs
    the whole motion curve before pooling can start; pooling then reads the
    buffer back block by block, so memory stays bounded whatever the length.

    Parameters
    ----------
    frames : iterable of np.ndarray
        (S, S, 3) RGB uint8 frames, already cropped and resized to
        S = params.size.
    params : AhdiParams, optional
        Method parameters (the spec's defaults when omitted).
    representations : iterable of str
        Any of 'ahdi', 'mdv', 'sdi', 'mean', 'flow'.
    memory_budget : int
        Bytes of frames held in RAM before spilling to disk.
    tmp_dir : str or None
        Folder for the spill file.

    Returns
    -------
    AhdiResult

    Raises
    ------
    ValueError
        Fewer than 2 frames ("needs at least 2 frames"), frames that are
        not uint8 (S, S, 3), or more windows than ``params.max_windows``.

    Examples
    --------
    >>> import numpy as np
    >>> frames = [np.full((16, 16, 3), 10 * t, np.uint8) for t in range(6)]
    >>> r = compute_ahdi(frames, AhdiParams(size=16, patch=3, crop='none'))
    >>> r.ahdi.shape, r.n_frames
    ((16, 16, 3), 6)
    """
    params = params or AhdiParams()
    reps = check_representations(representations)
    size = params.size
    shape = (size, size, 3)
    motion = MotionActivity(params.flow_side, params.farneback, keep_flow="flow" in reps)
    with FrameBuffer(shape, memory_budget, tmp_dir) as buffer:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.shape != shape:
                raise ValueError(f"frame {buffer.n_frames + 1} is {frame.dtype} "
                                 f"{frame.shape}; expected uint8 {shape} (size={size})")
            motion.update(frame)
            buffer.append(frame)
        n_frames = buffer.n_frames
        if n_frames < 2:
            raise ValueError(f"the video needs at least 2 frames, got {n_frames}")
        curve = motion.finish()
        bounds, windows = level1_windows(curve, params)
        if len(windows) > params.mdv_capacity:
            raise ValueError(
                f"{len(windows)} windows of {params.segment_len} frames exceed "
                f"max_windows={params.max_windows} for a video of {n_frames} frames; "
                f"raise max_windows or segment_len")
        pool_windows = "ahdi" in reps or "mdv" in reps
        pooled = rank_pool_chunks(buffer.chunks(), n_frames, shape,
                                  windows if pool_windows else windows[:0],
                                  with_sdi="sdi" in reps, with_mean="mean" in reps)

    result = AhdiResult(motion=curve, eps=resolve_eps(curve, params.eps), bounds=bounds,
                        windows=windows, n_frames=n_frames)
    if pool_windows:
        level1 = pooled["windows"]
        for image in level1:
            box_mean(image, params.patch, out=image)
        if "mdv" in reps:
            result.mdv = np.stack([to_uint8(image, params.normalize) for image in level1])
        if "ahdi" in reps:
            if params.levels == 1:
                result.ahdi_float = level1[0]
            else:
                result.ahdi_float = hierarchical_pool(level1, params.patch, params.levels,
                                                      params.window, params.level2)
            result.ahdi = to_uint8(result.ahdi_float, params.normalize)
    if "sdi" in reps:
        result.sdi = to_uint8(pooled["sdi"], params.normalize)
    if "mean" in reps:
        result.mean = np.floor(255.0 * pooled["mean"] + 0.5).clip(0, 255).astype(np.uint8)
    if "flow" in reps:
        result.flow = flow_picture(motion.flow_sum, motion.magnitude_sum, size)
    return result
