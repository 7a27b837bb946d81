"""Draw docs/figures/face_vs_align.png: ``--crop face`` / ``track`` / ``align`` on a moving head.

The synthetic head-motion case (tests/face_clips.py: carphone enlarged to
704 x 576, a painted expression, smooth random head motion of ``--seed``),
written losslessly and read back through the pipeline's own reader, as
``ahdi convert`` reads it. One row per crop: five output frames (frames 1,
31, 61, 91, 120), the mean image, the AHDI, and the AHDI of the same clip
without head motion (what a crop that holds the face still reproduces);
the label gives the correlation r of the two AHDIs. OpenCV only.

Usage::

    python docs/make_face_figure.py [--seed 1] [--size 160] [--out docs/figures/face_vs_align.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ahdi.kernels import AhdiParams, compute_ahdi  # noqa: E402
from ahdi.pipeline.sources import VideoSource  # noqa: E402
from ahdi.pipeline.video import open_video  # noqa: E402
from tests import face_clips  # noqa: E402

SHOWN = (0, 30, 60, 90, 119)
LABEL_H = 22
CROPS = ("face", "track", "align")


def converted(path: Path, crop: str, size: int):
    """(the frames shown, the AHDI result) of one video read with ``crop``."""
    params = AhdiParams(size=size, crop=crop)
    kept = []

    def keep(frames):
        for i, frame in enumerate(frames):
            if i in SHOWN:
                kept.append(frame)
            yield frame

    with open_video(VideoSource("file", str(path)), params) as reader:
        result = compute_ahdi(keep(reader), params, ("ahdi", "mean"))
    return kept, result


def row(crop: str, moving: Path, still: Path, size: int) -> np.ndarray:
    """One crop's strip of tiles under its label (RGB)."""
    frames, result = converted(moving, crop, size)
    _, reference = converted(still, crop, size)
    r = np.corrcoef(result.ahdi_float.ravel(), reference.ahdi_float.ravel())[0, 1]
    strip = np.hstack(frames + [result.mean, result.ahdi, reference.ahdi])
    label = np.full((LABEL_H, strip.shape[1], 3), 255, np.uint8)
    text = (f"--crop {crop}: frames 1, 31, 61, 91, 120 | mean | AHDI | AHDI without head "
            f"motion   (r = {r:.3f})")
    cv2.putText(label, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([label, strip])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--out", default=str(Path(__file__).parent / "figures" /
                                             "face_vs_align.png"))
    args = parser.parse_args()
    raw = face_clips.read_sample("carphone_pristine")
    with tempfile.TemporaryDirectory(prefix="ahdi-figure-") as tmp:
        moving, still = Path(tmp) / "moving.mkv", Path(tmp) / "still.mkv"
        face_clips.write_video(face_clips.moving_clip(args.seed, raw), str(moving), crf=None)
        face_clips.write_video(face_clips.still_clip(raw), str(still), crf=None)
        picture = np.vstack([row(crop, moving, still, args.size) for crop in CROPS])
    cv2.imwrite(args.out, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{args.out}: {picture.shape[1]} x {picture.shape[0]}")


if __name__ == "__main__":
    main()
