"""File names, file kinds and the checked reads shared by listing and reading.

The extensions that make a file a video or a frame image, the natural sort
order of frame names, :func:`check_readable`, which turns a missing,
unreadable, empty or not-regular file into a :class:`VideoError` naming it,
and :func:`read_text` / :func:`decode_text`, the one way a user's text file
(a labels CSV, a ``--config``, a datasets registry) is read: a bad encoding
is an error naming the file and the line. This module sits below
:mod:`ahdi.pipeline.archives` and :mod:`ahdi.pipeline.video`, which both
check files before reading them.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from .errors import AhdiError, VideoError

__all__ = ["VIDEO_EXTS", "IMAGE_EXTS", "extension", "natural_key", "check_readable",
           "not_regular", "read_text", "decode_text"]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# What a file that is not a regular file is, in messages. Opening a FIFO
# blocks until someone writes to it, so such files are refused unopened.
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def extension(name: str) -> str:
    """The extension of a file name, lower-cased, with its dot ('' without one)."""
    return os.path.splitext(name)[1].lower()


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def not_regular(mode: int) -> str | None:
    """What a file of this ``st_mode`` is when it is neither a regular file nor a folder.

    Returns
    -------
    str or None
        ``'a FIFO (named pipe)'``, ``'a socket'``, ``'a character device'``
        or ``'a block device'``; None for a regular file or a folder.
    """
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return None


def check_readable(path: str, name: str) -> None:
    """Raise VideoError when a file is missing, not a regular file, unreadable or empty.

    Parameters
    ----------
    path : str
        The file on disk.
    name : str
        How messages name it (``path``, or ``archive!member`` for a copy).
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VideoError(f"{name}: file does not exist") from None
    except OSError as exc:
        raise VideoError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        _refuse_folder(path, name)
    kind = not_regular(mode)
    if kind:
        raise VideoError(f"{name}: is {kind}, not a regular file")
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


def read_text(path: str | os.PathLike, what: str, error: type[AhdiError]) -> str:
    """The text of a user's UTF-8 file (a leading byte-order mark dropped).

    Parameters
    ----------
    path : path
        The file.
    what : str
        What the file is, as messages name it (``'labels CSV'``).
    error : type of AhdiError
        The error raised, so that each caller keeps its kind of problem
        (:class:`DatasetError` for a labels CSV, :class:`SettingError` for
        a config).

    Raises
    ------
    AhdiError
        ``error``, naming the file: missing, a folder, not a regular file
        (never opened, so a FIFO cannot hang the run), unreadable, or not
        UTF-8 (naming the line and the byte).
    """
    name = str(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{name}: {what} does not exist") from None
    except OSError as exc:
        raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise error(f"{name}: {what} is a folder, not a file")
    kind = not_regular(mode)
    if kind:
        raise error(f"{name}: {what} is {kind}, not a regular file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise error(f"{name}: cannot read the {what} ({exc.strerror or exc})") from None
    return decode_text(data, name, what, error)


def decode_text(data: bytes, name: str, what: str, error: type[AhdiError]) -> str:
    """``data`` as UTF-8 text without a byte-order mark; ``error`` naming line and byte if not.

    Examples
    --------
    >>> from ahdi.pipeline.errors import DatasetError
    >>> decode_text(b"path\\ncaf\\xe9.mp4\\n", "l.csv", "labels CSV", DatasetError)
    Traceback (most recent call last):
    ...
    ahdi.pipeline.errors.DatasetError: l.csv:2: labels CSV is not UTF-8 text (byte 0xe9 at \
column 4); save it as UTF-8
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(f"{name}:{line}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} "
                    f"at column {column}); save it as UTF-8") from None


def read_yaml(path: str | os.PathLike, what: str, error: type[AhdiError]) -> Any:
    """The YAML document of a user's file (None when empty), read as :func:`read_text` does.

    Malformed YAML raises ``error`` as ``FILE:LINE: not valid YAML (<problem>)``.
    """
    import yaml   # only the commands that read a YAML file pay for it

    text = read_text(path, what, error)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{path}{line}: {what} is not valid YAML ({problem})") from None
