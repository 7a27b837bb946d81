"""A folder or an archive as a list of files: :class:`FileTree`.

The adapters (:mod:`ahdi.pipeline.adapters`) list a dataset from the
relative posix paths a tree holds and make its video sources; a tree reads
only small label files, never video pixels. A folder is walked following
links to folders, each real folder once; an unreadable folder is an error
naming it; what the walk leaves out (a FIFO, socket or device named like a
video, a second link to one folder) is reported, one message each, to the
tree's ``report``.

A tree's location may be a URL (``s3://bucket/videos/``): every object under
that prefix is a file of the tree (object storage has no links, FIFOs or
unreadable folders), the sources it makes carry URLs, and its small label
files are fetched concurrently.
"""

from __future__ import annotations

import os
import posixpath
import warnings
from collections.abc import Callable

from . import remote
from .archives import Archive, archive_stem, is_archive
from .errors import DatasetError, VideoError
from .files import IMAGE_EXTS, VIDEO_EXTS, decode_text, extension, not_regular
from .sources import VideoSource

__all__ = ["FileTree", "warn_left_out"]

# Folders and files that archivers and file browsers add beside the data.
_JUNK = ("__MACOSX/",)
_JUNK_FILES = (".DS_Store", "Thumbs.db")


def warn_left_out(message: str) -> None:
    """The default ``report`` of a listing: a Python warning per thing left out."""
    warnings.warn(f"left out: {message}", stacklevel=3)


