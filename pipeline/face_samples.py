"""The frames ``--crop face`` searches, read by the cheapest way a clip allows.

:class:`FaceSearchFrames` is a part of :class:`ahdi.pipeline.video.VideoReader`
(a base class of it, split off along this seam to keep the reader's module
short): it picks about ``FACE_SAMPLES`` frames spread over a clip by
seeking (long clips), by decoding forward, or by decoding a short clip once
and keeping its frames for iteration to replay. It reads the reader's
``source``, ``frame_count_hint``, ``frame_size``, ``replay_budget``,
``_first`` (the first frame, RGB), ``_cap`` (the main capture),
``_read_image`` and ``_second_capture``, and keeps ``_replay`` and
``replay_bytes``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import cv2
import numpy as np

from .decoding import to_rgb8
from .errors import VideoError
from .face import FACE_SAMPLES, image_sample_positions, video_sample_positions

__all__ = ["SEEK_MIN_FRAMES", "FaceSearchFrames"]

#: Videos with at most this many frames are sampled by decoding forward
#: (grab) instead of seeking: OpenCV's seek decodes from the previous
#: keyframe, which for short clips with one keyframe costs more than a pass.
SEEK_MIN_FRAMES = 300


class FaceSearchFrames:
    """The face search's frames of a :class:`~ahdi.pipeline.video.VideoReader`."""

    _replay: deque | None
    replay_bytes: int

    def _sample_frames(self) -> list[np.ndarray]:
        """About FACE_SAMPLES frames spread over the clip (the first one included)."""
        if self.source.kind == "frames":
            return [self._first] + self._sample_images()
        return [self._first] + self._sample_video()

    def _sample_images(self) -> list[np.ndarray]:
        """Frame images spread over a frame folder; unreadable ones are left out."""
        out = []
        for i in image_sample_positions(len(self.source.frames)):
            try:
                out.append(self._read_image(self.source.frames[i]))
            except VideoError:
                pass  # reported with its name when iteration reaches it
        return out

    def _sample_video(self) -> list[np.ndarray]:
        """Frames spread over a video file, by the cheapest way its length allows.

        A long clip is sought; a short one that fits the replay budget is
        decoded once and kept for iteration; another short one is decoded
        forward. With no frame count, or when that finds nothing, the
        frames right after the first are taken.
        """
        n = self.frame_count_hint or 0
        positions = video_sample_positions(n)
        samples: list[np.ndarray] = []
        if positions and n > SEEK_MIN_FRAMES:
            samples = self._sample_by_seeking(positions)
        elif positions and self._replay_fits(n):
            samples = self._sample_by_replay(positions)
        elif positions:
            samples = self._sample_by_decoding(positions)
        if not samples:
            samples = self._next_frames()
        return samples

    def _same_size(self, frame: np.ndarray | None) -> bool:
        """True for a decoded frame the size of the first one."""
        return frame is not None and frame.shape[:2] == self._first.shape[:2]

    def _sample_by_seeking(self, positions: list[int]) -> list[np.ndarray]:
        """Seek to each position; stops at the first seek the container refuses."""
        out = []
        with self._second_capture() as cap:
            for pos in positions:
                if not cap.set(cv2.CAP_PROP_POS_FRAMES, pos):
                    break
                ok, frame = cap.read()
                if ok and self._same_size(frame):
                    out.append(to_rgb8(frame))
        return out

    def _sample_by_decoding(self, positions: list[int]) -> list[np.ndarray]:
        """Decode forward to the last position, converting only the sampled frames."""
        wanted = set(positions)
        out = []
        with self._second_capture() as cap:
            for i in range(max(positions) + 1):
                if not cap.grab():
                    break
                if i not in wanted:
                    continue
                ok, frame = cap.retrieve()
                if ok and self._same_size(frame):
                    out.append(to_rgb8(frame))
        return out

    def _next_frames(self) -> list[np.ndarray]:
        """The FACE_SAMPLES - 1 frames after the first (no frame count, or no seeking)."""
        out = []
        with self._second_capture() as cap:
            cap.read()
            for _ in range(FACE_SAMPLES - 1):
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                out.append(to_rgb8(frame))
        return out

    def _replay_fits(self, n_frames: int) -> bool:
        w, h = self.frame_size
        return 0 < n_frames * w * h * 3 <= self.replay_budget

    def _sample_by_replay(self, positions: list[int]) -> list[np.ndarray]:
        """Decode the clip once with the main capture, keeping its frames to replay.

        A short clip's sampled frames sit all over it, so finding them costs a
        decode of most of the clip; when the whole clip fits in
        ``replay_budget`` bytes its frames are kept, and iteration replays
        them instead of decoding them again. Storing stops at the budget (a
        frame count that lied); iteration then goes on with the capture.
        """
        wanted = set(positions)
        samples = []
        self._replay = deque()
        i = 1  # the main capture has already given frame 0
        while self.replay_bytes < self.replay_budget:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                break
            self._replay.append(frame)
            self.replay_bytes += frame.nbytes
            if i in wanted and self._same_size(frame):
                samples.append(to_rgb8(frame))
            i += 1
        return samples

    def _raw_frames(self) -> Iterator[np.ndarray]:
        """Decoded frames after the first: replayed ones, then the capture's."""
        while self._replay:
            frame = self._replay.popleft()  # released as soon as it is used
            self.replay_bytes -= frame.nbytes
            yield frame
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield frame
