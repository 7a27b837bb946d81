"""Locations that are URLs: object storage (``s3://``, ``gs://``) through fsspec.

Wherever ahdi takes a path it also takes a URL: ``s3://bucket/key``,
``gs://bucket/key`` (or any other fsspec protocol), and ``file:///path``,
which is the plain path. This module is the one place that knows about
them:

* parsing: :func:`is_remote`, :func:`absolute`, :func:`join`, :func:`basename`;
* the filesystem of a URL (:func:`filesystem`): s3fs and gcsfs come with the
  ``cloud`` extra, and find their credentials the usual way (environment
  variables, ``~/.aws`` or gcloud config files, an instance's role;
  ``AWS_ENDPOINT_URL`` points s3fs at an S3-compatible server);
* what a location is and what is under it (:func:`kind`, :func:`list_files`),
  reading small objects (:func:`read_bytes`, :func:`read_many`) and opening
  one for ranged reads (:func:`open_binary`, what archives use);
* copying one object to bounded local temporary space (:func:`fetch`): a
  video is decoded from a local file, removed when the reader closes;
* the Zarr store object of a store's location (:func:`zarr_store`), whose
  writes pass a write fence while one is set for the store
  (:mod:`ahdi.pipeline.fence`: the writer lock's holder checks it still
  holds the lock before every write);
* objects written only on a condition (:class:`ConditionalObject`), what the
  writer lock of a store on object storage is made of.

Every failure raises the caller's kind of :class:`AhdiError`, naming the
URL and the problem (missing, access denied, no credentials, no network).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from . import fence
from .errors import AhdiError, VideoError

__all__ = ["is_url", "is_remote", "protocol", "as_local", "absolute", "join", "basename",
           "parent", "filesystem", "failure_reason", "remote_errors", "kind", "exists",
           "check_bucket", "list_files", "read_bytes", "read_many", "open_binary", "object_version",
           "worker_problem", "fetch", "zarr_store",
           "ConditionalObject", "ConditionsUnsupported", "CONDITIONAL_PROTOCOLS",
           "FETCH_PREFIX"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_LOCAL_PROTOCOLS = ("file", "local")
#: fsspec's names of the same S3 filesystem.
_S3_PROTOCOLS = ("s3", "s3a")
#: Protocols whose objects ahdi can create and replace only on a condition
#: that the server checks atomically (S3's ``If-None-Match`` / ``If-Match``).
CONDITIONAL_PROTOCOLS = _S3_PROTOCOLS
#: Name prefix of the files :func:`fetch` makes, so that a leftover of a
#: killed run is recognisable in the temporary folder.
FETCH_PREFIX = "ahdi-fetch-"
#: What the cloud filesystems are installed by, per protocol, for messages.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}
_CREDENTIALS_HINT = ("check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                     "AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS, or the machine's role)")


# ----------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------
def protocol(location: str | os.PathLike) -> str | None:
    """The URL scheme of ``location``, lower-cased (``'s3'``), or None for a plain path."""
    match = _SCHEME.match(os.fspath(location)) if isinstance(location, str) else None
    return match.group(1).lower() if match else None


def is_url(location: str | os.PathLike) -> bool:
    """True when ``location`` is written as a URL (``scheme://...``), ``file://`` too."""
    return protocol(location) is not None


def is_remote(location: str | os.PathLike) -> bool:
    """True for a URL of another filesystem than the local one (``s3://``, ``gs://``)."""
    scheme = protocol(location)
    return scheme is not None and scheme not in _LOCAL_PROTOCOLS


def as_local(location: str | os.PathLike) -> str:
    """A plain path for a plain path or a ``file://`` URL; a remote URL unchanged."""
    text = os.fspath(location)
    if protocol(text) in _LOCAL_PROTOCOLS:
        return unquote(urlparse(text).path) or "/"
    return text


def absolute(location: str | os.PathLike) -> str:
    """The location as messages and stores name it: an absolute path, or the URL
    without a trailing slash (``s3://b/x/`` and ``s3://b/x`` are one store)."""
    text = os.fspath(location)
    if is_remote(text):
        head, rest = text.split("://", 1)
        return f"{head.lower()}://{rest.rstrip('/')}"
    return os.path.abspath(as_local(text))


def join(location: str, *parts: str) -> str:
    """``location`` / ``parts``: posix joins for a URL, ``os.path.join`` for a path."""
    if is_remote(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return os.path.join(location, *parts)


def basename(location: str) -> str:
    """The last part of a path or URL (``s3://b/videos/`` -> ``videos``)."""
    if is_remote(location):
        return posixpath.basename(location.rstrip("/"))
    return os.path.basename(os.path.normpath(as_local(location)))


def parent(location: str) -> str:
    """The folder (or prefix) holding ``location``."""
    if is_remote(location):
        return posixpath.dirname(location.rstrip("/"))
    return os.path.dirname(os.path.abspath(as_local(location)))


# ----------------------------------------------------------------------------
# filesystems and their failures
# ----------------------------------------------------------------------------
def filesystem(url: str, error: type[AhdiError], **options: Any) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) of a remote URL.

    ``options`` go to the filesystem (fsspec keeps one instance per set of
    options). A protocol fsspec does not know, or one whose package is
    missing, raises ``error`` naming the URL and what to install.
    """
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **options)
    except ImportError:
        package = _PACKAGES.get(protocol(url) or "", "the fsspec package for it")
        raise error(f"{url}: reading {protocol(url)}:// URLs needs {package}: "
                    f"pip install 'ahdi[cloud]'") from None
    except ValueError as exc:
        raise error(f"{url}: {protocol(url)}:// is not a protocol fsspec knows ({exc})"
                    ) from None


def failure_reason(exc: BaseException) -> str:
    """What went wrong reaching object storage, in words (no class names)."""
    try:
        from botocore import exceptions as boto
    except ImportError:  # s3fs absent: only fsspec's own errors can come
        boto = None
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if isinstance(exc, PermissionError):
        return f"access denied; {_CREDENTIALS_HINT}"
    if boto is not None and isinstance(exc, boto.NoCredentialsError):
        return f"no credentials found; {_CREDENTIALS_HINT}"
    if boto is not None and isinstance(exc, boto.EndpointConnectionError):
        return f"cannot reach the server ({exc})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


@contextlib.contextmanager
def remote_errors(name: str, error: type[AhdiError]) -> Iterator[None]:
    """Turn a failure of object storage inside the block into ``error`` naming ``name``."""
    try:
        yield
    except AhdiError:
        raise
    except (OSError, ValueError, RuntimeError, *_client_errors()) as exc:
        raise error(f"{name}: {failure_reason(exc)}") from exc


@functools.cache
def _client_errors() -> tuple[type[BaseException], ...]:
    """The base classes of the cloud clients' own errors (those installed): they
    share no base with OSError (no credentials, no network, HTTP errors)."""
    found: list[type[BaseException]] = []
    for module, names in (("botocore.exceptions", ("BotoCoreError", "ClientError")),
                          ("aiohttp", ("ClientError",)), ("gcsfs.retry", ("HttpError",))):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        found += [getattr(imported, n) for n in names if hasattr(imported, n)]
    return tuple(found)


def kind(location: str, error: type[AhdiError]) -> str | None:
    """``'folder'`` (an S3 prefix holding objects too), ``'file'``, or None when
    nothing is there; a plain path is asked of the local filesystem."""
    if not is_remote(location):
        path = as_local(location)
        return "folder" if os.path.isdir(path) else "file" if os.path.lexists(path) else None
    fs, path = filesystem(location, error)
    with remote_errors(location, error):
        fs.invalidate_cache(path)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
    return "folder" if info.get("type") == "directory" else "file"


def exists(location: str, error: type[AhdiError]) -> bool:
    """True when a path (links followed) or URL names a file or folder."""
    if not is_remote(location):
        return os.path.exists(as_local(location))
    return kind(location, error) is not None


def check_bucket(url: str, error: type[AhdiError]) -> None:
    """Raise ``error`` when the bucket of ``url`` does not exist or cannot be seen."""
    fs, path = filesystem(url, error)
    bucket = f"{protocol(url)}://{path.split('/', 1)[0]}"
    with remote_errors(bucket, error):
        found = fs.exists(path.split("/", 1)[0])
    if not found:
        raise error(f"{url}: the bucket {bucket} does not exist (or these credentials "
                    f"cannot see it)")


def list_files(url: str, error: type[AhdiError]) -> list[str]:
    """Posix paths, relative to ``url``, of every object under a URL prefix, sorted."""
    fs, path = filesystem(url, error)
    root = path.rstrip("/")
    with remote_errors(url, error):
        fs.invalidate_cache(root)
        found = fs.find(root, withdirs=False)
    rels = [p[len(root) + 1:] for p in found if p.startswith(root + "/")]
    return sorted(r for r in rels if r and not r.endswith("/"))


def read_bytes(url: str, name: str, error: type[AhdiError]) -> bytes:
    """The whole content of one object; ``error`` naming ``name`` when it cannot be read."""
    fs, path = filesystem(url, error)
    with remote_errors(name, error):
        return fs.cat_file(path)


def read_many(urls: Sequence[str], error: type[AhdiError]) -> dict[str, bytes]:
    """The contents of the objects among ``urls`` that exist, fetched concurrently
    (a dataset's thousands of small label files in a few round trips)."""
    if not urls:
        return {}
    fs, _ = filesystem(urls[0], error)
    paths = {filesystem(u, error)[1]: u for u in urls}
    with remote_errors(urls[0], error):
        got = fs.cat(list(paths), on_error="omit")
    return {paths[p]: data for p, data in got.items() if isinstance(data, bytes)}


def open_binary(url: str, error: type[AhdiError]):
    """A seekable binary file object on one object, read by ranged requests."""
    fs, path = filesystem(url, error)
    with remote_errors(url, error):
        # read-ahead blocks: an archive's headers are read forwards in small steps
        return fs.open(path, "rb", block_size=256 * 1024, cache_type="readahead")


def object_version(url: str, error: type[AhdiError]) -> tuple[int, str]:
    """(size, version tag) of one object: a rewritten object has another tag."""
    fs, path = filesystem(url, error)
    with remote_errors(url, error):
        fs.invalidate_cache(path)
        info = fs.info(path)
    tag = info.get("ETag") or info.get("etag") or info.get("generation") or \
        info.get("LastModified") or info.get("mtime") or ""
    return int(info.get("size") or 0), str(tag)


def worker_problem(store: str, sources: Sequence[str], host: str) -> str | None:
    """What keeps a cluster worker on ``host`` from a store on object storage or
    from the sources (paths or URLs): it cannot see or write the store, or
    see a source; None when nothing does.

    Writing is tried with an empty object created and removed inside the
    store: a worker without write access would otherwise fail every item.
    """
    from .errors import ClusterPathError

    try:
        if kind(store, ClusterPathError) != "folder":
            return f"worker on {host} cannot see the store {store}"
        fs, path = filesystem(store, ClusterPathError)
        probe = f"{path.rstrip('/')}/.ahdi-probe-{host}-{os.getpid()}"
        with remote_errors(f"cannot write to the store {store}", ClusterPathError):
            fs.pipe_file(probe, b"")
            fs.rm_file(probe)
        for source in sources:
            if not exists(source, ClusterPathError):
                return f"worker on {host} cannot see the source {source}"
    except ClusterPathError as exc:
        return f"worker on {host}: {exc}"
    return None


# ----------------------------------------------------------------------------
# local copies
# ----------------------------------------------------------------------------
def fetch(url: str, name: str, tmp_dir: str | None = None,
          error: type[AhdiError] = VideoError) -> str:
    """Copy one object into a new file of the local temporary folder; its path.

    The caller removes the file (a :class:`~ahdi.pipeline.video.VideoReader`
    does on close, also after an error or a cancelled task). The copy must
    fit in the free space of ``tmp_dir`` (default: the system temp folder),
    with 5 % to spare: a video that does not is refused before any byte is
    fetched, naming the sizes; a partial copy is removed.
    """
    fs, path = filesystem(url, error)
    with remote_errors(name, error):
        size = fs.size(path)
    folder = tmp_dir or tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    if size is not None and size > 0.95 * free:
        raise error(f"{name}: {size} bytes do not fit in the {free} bytes free in {folder}; "
                    f"point --tmp-dir at a larger local disk")
    if size == 0:
        raise error(f"{name}: empty file (0 bytes)")
    suffix = posixpath.splitext(path)[1] or ".video"
    fd, local = tempfile.mkstemp(prefix=FETCH_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        with remote_errors(name, error):
            fs.get_file(path, local)
    except BaseException:  # a cancelled task too: nothing half-fetched stays behind
        with contextlib.suppress(FileNotFoundError):
            os.remove(local)
        raise
    return local


# ----------------------------------------------------------------------------
# stores
# ----------------------------------------------------------------------------
def _store_options(scheme: str) -> dict[str, Any]:
    # A chunk is one small object: s3fs's concurrent download of a large
    # object first asks its size with a HEAD, one more request per chunk.
    return {"max_concurrency": 1} if scheme in _S3_PROTOCOLS else {}


def zarr_store(location: str, read_only: bool, error: type[AhdiError]):
    """The Zarr store object of a store's path or URL.

    A path (or ``file://`` URL) is a ``LocalStore``; a remote URL an
    ``FsspecStore`` on its filesystem, with the options that suit many small
    objects. A writable one made while a write fence is set for the store
    checks the fence before each write (:mod:`ahdi.pipeline.fence`).
    """
    import zarr

    if not is_remote(location):
        store = zarr.storage.LocalStore(as_local(location), read_only=read_only)
    else:
        filesystem(location, error)   # a missing package or unknown protocol, named
        with remote_errors(location, error):
            store = zarr.storage.FsspecStore.from_url(
                location, storage_options=_store_options(protocol(location) or ""),
                read_only=read_only)
    return store if read_only else fence.fenced(store, absolute(location))


# ----------------------------------------------------------------------------
# objects written on a condition (the lock of a store on object storage)
# ----------------------------------------------------------------------------
class ConditionsUnsupported(Exception):
    """The backend of a URL cannot write an object only on a condition it checks."""


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code (``'PreconditionFailed'``) carried by ``exc`` or its cause."""
    seen = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return str((response.get("Error") or {}).get("Code") or "") or None
        seen = seen.__cause__
    return None


def _precondition_failed(exc: BaseException) -> bool:
    # s3fs raises FileExistsError for a failed If-None-Match and an OSError
    # whose cause carries the code for a failed If-Match.
    return isinstance(exc, FileExistsError) or _error_code(exc) in ("PreconditionFailed", "412")


class ConditionalObject:
    """One small object on S3 created, replaced and deleted only on a condition
    that the server checks atomically.

    ``create`` succeeds only if the object is absent (``If-None-Match: *``);
    ``replace`` and ``delete`` only if it is still the version read
    (``If-Match: <ETag>``). Each returns None / False when the condition
    failed: another writer got there first. Other protocols raise
    :class:`ConditionsUnsupported`: fsspec's generic ``mode="create"`` is an
    exists-then-write that two writers can both pass.
    """

    def __init__(self, url: str, error: type[AhdiError]) -> None:
        scheme = protocol(url)
        if scheme not in CONDITIONAL_PROTOCOLS:
            raise ConditionsUnsupported(scheme or "file")
        self.url = url
        self.error = error
        self.fs, path = filesystem(url, error)
        self.bucket, self.key, _ = self.fs.split_path(path)

    def _call(self, method: str, **kwargs: Any) -> dict:
        return self.fs.call_s3(method, Bucket=self.bucket, **kwargs)

    def _put(self, key: str, data: bytes, **condition: str) -> str | None:
        """Put ``data`` at ``key`` on ``condition``; its ETag, or None if it failed."""
        try:
            with remote_errors(self.url, self.error):
                try:
                    return self._call("put_object", Key=key, Body=data, **condition)["ETag"]
                except Exception as exc:
                    if _precondition_failed(exc):
                        return None
                    raise
        finally:
            self.fs.invalidate_cache(f"{self.bucket}/{key}")

    def create(self, data: bytes) -> str | None:
        """Write the object if it does not exist; its ETag, or None if it exists."""
        return self._put(self.key, data, IfNoneMatch="*")

    def replace(self, data: bytes, etag: str) -> str | None:
        """Overwrite the object if its ETag is still ``etag``; the new ETag, or None."""
        return self._put(self.key, data, IfMatch=etag)

    def read(self) -> tuple[bytes, str, _dt.datetime] | None:
        """(content, ETag, the server's LastModified) of the object, or None if absent."""
        from fsspec.asyn import sync

        with remote_errors(self.url, self.error):
            try:
                return sync(self.fs.loop, _get_object, self.fs, self.bucket, self.key)
            except FileNotFoundError:
                return None

    def delete(self, etag: str) -> bool:
        """Delete the object if its ETag is still ``etag``; False if it changed.

        Servers that do not check ``If-Match`` on a delete (older S3
        implementations) are answered by reading the ETag and deleting:
        the window between the two is milliseconds, and only a takeover of
        a stale lock could fall in it.
        """
        with remote_errors(self.url, self.error):
            try:
                self._call("delete_object", Key=self.key, IfMatch=etag)
                return True
            except FileNotFoundError:
                return False
            except Exception as exc:
                if _precondition_failed(exc):
                    return False
                if _error_code(exc) not in ("NotImplemented", "InvalidArgument",
                                            "InvalidRequest"):
                    raise
            finally:
                self.fs.invalidate_cache(f"{self.bucket}/{self.key}")
            now = self.read()
            if now is None or now[1] != etag:
                return False
            self._call("delete_object", Key=self.key)
            return True

    def check_conditions(self) -> _dt.datetime:
        """Check that the server refuses a second create of one object; the server's time.

        Raises :class:`ConditionsUnsupported` when the second create succeeds:
        the server ignores ``If-None-Match`` and two writers could both
        create the object. The probe object goes afterwards; its
        LastModified is the server's clock now, which lock ages are judged
        by (client clocks never matter).
        """
        probe = f"{self.key}.probe-{uuid.uuid4().hex}"
        if self._put(probe, b"probe", IfNoneMatch="*") is None:
            raise ConditionsUnsupported("s3")  # a fresh random key cannot exist
        try:
            if self._put(probe, b"probe", IfNoneMatch="*") is not None:
                raise ConditionsUnsupported("s3")
            with remote_errors(self.url, self.error):
                return self._call("head_object", Key=probe)["LastModified"]
        finally:
            with remote_errors(self.url, self.error):
                self._call("delete_object", Key=probe)


async def _get_object(fs, bucket: str, key: str) -> tuple[bytes, str, _dt.datetime]:
    """(content, ETag, LastModified) of one object, from one GET of s3fs."""
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
    body = response["Body"]
    try:
        data = await body.read()
    finally:
        body.close()
    return data, response["ETag"], response["LastModified"]
