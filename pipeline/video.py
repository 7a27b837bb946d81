"""How the frames of a video come out, cropped and resized.

:func:`open_video` turns a :class:`~ahdi.pipeline.sources.VideoSource` (a
video file, a folder of frame images, or either inside an archive) into a
:class:`VideoReader`, a context manager whose iteration yields S x S x 3
RGB uint8 frames (S = ``params.size``), cropped per ``params.crop`` (boxes
from :mod:`ahdi.pipeline.face`) and resized as docs/algorithm.md says
(``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging).

Reading streams: one decoded frame at a time, never the whole video.
Everything that goes wrong with a video raises :class:`VideoError` with a
message naming the file (``path`` or ``archive.zip!member``) and the problem.
FFmpeg's and OpenCV's own log lines are silenced
(:mod:`ahdi.pipeline.decoding`): what FFmpeg says about a file it cannot
open goes into that file's error instead.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import tempfile
from collections.abc import Iterator

import cv2
import numpy as np

from ahdi.kernels.motion import resize_to
from ahdi.kernels.params import AhdiParams

from .archives import Archive
from .decoding import ffmpeg_says, open_capture, to_rgb8
from .errors import VideoError
from .face import (FACE_SAMPLES, center_box, face_box, image_sample_positions, landmarks_box,
                   video_sample_positions)
from .files import IMAGE_EXTS, check_readable
from .sources import VideoSource

__all__ = ["VideoReader", "open_video", "SEEK_MIN_FRAMES"]

#: Videos with at most this many frames are sampled by decoding forward
#: (grab) instead of seeking: OpenCV's seek decodes from the previous
#: keyframe, which for short clips with one keyframe costs more than a pass.
SEEK_MIN_FRAMES = 300
_NAN = float("nan")


# ----------------------------------------------------------------------
# VideoReader
# ----------------------------------------------------------------------
class VideoReader:
    """Iterates the cropped, resized S x S x 3 RGB uint8 frames of one source.

    Use through :func:`open_video` as a context manager. Attributes:
    ``fps`` (float, NaN if unknown), ``frame_count_hint`` (int or None),
    ``warnings`` (list of str; "decoded X of Y frames" is added when a
    video ends early), ``crop_box`` ((x, y, w, h) in source pixels),
    ``frame_size`` ((width, height) of the source frames), ``source``.
    """

    def __init__(self, source: VideoSource, params: AhdiParams, tmp_dir: str | None = None,
                 decode_threads: int = 0, replay_budget: int = 0):
        self.source = source
        self.decode_threads = int(decode_threads)
        self.replay_budget = int(replay_budget)
        # Frames decoded while looking for the face, kept to be replayed
        # instead of decoded a second time (see _sample_by_replay).
        self._replay: collections.deque | None = None
        self.replay_bytes = 0
        self.params = params
        self.size = params.size
        self.warnings: list[str] = []
        self.fps: float = _NAN
        self.frame_count_hint: int | None = None
        self.crop_box: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.frame_size: tuple[int, int] = (0, 0)
        self._tmp_dir = tmp_dir
        self._tmp_file: str | None = None
        self._archive: Archive | None = None
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._iterated = False
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- opening ------------------------------------------------------
    def _open(self) -> None:
        src = self.source
        if src.archive is not None:
            self._archive = Archive(src.archive)
        if src.kind == "file":
            self._open_file()
        else:
            self._open_frames()
        self.crop_box = self._choose_crop()

    def _capture(self) -> cv2.VideoCapture:
        return open_capture(self._video_path, self.decode_threads)

    @contextlib.contextmanager
    def _second_capture(self) -> Iterator[cv2.VideoCapture]:
        """A capture of its own for the face search, released afterwards."""
        cap = self._capture()
        try:
            yield cap
        finally:
            cap.release()

    def _local_video_path(self) -> str:
        """The video file to decode: the file itself, or a temp copy of an archive member."""
        src = self.source
        name = src.describe()
        if self._archive is None:
            check_readable(src.path, name)
            return src.path
        if src.path not in self._archive:
            raise VideoError(f"{name}: no such member in the archive")
        suffix = os.path.splitext(src.path)[1] or ".video"
        fd, tmp = tempfile.mkstemp(prefix="ahdi-", suffix=suffix, dir=self._tmp_dir)
        os.close(fd)
        self._tmp_file = tmp  # removed by close(), also after an error
        self._archive.copy_to(src.path, tmp)
        if os.path.getsize(tmp) == 0:
            raise VideoError(f"{name}: empty file (0 bytes)")
        return tmp

    def _open_file(self) -> None:
        name = self.source.describe()
        self._video_path = self._local_video_path()
        cap = self._capture()
        self._cap = cap
        if not cap.isOpened():
            raise VideoError(f"{name}: not a decodable video (OpenCV/FFmpeg cannot open it"
                             f"{self._ffmpeg_detail()})")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else _NAN
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count_hint = int(count) if count and math.isfinite(count) and count > 0 else None
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"{name}: no frame could be decoded (0 frames"
                             f"{self._ffmpeg_detail()})")
        self._first = to_rgb8(frame)
        h, w = self._first.shape[:2]
        self.frame_size = (w, h)

    def _ffmpeg_detail(self) -> str:
        """``'; FFmpeg: ...'`` with what FFmpeg says about the file, or ''."""
        said = ffmpeg_says(self._video_path)
        return f"; FFmpeg: {said}" if said else ""

    def _open_frames(self) -> None:
        src = self.source
        if not src.frames:
            raise VideoError(f"{src.describe()}: frame folder holds no images "
                             f"({', '.join(IMAGE_EXTS)})")
        if src.archive is None and not os.path.isdir(src.path) and not os.path.exists(src.frames[0]):
            raise VideoError(f"{src.describe()}: frame folder does not exist")
        self.fps = float(src.fps) if src.fps else _NAN
        self.frame_count_hint = len(src.frames)
        self._first = self._read_image(src.frames[0])
        h, w = self._first.shape[:2]
        self.frame_size = (w, h)

    def _read_bytes(self, member: str) -> bytes:
        name = self.source.name(member)
        if self._archive is not None:
            return self._archive.read(member)
        check_readable(member, name)
        with open(member, "rb") as fh:
            return fh.read()

    def _read_image(self, member: str) -> np.ndarray:
        name = self.source.name(member)
        data = self._read_bytes(member)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise VideoError(f"{name}: frame image cannot be decoded")
        return to_rgb8(img)

    # -- crop -----------------------------------------------------------
    def _choose_crop(self) -> tuple[int, int, int, int]:
        w, h = self.frame_size
        crop = self.params.crop
        if crop == "none":
            return (0, 0, w, h)
        if crop == "center":
            return center_box(w, h)
        if crop == "landmarks":
            return self._landmark_box()
        box = face_box(self._sample_frames(), w, h)
        if box is None:
            self.warnings.append(f"no face found in {self.source.describe()}; used a center crop")
            return center_box(w, h)
        return box

    def _landmark_box(self) -> tuple[int, int, int, int]:
        src = self.source
        w, h = self.frame_size
        files = [f for f in (src.landmarks or ()) if f]
        if src.kind != "frames" or not files:
            raise VideoError(f"{src.describe()}: crop='landmarks' needs landmark files, and this "
                             "video has none (only the UNBC adapter provides them)")
        box = landmarks_box(self._landmark_texts(files), w, h)
        if box is None:
            raise VideoError(f"{src.name(files[0])}: no landmark file of this video can be read")
        return box

    def _landmark_texts(self, files: list[str]) -> Iterator[tuple[str, str]]:
        """(text, name) of the landmark files that can be read; the others are skipped."""
        for f in files:
            try:
                text = self._read_bytes(f).decode("utf-8", "replace")
            except VideoError:
                continue
            yield text, self.source.name(f)

    # -- frames for the face search ---------------------------------------
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
        self._replay = collections.deque()
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

    # -- iteration --------------------------------------------------------
    def _crop_resize(self, rgb: np.ndarray) -> np.ndarray:
        x, y, w, h = self.crop_box
        img = rgb[y:y + h, x:x + w]
        s = self.size
        if (w, h) == (s, s):
            return np.ascontiguousarray(img)
        return resize_to(img, s, s)  # the spec's one resize rule, shared with the kernels

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._closed:
            raise VideoError(f"{self.source.describe()}: reader is closed")
        if self._iterated:
            raise VideoError(f"{self.source.describe()}: a VideoReader can be iterated once")
        self._iterated = True
        if self.source.kind == "file":
            return self._watch_still(self._iter_file())
        return self._watch_still(self._iter_frames())

    def _watch_still(self, frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        """The frames, and a warning at their end when they never change.

        Frames that never change (an all-black clip, a still picture, a
        crop where nothing moves) pool into blank images; the warning says
        why the item's images are black. Comparing stops at the first frame
        that differs, so a moving clip costs one comparison.
        """
        first, changed, n = None, False, 0
        for frame in frames:
            if first is None:
                first = frame.copy()
            elif not changed:
                changed = not np.array_equal(frame, first)
            n += 1
            yield frame
        if n > 1 and not changed:
            black = " (all black)" if not first.any() else ""
            self.warnings.append(f"{self.source.describe()}: its {n} frames never change"
                                 f"{black}; its dynamic images are blank")

    def _iter_file(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        yield self._crop_resize(first)
        n = 1
        w, h = self.frame_size
        for frame in self._raw_frames():
            if frame.shape[1] != w or frame.shape[0] != h:
                raise VideoError(f"{self.source.describe()}: frame {n + 1} is "
                                 f"{frame.shape[1]}x{frame.shape[0]}, the first was {w}x{h}")
            n += 1
            if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
                # Swap channels after the crop and resize (they commute exactly):
                # a 224 x 224 frame instead of the full-resolution one.
                yield cv2.cvtColor(self._crop_resize(frame), cv2.COLOR_BGR2RGB)
            else:
                yield self._crop_resize(to_rgb8(frame))
        if self.frame_count_hint is not None and n < self.frame_count_hint:
            self.warnings.append(f"{self.source.describe()}: decoded {n} of "
                                 f"{self.frame_count_hint} frames (truncated or damaged video)")

    def _iter_frames(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        frames = self.source.frames
        w, h = self.frame_size
        yield self._crop_resize(first)
        for member in frames[1:]:
            img = self._read_image(member)
            if img.shape[1] != w or img.shape[0] != h:
                raise VideoError(
                    f"{self.source.name(member)}: frame is {img.shape[1]}x{img.shape[0]}, but "
                    f"the first frame {self.source.name(frames[0])} is {w}x{h} "
                    "(frames of mixed sizes)")
            yield self._crop_resize(img)

    # -- closing ------------------------------------------------------------
    def close(self) -> None:
        """Release the decoder, the archive and any temporary copy (idempotent)."""
        self._replay = None
        self._closed = True
        self._first = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._archive is not None:
            self._archive.close()
            self._archive = None
        if self._tmp_file is not None:
            try:
                os.remove(self._tmp_file)
            except FileNotFoundError:
                pass
            self._tmp_file = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten reader still removes its temp copy
        try:
            self.close()
        except Exception:
            pass


def open_video(source: VideoSource, params: AhdiParams | None = None,
               tmp_dir: str | os.PathLike | None = None, *,
               decode_threads: int = 0, replay_budget: int = 0) -> VideoReader:
    """Open a video for streaming its cropped, resized RGB frames.

    Parameters
    ----------
    source : VideoSource
        The video (file, frame folder, or either inside an archive).
    params : AhdiParams, optional
        ``size`` and ``crop`` are used; defaults to ``AhdiParams()``.
    tmp_dir : path, optional
        Where a video member of an archive is copied while it is read
        (default: the system temp folder); the copy is removed on close,
        also after an error.
    decode_threads : int
        FFmpeg decoder threads per video file; 0 leaves FFmpeg's default
        (about one per core), right when one video is read at a time.
    replay_budget : int
        Bytes of decoded frames the face search may keep so that a short
        clip is not decoded twice (``reader.replay_bytes`` says how many it
        holds; they are released as iteration replays them). 0: never.

    Returns
    -------
    VideoReader
        A context manager; iterate it once for S x S x 3 RGB uint8 frames.

    Raises
    ------
    VideoError
        The file is missing, unreadable, empty, not decodable, decodes no
        frame, a frame image is unreadable or of another size, or
        ``crop='landmarks'`` has no landmarks.

    Examples
    --------
    >>> with open_video(VideoSource("file", "clip.mp4"), AhdiParams(size=112)) as reader:  # doctest: +SKIP
    ...     frames = list(reader)
    """
    if not isinstance(source, VideoSource):
        raise TypeError(f"open_video needs a VideoSource, got {type(source).__name__}")
    params = params if params is not None else AhdiParams()
    return VideoReader(source, params, None if tmp_dir is None else str(tmp_dir),
                       decode_threads=decode_threads, replay_budget=replay_budget)
