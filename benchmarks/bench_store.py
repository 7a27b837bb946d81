"""The store's shape: stored objects per item, and xarray's motion.max(), version 2 vs 3.

    python benchmarks/bench_store.py [--sizes 64 512] [--before-items 512] [--repeats 3]

For each size N it writes N tiny items (S = 16, 3 mdv windows, 50 to 300
frames of motion) twice, side by side:

* **before**: layout version 2 as ahdi wrote it until version 3
  (``tests/v2store.py``): one chunk per item per array, ``motion`` 2**22
  frames wide in chunks of (1, 4096);
* **after**: version 3 (this ahdi): G = 64 items per stored object, each
  shard written once (what a conversion's merge task does), ``motion``
  and the face track (``--crop align``'s, made up here) fitted to the
  longest video at the end of the run.

and prints the stored objects (files, ``zarr.json`` included) per item, and
the median seconds of ``xr.open_zarr(store).motion.max().compute()`` (the
same maximum both times, checked). The version-2 reduction builds one dask
task per 4096-frame chunk of 2**22 frames per item (1024 per item): it takes
minutes at 512 items, so ``--before-items`` may time it on fewer items
(the time grows linearly with the items; the line says how many it used).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ahdi.kernels.params import AhdiParams  # noqa: E402
from ahdi.pipeline.face_settings import FaceTrack  # noqa: E402
from ahdi.pipeline.layout import create_store  # noqa: E402
from ahdi.pipeline.resume import fit_frame_width  # noqa: E402
from ahdi.pipeline.schema import item_rows, segments_width  # noqa: E402
from ahdi.pipeline.shards import Staged, write_shard  # noqa: E402
from ahdi.pipeline.store_files import open_root  # noqa: E402
from tests.v2store import make_v2_store, write_v2_item  # noqa: E402

PARAMS = AhdiParams(size=16, patch=3, crop="center", n_segments=4, min_len=2)
REPS = ("ahdi", "mdv", "sdi", "mean", "flow")


class _Source:
    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self) -> str:
        return self.path


def items(n: int) -> list:
    return [types.SimpleNamespace(video_id=f"v{i:04d}", subject=f"s{i // 8}",
                                  labels={"pain": float(i % 5)},
                                  source=_Source(f"/videos/v{i:04d}.mp4")) for i in range(n)]


def result(i: int):
    rng = np.random.default_rng(i)
    t, m, s = 50 + (i * 37) % 251, 3, PARAMS.size
    starts = np.arange(m) * (t // (m + 1))

    def img():
        return rng.integers(0, 256, (s, s, 3), dtype=np.uint8)
    return types.SimpleNamespace(
        ahdi=img(), sdi=img(), mean=img(), flow=img(),
        mdv=rng.integers(0, 256, (m, s, s, 3), dtype=np.uint8), motion=rng.random(t),
        eps=0.25, bounds=np.linspace(0, t, PARAMS.n_segments + 1).astype(np.int64),
        windows=np.stack([starts, starts + 2 * (t // (m + 1))], axis=1), n_frames=t)


def face(i: int, t: int) -> FaceTrack:
    """A made-up face track of ``t`` frames (what --crop align stores per item)."""
    rng = np.random.default_rng(i)
    return FaceTrack(rng.uniform(0, 400, (t, 4)), rng.normal(size=(t, 2, 3)),
                     rng.random(t) > 0.05, rng.integers(0, 4, t).astype(np.int8), 0)


def write_v3(path: str, n: int) -> None:
    """A version-3 store of n items, each shard written once, motion fitted."""
    store = create_store(path, items(n), PARAMS, REPS, dataset="bench", source="bench")
    group = open_root(path, "r+")
    g = store.items_per_shard
    width = segments_width(PARAMS)
    for shard in range(-(-n // g)):
        staged = {}
        for i in range(shard * g, min(n, (shard + 1) * g)):
            res = result(i)
            staged[i] = Staged(item_rows(res, PARAMS, REPS, width, f"item {i}",
                                         face(i, res.n_frames)), 25.0)
        write_shard(group, shard, g, staged, path)
    fit_frame_width(path)


def write_v2(path: str, n: int) -> None:
    group = make_v2_store(path, items(n), PARAMS, REPS)
    for i in range(n):
        write_v2_item(group, i, result(i), fps=25.0)


def count_objects(path: str) -> int:
    return sum(len(files) for _folder, _dirs, files in os.walk(path))


def time_max(path: str, repeats: int) -> tuple[float, float]:
    """Median seconds of xr.open_zarr(path).motion.max().compute(), and the maximum."""
    import xarray as xr

    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = float(xr.open_zarr(path)["motion"].max().compute())
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--before-items", type=int, default=512,
                    help="items of the version-2 store whose motion.max() is timed")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-store-")
    try:
        print(f"tiny items: S={PARAMS.size}, {REPS}, 3 mdv windows, 50-300 frames")
        for n in args.sizes:
            v2, v3 = os.path.join(work, f"v2-{n}.zarr"), os.path.join(work, f"v3-{n}.zarr")
            write_v2(v2, n)
            write_v3(v3, n)
            print(f"  {n:4d} items: stored objects per item  version 2 {count_objects(v2) / n:6.2f}"
                  f"   version 3 {count_objects(v3) / n:5.2f}")
        n = max(args.sizes)
        v3 = os.path.join(work, f"v3-{n}.zarr")
        before = os.path.join(work, f"v2-{n}.zarr")
        if args.before_items != n:
            before = os.path.join(work, f"v2-before-{args.before_items}.zarr")
            write_v2(before, args.before_items)
        time_max(v3, 1)                 # imports xarray and dask: not timed
        after_s, after_max = time_max(v3, args.repeats)
        before_s, before_max = time_max(before, 1 if args.before_items > 64 else args.repeats)
        curves = [float(result(i).motion.astype(np.float32).max())
                  for i in range(max(n, args.before_items))]
        print(f"  xr.open_zarr(store).motion.max().compute():")
        print(f"    version 2, {args.before_items} items: {before_s:8.2f} s"
              f"{'' if args.before_items == n else f'  (x {n / args.before_items:.0f} = {before_s * n / args.before_items:.0f} s for {n} items, linear)'}")
        print(f"    version 3, {n} items: {after_s:8.3f} s")
        print(f"    the maxima are those of the items' curves: "
              f"{after_max == max(curves[:n]) and before_max == max(curves[:args.before_items])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
