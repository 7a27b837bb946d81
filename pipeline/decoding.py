"""Decoding with OpenCV and FFmpeg: captures, decoded images, and their logs.

:func:`open_capture` opens a video file with a given number of FFmpeg
decoder threads; :func:`to_rgb8` turns any decoded image into RGB uint8;
:func:`ffmpeg_says` tells what FFmpeg complains of about a file that
cannot be opened. Importing this module silences FFmpeg's and OpenCV's own
log lines, which would otherwise interleave with ahdi's output and name no
item; a user who wants them sets ``OPENCV_FFMPEG_LOGLEVEL`` (e.g. 24) or
``OPENCV_LOG_LEVEL`` (e.g. WARNING), which are then left alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import cv2
import numpy as np

__all__ = ["open_capture", "to_rgb8", "ffmpeg_says"]

# Their log lines would interleave with our progress and name no item.
# FFmpeg's level is read when the first capture opens, so setting it here
# (before any) is enough; -8 is AV_LOG_QUIET.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

# Opens a file the way VideoReader does, in a child process whose output is
# captured, with FFmpeg's errors on (16 is AV_LOG_ERROR): FFmpeg logs to the
# process's own stderr/stdout, which threads share, so it cannot be captured
# per item here.
_PROBE = "import sys, cv2; cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG).read()"
_PROBE_ENV = {"OPENCV_FFMPEG_LOGLEVEL": "16", "OPENCV_LOG_LEVEL": "SILENT"}
# A line of FFmpeg's, through OpenCV's log callback or FFmpeg's own.
_FFMPEG_LINE = re.compile(r"^\[(?:OPENCV:FFMPEG:\d+|[^\]]* @ 0x[0-9a-fA-F]+)\]\s*(.*\S)")


def open_capture(path: str, decode_threads: int = 0) -> cv2.VideoCapture:
    """An FFmpeg capture of ``path``; ``decode_threads`` > 0 sets FFmpeg's decoder threads.

    FFmpeg's decoder threads are not governed by cv2.setNumThreads: left at
    their default (about one per core) they oversubscribe the cores when
    several videos are decoded at once, which is how the graph gets its
    parallelism.
    """
    if decode_threads > 0:
        return cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, decode_threads])
    return cv2.VideoCapture(path, cv2.CAP_FFMPEG)


def ffmpeg_says(path: str, timeout: float = 60.0) -> str:
    """What FFmpeg logs when it opens ``path`` (``'moov atom not found'``); '' for nothing.

    Run only for a file that failed, in a child process (about 0.1 s).
    """
    try:
        run = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True,
                             text=True, errors="replace", timeout=timeout,
                             stdin=subprocess.DEVNULL, env={**os.environ, **_PROBE_ENV})
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = (_FFMPEG_LINE.match(line) for line in (run.stdout + run.stderr).splitlines())
    said = "; ".join(dict.fromkeys(m.group(1) for m in lines if m))
    return said if len(said) <= 200 else said[:197] + "..."


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA, 16-bit, float) -> H x W x 3 RGB uint8."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
