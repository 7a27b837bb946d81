"""Is the face there? The registered-face check and the clip's face warnings.

:class:`ahdi.pipeline.face_track.FaceFollower` records, frame by frame,
whether the face shows; :func:`presence_warnings` turns that record into
the messages a conversion reports (1-based frame numbers, as the other
video warnings); they reach the store's per-item warnings.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from .face import _face_cascade

__all__ = ["VERIFY_SIDE", "NO_FACE_YET", "REGISTERED", "HELD", "DETECTED", "STATUS_NAMES",
           "face_in_registered", "frame_ranges", "format_ranges", "presence_warnings",
           "no_face_warning", "is_face_warning", "has_face_warning"]

#: Side of the image the registered-face check runs on.
VERIFY_SIDE = 80

# Status codes of a FaceTrack (face_track.py records them; warnings read them).
NO_FACE_YET = 0   # before any face: centre crop
REGISTERED = 1    # registered onto the previous frame or the reference
HELD = 2          # registration failed: the previous transform is reused
DETECTED = 3      # registration failed, a detection placed the square (unrotated)
STATUS_NAMES = ("no face yet", "registered", "held", "detected")


def face_in_registered(grey: np.ndarray, face_side: float) -> bool:
    """Is there an upright face about ``face_side`` pixels wide in the registered ``grey``?

    A registered frame shows the face, if it is there, upright and at the
    reference's size, so OpenCV's frontal Haar cascade searches a small
    copy over a narrow range of sizes (about 1.5 ms, a tenth of a
    whole-frame search). It finds the carphone face on 93 % of registered
    frames against 58 % of whole frames: the misses of a whole-frame search
    are mostly the head's tilt, which registration has undone.
    """
    factor = VERIFY_SIDE / grey.shape[0]
    small = cv2.equalizeHist(cv2.resize(grey, (VERIFY_SIDE, VERIFY_SIDE),
                                        interpolation=cv2.INTER_AREA))
    side = face_side * factor
    lo, hi = max(20, int(side * 0.7)), min(VERIFY_SIDE, int(side * 1.4))
    if hi <= lo:
        return False
    faces = _face_cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=3,
                                             minSize=(lo, lo), maxSize=(hi, hi))
    return len(faces) > 0


def frame_ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """1-based inclusive (first, last) runs of True in a boolean array."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a) + 1, int(b)) for a, b in zip(edges[::2], edges[1::2])]


def format_ranges(runs: list[tuple[int, int]]) -> str:
    """'3, 7-9' for [(3, 3), (7, 9)]."""
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def no_face_warning(name: str) -> str:
    """The warning of a clip where no face was found (every face crop gives it)."""
    return f"no face found in {name}; used a center crop"


# Recognises every line no_face_warning and presence_warnings make (tests
# check each one), so pictures can mark items whose face was not there.
_FACE_WARNING = re.compile(
    r"^no face found( in .*)?; used a center crop$"
    r"|: (a face is found on \d+% of its \d+ frames|no face on frames \d"
    r"|the face disappears at frame \d|registration failed on frames \d)")


def is_face_warning(line: str) -> bool:
    """Is ``line`` (one stored warning) a warning about the face?"""
    return bool(_FACE_WARNING.search(line))


def has_face_warning(warnings: str) -> bool:
    """Does an item's stored ``warning`` text (one warning per line) hold a face warning?"""
    return any(is_face_warning(line) for line in str(warnings).splitlines())


def presence_warnings(track, name: str, min_found_share: float, min_gap: int) -> list[str]:
    """Where the face is missing, where it leaves and comes back, where registration failed.

    Parameters
    ----------
    track : ahdi.pipeline.face_track.FaceTrack
    name : str
        How messages name the video (``source.describe()``).
    min_found_share : float
        A face on fewer than this share of the frames is warned about, with
        the faceless frames.
    min_gap : int
        Runs of at least this many faceless frames are named: the face is
        not there yet / disappears and reappears (a scene cut?) / does not
        come back. Shorter runs are a detector's blink.

    Frames that a detection placed because registration failed (status
    DETECTED: no rotation) are named too. A clip with no face at all gets
    today's message for ``--crop face``.
    """
    n = len(track.found)
    if n == 0:
        return []
    if track.reference < 0:
        return [no_face_warning(name)]
    out = []
    faceless = frame_ranges(~track.found)
    if track.found_share < min_found_share:
        out.append(f"{name}: a face is found on {track.found_share:.0%} of its {n} frames "
                   f"(none on frames {format_ranges(faceless)})")
    for first, last in faceless:
        if last - first + 1 < min_gap:
            continue
        if first == 1:
            out.append(f"{name}: no face on frames 1-{last}; it appears at frame {last + 1}")
        elif last == n:
            out.append(f"{name}: the face disappears at frame {first} and does not come back")
        else:
            out.append(f"{name}: the face disappears at frame {first} and reappears at frame "
                       f"{last + 1} (a scene cut?)")
    detected = frame_ranges(track.status == DETECTED)
    if detected:
        out.append(f"{name}: registration failed on frames {format_ranges(detected)}; "
                   "they show the detected face box, unrotated")
    return out
