"""Read-only access to the members of ``.zip`` / ``.tar`` / ``.tar.gz`` archives.

Datasets and single videos can be read in place from an archive: an
:class:`Archive` lists its regular-file members, reads one member's bytes
or copies it to a file, and orders members so that a tar is read forwards.
Every failure raises :class:`VideoError` naming ``archive!member``.

An archive on object storage (``s3://bucket/clips.zip``) is read the same
way without being fetched whole: a zip's directory and members by ranged
reads, a plain tar's member by one ranged read at its indexed offset (the
index, built once per process by reading the headers forwards, is cached
like a local one); a ``.tar.gz`` is decompressed up to the member.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from typing import Any

from . import remote
from .errors import VideoError
from .files import check_readable

__all__ = ["ARCHIVE_SUFFIXES", "is_archive", "archive_stem", "Archive", "open_archive"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

# Member index of each tar read by this process, keyed by (path, mtime, size)
# so that a rewritten archive is indexed again.
_TAR_INDEX: dict[tuple, dict[str, tuple[int, int]]] = {}


def is_archive(path: str | os.PathLike) -> bool:
    """True when ``path`` ends like a supported archive (.zip .tar .tar.gz .tgz)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def archive_stem(name: str) -> str:
    """``name`` without its archive suffix (``clips.tar.gz`` -> ``clips``)."""
    for suf in (".tar.gz", ".tgz", ".tar", ".zip"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _version(path: str) -> tuple:
    """What identifies this version of the archive: path, size and mtime (or ETag)."""
    if remote.is_remote(path):
        return (path, *remote.object_version(path, VideoError))
    st = os.stat(path)
    return (os.path.abspath(path), st.st_mtime_ns, st.st_size)


def _open_raw(path: str):
    """The archive's bytes as a seekable binary file (ranged reads on object storage)."""
    return remote.open_binary(path, VideoError) if remote.is_remote(path) else open(path, "rb")


def _tar_index(path: str) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) of the regular files of a tar, cached per process."""
    key = _version(path)
    index = _TAR_INDEX.get(key)
    if index is None:
        index = {}
        with _open_raw(path) as raw, tarfile.open(fileobj=raw, mode="r:*") as tf:
            for info in tf:
                if info.isreg():
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    index[name] = (info.offset_data, info.size)
        if len(_TAR_INDEX) > 16:
            _TAR_INDEX.clear()
        _TAR_INDEX[key] = index
    return index


class Archive:
    """Read-only access to the regular-file members of a zip or tar archive.

    Zip members are read directly; tar members through a cached index of
    their offsets (a ``.tar.gz`` is decompressed up to the member, so read
    its members in archive order, see :meth:`in_reading_order`; zip is the
    better container for large collections).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if remote.is_remote(self.path):
            if remote.kind(self.path, VideoError) != "file":
                raise VideoError(f"{self.path}: file does not exist")
        else:
            check_readable(self.path, self.path)
        self._zip: zipfile.ZipFile | None = None
        self._index: dict[str, tuple[int, int]] | None = None  # a tar's members
        self._file = None
        self._raw = None   # the zip's own file object
        self._gz_raw = None   # what a remote .tar.gz is decompressed from
        self._gz = False
        try:
            self._raw = _open_raw(self.path)
            if zipfile.is_zipfile(self._raw):
                self._zip = zipfile.ZipFile(self._raw)
                self._names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
            else:
                tar = _tar_kind(self._raw)   # the open file: no second open (request)
                self._raw.close()
                self._raw = None
                if tar is None:
                    raise VideoError(f"{self.path}: not a zip or tar archive")
                self._gz = tar == "tar.gz"
                self._index = _tar_index(self.path)
                self._names = list(self._index)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            self.close()
            raise VideoError(f"{self.path}: cannot read archive ({exc})") from exc
        except BaseException:
            self.close()
            raise

    def names(self) -> list[str]:
        """Names of the regular-file members (posix paths)."""
        return list(self._names)

    def __contains__(self, member: str) -> bool:
        if self._zip is not None:
            try:
                self._zip.getinfo(member)
                return True
            except KeyError:
                return False
        return member in self._index

    def in_reading_order(self, items: list, member: Callable[[Any], str] = str) -> list:
        """``items`` in the order their members are best read; ``member(item)`` names each.

        A tar is read forwards (going back in a ``.tar.gz`` restarts the
        decompression), so its members come in archive order; a zip reads
        any member directly and keeps the given order. Every member must
        be in the archive.
        """
        if self._index is None:
            return list(items)
        return sorted(items, key=lambda item: self._index[member(item)][0])

    def read(self, member: str) -> bytes:
        """Bytes of one member; :class:`VideoError` when it is missing or unreadable."""
        where = f"{self.path}!{member}"
        try:
            if self._zip is not None:
                return self._zip.read(member)
            return self._read_tar_member(member)
        except KeyError:
            raise VideoError(f"{where}: no such member in the archive") from None
        except (zipfile.BadZipFile, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise VideoError(f"{where}: cannot read archive member ({exc})") from exc

    def _read_tar_member(self, member: str) -> bytes:
        """Bytes of a tar member from its indexed offset (KeyError when absent)."""
        if member not in self._index:
            raise KeyError(member)
        offset, size = self._index[member]
        if not self._gz and remote.is_remote(self.path):
            # one ranged read, not a stream: workers read members in any order
            fs, key = remote.filesystem(self.path, VideoError)
            with remote.remote_errors(f"{self.path}!{member}", VideoError):
                data = fs.cat_file(key, start=offset, end=offset + size)
            if len(data) != size:
                raise EOFError(f"archive ends after {len(data)} of {size} bytes")
            return data
        if self._file is None:
            self._file = self._open_tar()
        if self._gz and self._file.tell() > offset:
            self._file.close()  # gzip seeks backwards by restarting; do it cheaply
            self._file = self._open_tar()
        self._file.seek(offset)
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError(f"archive ends after {len(data)} of {size} bytes")
        return data

    def _open_tar(self):
        """The tar's bytes, decompressed if it is a .tar.gz, as one file object."""
        if not self._gz:
            return _open_raw(self.path)
        if not remote.is_remote(self.path):
            return gzip.open(self.path, "rb")
        if self._gz_raw is not None:
            self._gz_raw.close()
        self._gz_raw = _open_raw(self.path)   # closed with the archive
        return gzip.GzipFile(fileobj=self._gz_raw, mode="rb")

    def copy_to(self, member: str, dest: str) -> None:
        """Write one member to the file ``dest``."""
        where = f"{self.path}!{member}"
        if self._zip is not None:
            try:
                with self._zip.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                return
            except KeyError:
                raise VideoError(f"{where}: no such member in the archive") from None
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise VideoError(f"{where}: cannot read archive member ({exc})") from exc
        with open(dest, "wb") as dst:
            dst.write(self.read(member))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._file is not None:
            self._file.close()
            self._file = None
        for raw in (self._raw, self._gz_raw):
            if raw is not None:
                raw.close()
        self._raw = self._gz_raw = None

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tar_kind(raw) -> str | None:
    """'tar', 'tar.gz', or None when the open binary file ``raw`` is neither.

    ``raw`` stays open: tarfile and gzip leave a file object they were
    given open.
    """
    raw.seek(0)
    gz = raw.read(2) == b"\x1f\x8b"
    raw.seek(0)
    try:
        with tarfile.open(fileobj=raw, mode="r:*"):
            return "tar.gz" if gz else "tar"
    except (tarfile.TarError, EOFError, OSError):
        return None


def open_archive(path: str | os.PathLike) -> Archive:
    """Open a zip / tar / tar.gz archive for reading members."""
    return Archive(path)
