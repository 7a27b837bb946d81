"""Converting into an S3 server vs into a local folder, measured side by side in one run.

    python benchmarks/bench_s3.py [--videos 64] [--repeats 3] [--size 64]

Starts moto's S3 server (``tests/s3server.py``) on localhost in a process of
its own, writes ``--videos`` tiny synthetic videos (60 frames, 160 x 120)
to a local folder and the same files to ``s3://bench/videos/``, then, in
interleaved rounds (each round starting with the next variant), times the
same ``convert`` (threads, every core):

* ``local -> folder``: videos from the folder into a store in a folder;
* ``local -> s3``: the same videos into a store on the S3 server;
* ``s3 -> s3``: the videos listed on and fetched from the server (each
  task copies its video to local temporary space), into a store there.

and prints the median wall-clock seconds of each with its ratio to
``local -> folder``, and the number of HTTP requests of one ``local -> s3``
conversion (counted by the server of a second, in-process run) per item,
and how many of them were for the store's root ``zarr.json``.
The store on S3 holds the same chunk bytes as the local one (checked).

A local server answers in well under a millisecond, so the ratios are the
protocol's own cost (requests, the lock probe, no rename), the floor of
what a real bucket adds; on a real network each request adds a round trip,
which the workers' parallelism hides as long as requests per item stay few.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ahdi.kernels import AhdiParams  # noqa: E402
from ahdi.pipeline.graph import convert  # noqa: E402
from ahdi.pipeline.resolve import resolve_source  # noqa: E402
from tests import fixtures as fx  # noqa: E402
from tests.s3server import moto_s3  # noqa: E402

REPS = ("ahdi", "mdv")


def make_videos(folder: str, n: int) -> None:
    for k in range(n):
        fx.write_video(os.path.join(folder, f"v{k:03d}.mp4"),
                       fx.blob_frames(60, w=160, h=120, seed=k))


def chunk_bytes(fs, root: str) -> dict[str, bytes]:
    """Every object of a store but its metadata documents (they hold timestamps) and
    its ``source`` column (URLs or paths, as the videos were read)."""
    return {p[len(root) + 1:]: fs.cat_file(p) for p in sorted(fs.find(root))
            if not p.endswith("zarr.json") and not p[len(root) + 1:].startswith("source/")}


def local_chunk_bytes(root: str) -> dict[str, bytes]:
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name != "zarr.json" and not os.path.relpath(folder, root).startswith("source"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    out[os.path.relpath(path, root)] = f.read()
    return dict(sorted(out.items()))


class RequestCounter(logging.Handler):
    """Counts the requests moto's in-process server logs, by HTTP method, and those
    of the store's root document (``s.zarr/zarr.json``: a fixed cost per run)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_method: collections.Counter = collections.Counter()
        self.root: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for method in ("GET", "PUT", "HEAD", "DELETE", "POST"):
            if f'"{method} ' in text:
                self.by_method[method] += 1
                if "/s.zarr/zarr.json " in text:
                    self.root[method] += 1


def count_requests(videos: str, params: AhdiParams, workdir: str) -> tuple[dict, dict, int]:
    """Requests of one local -> s3 conversion, counted by an in-process server: by
    method, those of the root document, and the number of items."""
    counter = RequestCounter()
    werkzeug = logging.getLogger("werkzeug")
    with moto_s3(own_process=False):
        werkzeug.setLevel(logging.INFO)
        werkzeug.propagate = False
        werkzeug.handlers[:] = [counter]
        import s3fs
        s3fs.S3FileSystem().mkdir("count")
        name, items = resolve_source(videos)
        counter.by_method.clear()
        counter.root.clear()
        convert(items, "s3://count/s.zarr", params, REPS, dataset=name, source=videos,
                tmp_dir=workdir)
    werkzeug.handlers[:] = []
    return dict(counter.by_method), dict(counter.root), len(items)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    params = AhdiParams(size=args.size, crop="center")
    work = tempfile.mkdtemp(prefix="bench-s3-")
    videos = os.path.join(work, "videos")
    os.makedirs(videos)
    make_videos(videos, args.videos)
    times: dict[str, list[float]] = {"local -> folder": [], "local -> s3": [], "s3 -> s3": []}
    try:
        with moto_s3(own_process=True):
            import s3fs
            fs = s3fs.S3FileSystem()
            fs.mkdir("bench")
            fs.put(videos + "/", "bench/videos/", recursive=True)
            _, local_items = resolve_source(videos)
            _, s3_items = resolve_source("s3://bench/videos/")
            runs = {
                "local -> folder": lambda r: (local_items, os.path.join(work, f"s{r}.zarr")),
                "local -> s3": lambda r: (local_items, f"s3://bench/local{r}.zarr"),
                "s3 -> s3": lambda r: (s3_items, f"s3://bench/remote{r}.zarr"),
            }
            order = list(runs)
            convert(local_items[:2], os.path.join(work, "warm.zarr"), params, REPS)  # JIT
            for r in range(args.repeats):
                for name in order[r % 3:] + order[:r % 3]:
                    items, out = runs[name](r)
                    started = time.perf_counter()
                    report = convert(items, out, params, REPS, tmp_dir=work)
                    times[name].append(time.perf_counter() - started)
                    assert report.done == args.videos, report.failed[:1]
            same = (chunk_bytes(fs, "bench/local0.zarr") == local_chunk_bytes(
                os.path.join(work, "s0.zarr")) == chunk_bytes(fs, "bench/remote0.zarr"))
        requests, root, n = count_requests(videos, params, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["local -> folder"])
    print(f"{args.videos} videos (60 frames, 160x120) -> size {args.size}, {REPS}; "
          f"median of {args.repeats} interleaved rounds, threads, {os.cpu_count()} cores")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:16s} {median:7.2f} s   {median / base:5.2f}x")
    print(f"  the S3 stores hold the same chunk bytes as the local one: {same}")
    print(f"  requests of one local -> s3 conversion: {requests} "
          f"({sum(requests.values()) / n:.1f} per item), of the root zarr.json: {root}")


if __name__ == "__main__":
    main()
