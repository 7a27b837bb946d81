"""File names and the readable-file check shared by archives, video reading and adapters.

The extensions that make a file a video or a frame image, the natural sort
order of frame names, and :func:`check_readable`, which turns a missing,
unreadable or empty file into a :class:`VideoError` naming it. This module
sits below :mod:`ahdi.pipeline.archives` and :mod:`ahdi.pipeline.video`,
which both check files before reading them.
"""

from __future__ import annotations

import os
import re

from .errors import VideoError

__all__ = ["VIDEO_EXTS", "IMAGE_EXTS", "natural_key", "check_readable"]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def check_readable(path: str, name: str) -> None:
    """Raise VideoError when a file is missing, unreadable or empty.

    Parameters
    ----------
    path : str
        The file on disk.
    name : str
        How messages name it (``path``, or ``archive!member`` for a copy).
    """
    if not os.path.exists(path):
        raise VideoError(f"{name}: file does not exist")
    if os.path.isdir(path):
        _refuse_folder(path, name)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise VideoError(f"{name}: permission denied") from None
    except OSError as exc:
        raise VideoError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if os.path.getsize(path) == 0:
        raise VideoError(f"{name}: empty file (0 bytes)")


def _refuse_folder(path: str, name: str) -> None:
    """Raise the VideoError for a folder given where a file is needed.

    A folder without frame images gets its own message: it is most often a
    frame folder whose images are missing, not a misplaced video.
    """
    try:
        names = os.listdir(path)
    except OSError as exc:
        raise VideoError(f"{name}: cannot list the folder ({exc.strerror or exc})") from None
    if not any(n.lower().endswith(IMAGE_EXTS) for n in names):
        raise VideoError(f"{name}: is an empty frame folder (no {', '.join(IMAGE_EXTS)} "
                         "images in it), not a video file")
    raise VideoError(f"{name}: is a folder, not a video file")
