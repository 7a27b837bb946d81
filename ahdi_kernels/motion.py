"""The spec's resize rule, and motion activity from Farneback optical flow as frames arrive."""

from __future__ import annotations

import cv2
import numpy as np

from ._jit import jit
from .area import area_shrink, takes_generic_area
from .params import FARNEBACK_DEFAULT


def resize_to(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with the spec's rule: INTER_AREA shrinking, INTER_LINEAR enlarging.

    A uint8 image of 1 or 3 channels shrunk by a fractional scale goes
    through :func:`ahdi.kernels.area.area_shrink`: the bytes of
    ``cv2.resize(..., INTER_AREA)``, cheaper, and a view (a crop) is read in
    place. Everything else is ``cv2.resize`` itself.

    Parameters
    ----------
    image : np.ndarray
        2-D or 3-D image; may be a view.
    width, height : int
        Target size in pixels.

    Returns
    -------
    np.ndarray
        The resized image, or ``image`` itself when the size already matches.
    """
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if width * height >= w * h:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    channels = image.shape[2] if image.ndim == 3 else 1
    if (image.dtype == np.uint8 and image.ndim in (2, 3) and channels in (1, 3)
            and takes_generic_area(w, h, width, height)):
        return area_shrink(image, width, height)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def resize_region(frame: np.ndarray, box: tuple[int, int, int, int], width: int,
                  height: int) -> np.ndarray:
    """The crop ``box`` of a frame, resized with :func:`resize_to`'s rule.

    The crop is read straight from the frame's rows, never copied first
    (frames whose rows are padded apart, as a decoder may give them, too).

    Parameters
    ----------
    frame : np.ndarray
        (H, W) or (H, W, C) image.
    box : tuple of int
        ``(x, y, w, h)`` in pixels, inside the frame.
    width, height : int
        Target size in pixels.

    Returns
    -------
    np.ndarray
        A new C-contiguous (height, width[, C]) array (a copy of the crop
        when its size already matches).

    Raises
    ------
    ValueError
        When the box is empty or reaches outside the frame.
    """
    x, y, w, h = (int(v) for v in box)
    frame_h, frame_w = frame.shape[:2]
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > frame_w or y + h > frame_h:
        raise ValueError(f"crop box (x={x}, y={y}, w={w}, h={h}) is not inside the "
                         f"{frame_w}x{frame_h} frame")
    crop = frame[y:y + h, x:x + w]
    if (w, h) == (width, height):
        return np.ascontiguousarray(crop)
    return resize_to(crop, width, height)


def grey_for_flow(frame: np.ndarray, flow_side: int) -> np.ndarray:
    """Grey copy of an RGB uint8 frame whose longest side is ``flow_side``.

    Parameters
    ----------
    frame : np.ndarray
        (H, W, 3) RGB uint8 frame.
    flow_side : int
        Longest side of the result.

    Returns
    -------
    np.ndarray
        (h, w) uint8 grey image.
    """
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = flow_side / max(h, w)
    return resize_to(grey, max(1, round(w * scale)), max(1, round(h * scale)))


class MotionActivity:
    """Streaming motion activity MA_t = mean |F_t| (spec step 1).

    Feed frames one at a time with :meth:`update`; only the previous grey
    frame (and, for the flow baseline, two small running sums) is kept, so
    memory does not grow with the video's length.

    Parameters
    ----------
    flow_side : int
        Longest side of the grey frames Farneback runs on.
    farneback : tuple
        ``(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags)``.
    keep_flow : bool
        Also accumulate sum_t F_t and sum_t |F_t| for :func:`flow_picture`.
    """

    def __init__(self, flow_side: int = 64, farneback: tuple = FARNEBACK_DEFAULT,
                 keep_flow: bool = False) -> None:
        self.flow_side = int(flow_side)
        pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags = farneback
        self._farneback = (float(pyr_scale), int(levels), int(winsize), int(iterations),
                           int(poly_n), float(poly_sigma), int(flags))
        self.keep_flow = keep_flow
        self._previous: np.ndarray | None = None
        self._activity: list[float] = []
        self.flow_sum: np.ndarray | None = None
        self.magnitude_sum: np.ndarray | None = None
        self._magnitude: np.ndarray | None = None  # |F_t|, one array reused for every pair
        self.n_frames = 0

    def update(self, frame: np.ndarray) -> None:
        """Add the next RGB uint8 frame."""
        grey = grey_for_flow(frame, self.flow_side)
        if self._previous is not None:
            if grey.shape != self._previous.shape:
                raise ValueError(f"frame {self.n_frames + 1} has shape {frame.shape}, "
                                 f"unlike the frames before it")
            flow = cv2.calcOpticalFlowFarneback(self._previous, grey, None, *self._farneback)
            if self._magnitude is None:
                self._magnitude = np.empty(flow.shape[:2], np.float64)
                if self.keep_flow:
                    self.flow_sum = np.zeros(flow.shape, np.float64)
                    self.magnitude_sum = np.zeros(flow.shape[:2], np.float64)
            if self.keep_flow:
                _magnitude_and_sums(flow, self._magnitude, self.flow_sum, self.magnitude_sum)
            else:
                _magnitude(flow, self._magnitude)
            # NumPy's own (pairwise) mean of the float64 |F|: the bits MA_t has
            # always had, so stores stay comparable across versions.
            self._activity.append(float(self._magnitude.mean()))
        self._previous = grey
        self.n_frames += 1

    def finish(self) -> np.ndarray:
        """The motion curve MA_1..MA_T (float64, MA_1 := MA_2).

        Raises
        ------
        ValueError
            With fewer than 2 frames: motion needs a pair of frames.
        """
        if self.n_frames < 2:
            raise ValueError(f"the video needs at least 2 frames, got {self.n_frames}")
        curve = np.asarray(self._activity, dtype=np.float64)
        return np.concatenate((curve[:1], curve))


# |F| in float64, not cv2.magnitude: OpenCV's float32 magnitude takes a SIMD or
# a scalar path depending on where the (copied) inputs land in memory, and the
# two differ in the last bit, so MA_t was not reproducible from run to run.
# In Numba rather than NumPy: one pass, no temporaries; the same IEEE
# operations (no fastmath, so no fused multiply-add), hence the same bits.
@jit
def _magnitude(flow, magnitude):
    """magnitude = sqrt(fx^2 + fy^2) of an (h, w, 2) float32 flow, in float64."""
    for i in range(flow.shape[0]):
        for j in range(flow.shape[1]):
            fx = np.float64(flow[i, j, 0])
            fy = np.float64(flow[i, j, 1])
            magnitude[i, j] = np.sqrt(fx * fx + fy * fy)


@jit
def _magnitude_and_sums(flow, magnitude, flow_sum, magnitude_sum):
    """:func:`_magnitude`, and flow_sum += F, magnitude_sum += |F| (float64)."""
    for i in range(flow.shape[0]):
        for j in range(flow.shape[1]):
            fx = np.float64(flow[i, j, 0])
            fy = np.float64(flow[i, j, 1])
            m = np.sqrt(fx * fx + fy * fy)
            magnitude[i, j] = m
            flow_sum[i, j, 0] += fx
            flow_sum[i, j, 1] += fy
            magnitude_sum[i, j] += m


def motion_activity(frames, flow_side: int = 64,
                    farneback: tuple = FARNEBACK_DEFAULT) -> np.ndarray:
    """Motion curve of a whole sequence of RGB uint8 frames.

    Parameters
    ----------
    frames : iterable of np.ndarray
        (H, W, 3) RGB uint8 frames.
    flow_side, farneback
        As in :class:`MotionActivity`.

    Returns
    -------
    np.ndarray
        (T,) float64 MA_t in pixels of the flow image per frame.
    """
    accumulator = MotionActivity(flow_side, farneback)
    for frame in frames:
        accumulator.update(frame)
    return accumulator.finish()


def flow_picture(flow_sum: np.ndarray | None, magnitude_sum: np.ndarray | None,
                 size: int) -> np.ndarray:
    """HSV picture of a clip's motion (the paper's optical-flow baseline).

    Parameters
    ----------
    flow_sum : np.ndarray or None
        (h, w, 2) sum of the flow fields; None for a video without motion
        pairs gives a black image.
    magnitude_sum : np.ndarray or None
        (h, w) sum of the flow magnitudes.
    size : int
        Side S of the output.

    Returns
    -------
    np.ndarray
        (S, S, 3) RGB uint8: hue = angle of the summed flow, value = the
        summed magnitude scaled to 0..255, saturation 255.
    """
    if flow_sum is None or magnitude_sum is None:
        return np.zeros((size, size, 3), np.uint8)
    _, angle = cv2.cartToPolar(flow_sum[..., 0], flow_sum[..., 1], angleInDegrees=True)
    peak = float(magnitude_sum.max())
    value = np.zeros(magnitude_sum.shape, np.float64)
    if peak > 0:
        value = np.floor(255.0 * magnitude_sum / peak + 0.5)
    hsv = np.empty(magnitude_sum.shape + (3,), np.uint8)
    hsv[..., 0] = np.floor(angle / 2.0 + 0.5).astype(np.int64) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = value.astype(np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return resize_to(rgb, size, size)
