"""Where the face is: face detection, landmark boxes and the square crop box.

Pure functions of frames, boxes and landmark texts: they read no file and
keep no state beyond OpenCV's cascade. A box is ``(x, y, w, h)`` in the
pixels of the source frame; a crop box has integer members, is square and
lies inside the frame. :class:`ahdi.pipeline.video.VideoReader` picks the
frames and calls these; docs/datasets.md describes the crops.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .errors import VideoError

__all__ = [
    "CROP_MARGIN", "FACE_SAMPLES", "FACE_DETECT_SIDE", "detect_face", "face_box",
    "image_sample_positions", "video_sample_positions", "parse_landmarks", "landmarks_box",
    "square_box", "center_box", "boxes_to_crop",
]

Box = tuple[float, float, float, float]
CropBox = tuple[int, int, int, int]

#: Margin added around a detected face or landmark box, as a fraction of its side.
CROP_MARGIN = 0.25
#: Frames sampled over the clip for face detection.
FACE_SAMPLES = 5
#: Longest side of the grey image the Haar cascade runs on.
FACE_DETECT_SIDE = 240

# One cascade per thread: detectMultiScale on a cascade shared by the
# threads of the threaded scheduler fails now and then inside OpenCV
# ("scaleIdx < scaleData->size()"), so each thread loads its own.
_CASCADES = threading.local()


def _face_cascade() -> cv2.CascadeClassifier:
    """OpenCV's bundled frontal-face Haar cascade, loaded once per thread."""
    cascade = getattr(_CASCADES, "cascade", None)
    if cascade is None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise VideoError(f"{path}: cannot load OpenCV's Haar face cascade")
        _CASCADES.cascade = cascade
    return cascade


# ----------------------------------------------------------------------
# boxes
# ----------------------------------------------------------------------
def square_box(cx: float, cy: float, side: float, width: int, height: int) -> CropBox:
    """A square of ``side`` centred at (cx, cy), shrunk and shifted to lie inside the frame."""
    side = int(round(min(side, width, height)))
    side = max(1, side)
    x = int(round(cx - side / 2))
    y = int(round(cy - side / 2))
    x = min(max(x, 0), width - side)
    y = min(max(y, 0), height - side)
    return (x, y, side, side)


def center_box(width: int, height: int) -> CropBox:
    """The largest centred square of a ``width`` x ``height`` frame."""
    side = min(width, height)
    return ((width - side) // 2, (height - side) // 2, side, side)


def boxes_to_crop(boxes: Sequence[Box], width: int, height: int) -> CropBox:
    """Median box (centre and side) over frames, enlarged by CROP_MARGIN, made square."""
    arr = np.asarray(boxes, dtype=np.float64)
    cx = float(np.median(arr[:, 0] + arr[:, 2] / 2))
    cy = float(np.median(arr[:, 1] + arr[:, 3] / 2))
    side = float(np.median(np.maximum(arr[:, 2], arr[:, 3]))) * (1 + CROP_MARGIN)
    return square_box(cx, cy, side, width, height)


# ----------------------------------------------------------------------
# which frames the face search looks at
# ----------------------------------------------------------------------
def image_sample_positions(n: int) -> list[int]:
    """Indices of the frame images after the first that the face search reads.

    Up to FACE_SAMPLES indices spread over ``n`` frame images, ends
    included; the first image (index 0), read anyway, is left out.
    """
    spread = np.linspace(0, n - 1, min(FACE_SAMPLES, n)).round().astype(int)
    return [i for i in sorted(set(spread)) if i != 0]


def video_sample_positions(n: int) -> list[int]:
    """Frame numbers inside a clip of ``n`` frames that the face search decodes.

    FACE_SAMPLES - 1 evenly spaced frames, the ends left out (the first
    frame is already decoded); none when the frame count is unknown.
    """
    if n < 2:
        return []
    return [int(p) for p in np.linspace(0, n - 1, FACE_SAMPLES + 1)[1:-1].round()]


# ----------------------------------------------------------------------
# faces
# ----------------------------------------------------------------------
def grey_of(image: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Grey copy of an RGB (or, with ``bgr``, OpenCV's BGR) uint8 image."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if bgr else cv2.COLOR_RGB2GRAY)


def detect_face(image: np.ndarray, bgr: bool = False) -> Box | None:
    """Largest frontal face (x, y, w, h) in frame coordinates, or None.

    ``image`` is RGB, or BGR with ``bgr`` (a decoded frame searched as it is,
    not swapped first).
    """
    h, w = image.shape[:2]
    scale = min(1.0, FACE_DETECT_SIDE / max(h, w))
    grey = grey_of(image, bgr)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    side = min(grey.shape)
    min_face = max(20, side // 6)
    if side < min_face:
        return None
    faces = _face_cascade().detectMultiScale(grey, scaleFactor=1.15, minNeighbors=5,
                                             minSize=(min_face, min_face))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return (x / scale, y / scale, fw / scale, fh / scale)


def face_box(frames: Iterable[np.ndarray], width: int, height: int) -> CropBox | None:
    """Crop box of the face over RGB ``frames`` of a ``width`` x ``height`` clip.

    The largest face of each frame; the median over the frames where one is
    found (:func:`boxes_to_crop`). None when no frame shows a face.
    """
    boxes = [b for b in (detect_face(f) for f in frames) if b is not None]
    if not boxes:
        return None
    return boxes_to_crop(boxes, width, height)


# ----------------------------------------------------------------------
# landmarks
# ----------------------------------------------------------------------
def parse_landmarks(text: str, name: str) -> np.ndarray:
    """66 'x y' lines of an AAM file -> (N, 2) float array."""
    try:
        pts = np.array([[float(v) for v in line.split()[:2]]
                        for line in text.splitlines() if line.strip()], dtype=np.float64)
    except ValueError:
        raise VideoError(f"{name}: landmark file is not lines of 'x y' numbers") from None
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] != 2:
        raise VideoError(f"{name}: landmark file holds no 'x y' points")
    return pts


def landmarks_box(texts: Iterable[tuple[str, str]], width: int, height: int) -> CropBox | None:
    """Crop box of the landmark points of a clip, None when ``texts`` is empty.

    Parameters
    ----------
    texts : iterable of (text, name)
        The landmark files of the frames: their text, and how messages name
        each (a malformed file raises :class:`VideoError` naming it).
    width, height : int
        Frame size.
    """
    boxes = []
    for text, name in texts:
        pts = parse_landmarks(text, name)
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        boxes.append((x0, y0, x1 - x0, y1 - y0))
    if not boxes:
        return None
    return boxes_to_crop(boxes, width, height)
