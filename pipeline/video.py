"""How the frames of a video come out, cropped and resized.

:func:`open_video` turns a :class:`~ahdi.pipeline.sources.VideoSource` (a
video file, a folder of frame images, or either inside an archive) into a
:class:`VideoReader`, a context manager whose iteration yields S x S x 3
RGB uint8 frames (S = ``params.size``), cropped per ``params.crop`` (boxes
from :mod:`ahdi.pipeline.face`; ``track`` and ``align`` follow the face
frame by frame, :mod:`ahdi.pipeline.face_track`) and resized as
docs/algorithm.md says (``cv2.INTER_AREA`` when shrinking,
``cv2.INTER_LINEAR`` when enlarging).

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
import itertools
import math
import os
import tempfile
from collections.abc import Iterator

import cv2
import numpy as np

from ahdi.kernels.motion import resize_region
from ahdi.kernels.params import TRACKED_CROPS, AhdiParams

from . import remote
from .archives import Archive
from .decoding import ffmpeg_says, open_capture, to_rgb8
from .errors import VideoError
from .face import center_box, face_box, landmarks_box
from .face_presence import no_face_warning
from .face_samples import SEEK_MIN_FRAMES, FaceSearchFrames
from .face_settings import FaceTrack, TrackSettings
from .face_track import FaceFollower
from .files import IMAGE_EXTS, check_readable
from .sources import VideoSource

__all__ = ["VideoReader", "open_video", "SEEK_MIN_FRAMES"]

_NAN = float("nan")


# ----------------------------------------------------------------------
# VideoReader
# ----------------------------------------------------------------------
class VideoReader(FaceSearchFrames):
    """Iterates the cropped, resized S x S x 3 RGB uint8 frames of one source.

    Use through :func:`open_video` as a context manager. Attributes:
    ``fps`` (float, NaN if unknown), ``frame_count_hint`` (int or None),
    ``warnings`` (list of str; "decoded X of Y frames" is added when a
    video ends early), ``crop_box`` ((x, y, w, h) in source pixels),
    ``frame_size`` ((width, height) of the source frames), ``source``;
    with ``crop`` ``track`` or ``align``, once iterated: ``face_track``
    (:class:`~ahdi.pipeline.face_track.FaceTrack`: per-frame boxes,
    transforms onto the reference face, face found, status; None before),
    and ``crop_box`` is the reference frame's square.
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
        self.face_track: FaceTrack | None = None
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
        """The video file to decode: the file itself, or a temp copy of an archive
        member or of an object on object storage."""
        src = self.source
        name = src.describe()
        if self._archive is None and remote.is_remote(src.path):
            self._tmp_file = remote.fetch(src.path, name, self._tmp_dir)  # removed by close()
            return self._tmp_file
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
        if src.archive is None and not remote.is_remote(src.path) and \
                not os.path.isdir(src.path) and not os.path.exists(src.frames[0]):
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
        if remote.is_remote(member):
            return remote.read_bytes(member, name, VideoError)
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
        if crop == "center" or crop in TRACKED_CROPS:
            return center_box(w, h)  # a tracked crop's square is known once iterated
        if crop == "landmarks":
            return self._landmark_box()
        box = face_box(self._sample_frames(), w, h)
        if box is None:
            self.warnings.append(no_face_warning(self.source.describe()))
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

    # -- iteration --------------------------------------------------------
    def _crop_resize(self, rgb: np.ndarray) -> np.ndarray:
        # The spec's one resize rule, shared with the kernels; the crop is read in place.
        return resize_region(rgb, self.crop_box, self.size, self.size)

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
        if self.params.crop in TRACKED_CROPS:
            # The follower works on decoded (BGR) frames; only its S x S output is swapped.
            frames = itertools.chain([cv2.cvtColor(first, cv2.COLOR_RGB2BGR)],
                                     map(_bgr8, self._checked_frames()))
            for frame in self._follow(frames, bgr=True):
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            return
        yield self._crop_resize(first)
        for frame in self._checked_frames():
            if _is_bgr8(frame):
                # Swap channels after the crop and resize (they commute exactly):
                # a 224 x 224 frame instead of the full-resolution one.
                yield cv2.cvtColor(self._crop_resize(frame), cv2.COLOR_BGR2RGB)
            else:
                yield self._crop_resize(to_rgb8(frame))

    def _checked_frames(self) -> Iterator[np.ndarray]:
        """Decoded frames after the first, each the first one's size; warns when they end early."""
        n = 1
        w, h = self.frame_size
        for frame in self._raw_frames():
            if frame.shape[1] != w or frame.shape[0] != h:
                raise VideoError(f"{self.source.describe()}: frame {n + 1} is "
                                 f"{frame.shape[1]}x{frame.shape[0]}, the first was {w}x{h}")
            n += 1
            yield frame
        if self.frame_count_hint is not None and n < self.frame_count_hint:
            self.warnings.append(f"{self.source.describe()}: decoded {n} of "
                                 f"{self.frame_count_hint} frames (truncated or damaged video)")

    def _iter_frames(self) -> Iterator[np.ndarray]:
        first, self._first = self._first, None
        images = itertools.chain([first], map(self._checked_image, self.source.frames[1:]))
        if self.params.crop in TRACKED_CROPS:
            yield from self._follow(images, bgr=False)
        else:
            yield from map(self._crop_resize, images)

    def _checked_image(self, member: str) -> np.ndarray:
        """A frame image of the folder, the first one's size."""
        img = self._read_image(member)
        w, h = self.frame_size
        if img.shape[1] != w or img.shape[0] != h:
            raise VideoError(
                f"{self.source.name(member)}: frame is {img.shape[1]}x{img.shape[0]}, but "
                f"the first frame {self.source.name(self.source.frames[0])} is {w}x{h} "
                "(frames of mixed sizes)")
        return img

    def _follow(self, frames: Iterator[np.ndarray], bgr: bool) -> Iterator[np.ndarray]:
        """``track`` / ``align``: the face follower's S x S frames; then its record and warnings."""
        # The replay budget bounds the frames kept while no face has shown yet.
        follower = FaceFollower(self.size, self.params.crop, bgr=bgr,
                                settings=TrackSettings(queue_bytes=self.replay_budget))
        yield from follower.frames(frames)
        track = self.face_track = follower.track
        self.warnings.extend(follower.warnings(self.source.describe()))
        if track.reference >= 0:
            self.crop_box = tuple(int(round(v)) for v in track.boxes[track.reference])

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


def _is_bgr8(frame: np.ndarray) -> bool:
    """A decoded frame already in OpenCV's BGR uint8 order (the usual case)."""
    return frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def _bgr8(frame: np.ndarray) -> np.ndarray:
    """A decoded frame as BGR uint8 (16-bit, grey or BGRA ones converted)."""
    return frame if _is_bgr8(frame) else cv2.cvtColor(to_rgb8(frame), cv2.COLOR_RGB2BGR)


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
        Bytes of decoded frames the face search may keep: with ``face``, so
        that a short clip is not decoded twice (``reader.replay_bytes`` says
        how many it holds; they are released as iteration replays them);
        with ``track`` / ``align``, the frames before the first face, held
        until it shows and then registered backwards from it (beyond the
        budget they get a centre crop). 0: never.

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