class FileTree:
    """The files under a folder or in an archive, as posix paths relative to ``prefix``.

    A folder is walked following links to folders (a subject folder may be
    a link), each real folder once. Only regular files are listed; a FIFO,
    socket or device named like a video or image is left out and reported.
    An unreadable folder is a :class:`DatasetError` naming it.

    Parameters
    ----------
    location : str
        A folder or an archive: a path, or a URL (a prefix or an archive
        object on object storage).
    strip_wrapper : bool
        Drop one top-level folder that wraps every file.
    report : callable, optional
        Called with one message per file or folder left out (default:
        :func:`warn_left_out`).
    """

    def __init__(self, location: str, strip_wrapper: bool = True,
                 report: Callable[[str], None] | None = None):
        self.location = remote.absolute(location)
        self.remote = remote.is_remote(self.location)
        self.archive: str | None = None
        self._arc: Archive | None = None
        self.report = report or warn_left_out
        base = remote.basename(self.location)
        if is_archive(self.location) and (
                remote.kind(self.location, DatasetError) == "file" if self.remote
                else os.path.isfile(self.location)):
            self.archive = self.location
            try:
                self._arc = Archive(self.location)
            except VideoError as exc:
                raise DatasetError(str(exc)) from None
            names = self._arc.names()
            base = archive_stem(base)
        elif self.remote:
            names = remote.list_files(self.location, DatasetError)
        else:
            names = self._walk()
        names = [n for n in names if not n.startswith(_JUNK)
                 and posixpath.basename(n) not in _JUNK_FILES]
        self.name = base
        self.all_names = names
        self.prefix = ""
        self.files = names
        self._set = set(names)
        if strip_wrapper:
            self.strip_wrapper()

    def _walk(self) -> list[str]:
        """Relative posix paths of the files under the folder, in name order.

        os.walk would skip an unreadable folder silently and not enter a
        linked one: this walk refuses the first and follows the second,
        each real folder once (a link loop, or a link to a folder listed
        anyway, would list its videos twice, under two subjects). Links are
        entered last, so a folder is listed under its own path, not a link's.
        """
        names: list[str] = []
        seen: dict[str, str] = {}
        pending = [(self.location, "")]
        links: list[tuple[str, str]] = []
        while pending or links:
            folder, rel = pending.pop() if pending else links.pop(0)
            real = os.path.realpath(folder)
            if real in seen:
                self.report(f"{folder}: a link to {seen[real]}, a folder listed already")
                continue
            seen[real] = folder
            subfolders = []
            for entry in self._entries(folder):
                kind = _entry_kind(entry)
                if kind == "folder":
                    sub = (entry.path, rel + entry.name + "/")
                    (links if entry.is_symlink() else subfolders).append(sub)
                elif kind == "file":
                    names.append(rel + entry.name)
                elif extension(entry.name) in VIDEO_EXTS + IMAGE_EXTS:
                    self.report(f"{entry.path}: {kind}")
            pending += reversed(subfolders)  # depth first, in name order
        return names

    @staticmethod
    def _entries(folder: str) -> list[os.DirEntry]:
        """The entries of a folder in name order; DatasetError naming it if unreadable."""
        try:
            with os.scandir(folder) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise DatasetError(f"{folder}: cannot list the folder "
                               f"({exc.strerror or exc})") from None

    def unstrip(self) -> None:
        """Undo :meth:`strip_wrapper`: every file relative to the location again."""
        self.prefix = ""
        self.files = self.all_names
        self._set = set(self.files)

    def strip_wrapper(self) -> None:
        """Drop one top-level folder that wraps every file."""
        tops = {n.split("/", 1)[0] for n in self.files}
        if len(tops) == 1 and all("/" in n for n in self.files):
            top = tops.pop() + "/"
            self.prefix += top
            self.files = [n[len(top):] for n in self.files]
            self._set = set(self.files)

    def layout(self) -> str:
        """'unbc', 'biovid' or 'folder' from the files present (after stripping a wrapper)."""
        def has_dir(d: str) -> bool:
            return any(n.startswith(d + "/") for n in self.files)
        if has_dir("Images") and has_dir("Sequence_Labels"):
            return "unbc"
        if "samples.csv" in self._set and has_dir("video"):
            return "biovid"
        return "folder"

    def exists(self, rel: str) -> bool:
        return rel in self._set

    def full(self, rel: str) -> str:
        """Filesystem path, or archive member name, of a relative path."""
        if self.archive is not None:
            return (self.prefix + rel).rstrip("/")
        parts = [p for p in (self.prefix + rel).split("/") if p]
        return remote.join(self.location, *parts)

    def read_bytes(self, rel: str) -> bytes | None:
        """Content of a file, or None when it is missing or unreadable."""
        if not self.exists(rel):
            return None
        try:
            if self._arc is not None:
                return self._arc.read(self.full(rel))
            if self.remote:
                return remote.read_bytes(self.full(rel), self.full(rel), DatasetError)
            with open(self.full(rel), "rb") as fh:
                return fh.read()
        except (VideoError, DatasetError, OSError):
            return None

    def read_text(self, rel: str) -> str | None:
        """Text of a small label file, undecodable bytes replaced; None when unreadable."""
        data = self.read_bytes(rel)
        return None if data is None else data.decode("utf-8", "replace")

    def read_user_text(self, rel: str, name: str, what: str) -> str | None:
        """Text of a file the user wrote (a CSV): strict UTF-8, DatasetError naming ``name``."""
        data = self.read_bytes(rel)
        return None if data is None else decode_text(data, name, what, DatasetError)

    def read_many(self, rels: list[str]) -> dict[str, str]:
        """Texts of the existing files among ``rels`` (read in archive order)."""
        have = [r for r in rels if self.exists(r)]
        if self._arc is None and self.remote:
            # thousands of small objects: fetched concurrently, not one by one
            got = remote.read_many([self.full(r) for r in have], DatasetError)
            return {r: got[self.full(r)].decode("utf-8", "replace")
                    for r in have if self.full(r) in got}
        if self._arc is not None:
            have = self._arc.in_reading_order(have, self.full)
        out = {}
        for r in have:
            t = self.read_text(r)
            if t is not None:
                out[r] = t
        return out

    def file_source(self, rel: str) -> VideoSource:
        return VideoSource("file", self.full(rel), archive=self.archive)

    def frames_source(self, folder: str, frames: list[str], landmarks: list[str] | None = None,
                      fps: float | None = None) -> VideoSource:
        return VideoSource("frames", self.full(folder),
                           archive=self.archive,
                           frames=tuple(self.full(f) for f in frames),
                           landmarks=None if landmarks is None else
                           tuple(self.full(f) if f else "" for f in landmarks),
                           fps=fps)

    def close(self) -> None:
        if self._arc is not None:
            self._arc.close()
            self._arc = None


def _entry_kind(entry: os.DirEntry) -> str:
    """'folder', 'file', or why an entry is neither (links followed).

    A dangling link counts as a file: it becomes an item whose reading
    names the missing file, like any other missing video.
    """
    try:
        if entry.is_dir():
            return "folder"
        if entry.is_file():
            return "file"
        kind = not_regular(entry.stat().st_mode)
    except FileNotFoundError:
        return "file"
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    return f"is {kind}, not a regular file" if kind else "file"
