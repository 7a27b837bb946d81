"""Where a video lives: :class:`VideoSource` and :func:`frame_folder_source`.

A source names a video file, a folder of frame images, or the same inside
a ``.zip`` / ``.tar`` / ``.tar.gz`` archive, and says how messages name its
files. It is picklable and reads nothing: adapters make sources while
listing a dataset, and :func:`ahdi.pipeline.video.open_video` reads them.
"""

from __future__ import annotations

import dataclasses
import os

from .errors import VideoError
from .files import IMAGE_EXTS, natural_key

__all__ = ["VideoSource", "frame_folder_source"]


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
