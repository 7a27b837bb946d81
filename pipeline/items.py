"""What listing a dataset produces: one :class:`Item` per video.

The adapters (:mod:`ahdi.pipeline.adapters`) make items and
:func:`ahdi.pipeline.resolve.resolve_source` returns them; the conversion
graph reads each item's video and writes its labels.
"""

from __future__ import annotations

import dataclasses

from .sources import VideoSource

__all__ = ["Item"]


@dataclasses.dataclass(frozen=True)
class Item:
    """One video of a dataset.

    Attributes
    ----------
    video_id : str
        Unique within the dataset, e.g. the relative path without extension.
    source : VideoSource
        Where the frames are.
    subject : str
        Who is filmed (used for leave-one-subject-out splits).
    labels : dict
        Label name -> float (NaN when missing) or str ('' when missing).
    """

    video_id: str
    source: VideoSource
    subject: str
    labels: dict[str, float | str] = dataclasses.field(default_factory=dict)
