"""A real S3 protocol server on localhost for tests and benchmarks: moto's standalone server.

    with moto_s3() as endpoint:        # http://127.0.0.1:PORT
        fs = s3fs.S3FileSystem()        # finds it through AWS_ENDPOINT_URL
        fs.mkdir("bucket")

The server is found the way a user's S3-compatible server is: through
``AWS_ENDPOINT_URL`` (botocore honours it, so s3fs, boto3, dask workers
and ``ahdi`` subprocesses started inside the block all reach it) and
dummy keys in the usual environment variables, restored afterwards. moto
checks ``If-None-Match`` and ``If-Match`` on PUT and ``If-Match`` on DELETE,
what the writer lock of a store on S3 relies on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _subprocess_server() -> Iterator[str]:
    """``moto_server`` in a process of its own (it does not share this one's GIL)."""
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def _threaded_server() -> Iterator[str]:
    """moto's server in a thread of this process (starts in a fraction of a second)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def moto_s3(own_process: bool = False) -> Iterator[str]:
    """Start moto's S3 server on a free localhost port; yield its endpoint URL.

    ``own_process`` runs ``moto_server`` as a subprocess instead of a thread
    (what a benchmark wants: the server does not compete for the GIL).
    """
    saved = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    with (_subprocess_server() if own_process else _threaded_server()) as endpoint:
        os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
        _forget_filesystems()
        try:
            yield endpoint
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _forget_filesystems()


def _forget_filesystems() -> None:
    # fsspec keeps one S3FileSystem per set of options: one made before the
    # server started (or after it stopped) must not be reused.
    with contextlib.suppress(ImportError):
        import s3fs
        s3fs.S3FileSystem.clear_instance_cache()
