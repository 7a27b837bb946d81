"""The face follower's settings and what it records per clip.

:class:`TrackSettings` holds every tuning value of
:class:`ahdi.pipeline.face_track.FaceFollower` (the measured choices);
:class:`FaceTrack` is its per-frame record, which the store keeps
(docs/store.md) and ``ahdi inspect --plot`` draws. Both are plain data, so
that readers of a store need not import the follower.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["TrackSettings", "FaceTrack"]


@dataclasses.dataclass(frozen=True)
class TrackSettings:
    """Tuning of the face follower; the defaults are the measured choice.

    Lengths are analysis pixels (A = ``analysis_side``) unless said.
    One registration pass per frame: a second one, on the image rendered
    with the first fit, halved the disagreement between a clip and its
    moved copy (0.47 against 0.9 output px, median) but cost 0.25 ms a
    frame (704 x 576), and the AHDI's invariance did not need it (r >= 0.99
    either way).

    Attributes
    ----------
    analysis_side : int
        Side A of the grey square registration works on.
    grid_step : int
        Spacing of the face grid's points.
    lk_window, lk_levels : int
        Lucas-Kanade window side and pyramid levels above the base (the
        search reaches about window / 2 * 2**levels pixels beyond the
        prediction). 9 / 1 beat 11 / 2 on invariance (docs/algorithm.md) at
        a tenth less of the follower's time.
    wide_levels : int
        Pyramid levels of a second try when the first fails (a jump the
        prediction missed, a face placed by a detection).
    huber_px : float
        Residual up to which a point counts fully in the fit.
    irls_iterations : int
        Reweighting rounds of the Huber fit.
    inlier_px : float
        Residual within which a point counts as agreeing with the fit.
    min_inliers : int
        Fewest agreeing points for a registration.
    min_inlier_share : float
        Fewest agreeing points as a share of the grid.
    reference_share : float
        Share of agreeing points for the chain to restart from the reference.
    retry_reference : int
        Frames between attempts to restart from the reference.
    verify_every : int
        Registered frames between Haar checks of the registered face.
    checks_to_lose : int
        Failed checks in a row after which the face counts as gone.
    max_search_gap : int
        Longest gap, frames, between whole-frame searches while no face is followed.
    queue_bytes : int
        Bytes of raw frames kept while waiting for the first face (the
        reader passes its ``replay_budget``: a quarter of the conversion's
        memory budget, :func:`ahdi.pipeline.tasks.frame_budgets`).
    min_gap : int
        Shortest run of faceless frames reported as the face leaving.
    min_found_share : float
        A clip whose face shows on a smaller share of frames is warned about.
    """

    analysis_side: int = 112
    grid_step: int = 4
    lk_window: int = 9
    lk_levels: int = 1
    wide_levels: int = 2
    huber_px: float = 0.5
    irls_iterations: int = 6
    inlier_px: float = 1.0
    min_inliers: int = 12
    min_inlier_share: float = 0.15
    reference_share: float = 0.5
    retry_reference: int = 15
    verify_every: int = 10
    checks_to_lose: int = 3
    max_search_gap: int = 8
    queue_bytes: int = 256 * 2**20
    min_gap: int = 3
    min_found_share: float = 0.9


@dataclasses.dataclass
class FaceTrack:
    """What the follower found in one clip, frame by frame.

    Attributes
    ----------
    boxes : (T, 4) float array
        The square each output frame shows, in source pixels: (x, y, side,
        side) of the square with its centre and side (``crop_transform``'s
        box); an aligned square's rotation is in ``transforms``.
    transforms : (T, 2, 3) float array
        Similarity taking frame t's pixels onto the reference frame's
        (identity for the reference and for frames before any face).
    found : (T,) bool array
        The face shows on frame t.
    status : (T,) int8 array
        NO_FACE_YET, REGISTERED, HELD or DETECTED (``face_presence.STATUS_NAMES``).
    reference : int
        0-based index of the reference frame; -1 when no face was found.
    """

    boxes: np.ndarray
    transforms: np.ndarray
    found: np.ndarray
    status: np.ndarray
    reference: int

    @property
    def found_share(self) -> float:
        """Share of the frames that show the face."""
        return float(self.found.mean()) if len(self.found) else 0.0
