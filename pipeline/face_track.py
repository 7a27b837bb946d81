"""Faces that hold still: ``--crop track`` and ``--crop align``.

One streaming follower serves both modes:

``track``
    An upright square of fixed side (the reference crop's) follows the
    face: its centre is where the reference face's centre lies in the frame.
``align``
    Every frame is warped by a similarity (translation, in-plane rotation,
    scale) onto the clip's reference face.

How it follows a face (:class:`FaceFollower`)
---------------------------------------------
* **Reference.** The first frame where OpenCV's frontal Haar cascade finds
  a face whose crop square (the face box plus ``CROP_MARGIN``) lies inside
  the frame. The crop defines the output coordinates.
* **Registration** (:func:`ahdi.kernels.registration.register`): a fixed
  grid of points inside the inner face, followed by pyramidal
  Lucas-Kanade, fitted with a similarity under Huber's loss.
* **Frame by frame.** Each frame is registered onto the previous
  registered frame (:func:`registration.register`), starting from the
  previous motion carried forward. Because the previous frame is already
  in reference coordinates, its image is the anchor as it stands; the
  chain's steps are continuous (fixed grid, convex loss), so it drifts
  slowly (about 4 output pixels in 300 frames of a posed face when it never
  gets back to the reference) instead of jumping.
* **Back to the reference.** Every ``retry_reference`` frames the frame is
  registered onto the reference itself; when that fits well (at least
  ``reference_share`` of the grid), the chain restarts from it and what
  drift there was is gone.
* **Face present?** A frame shows the face when it registered (or a
  detection placed it). Every ``verify_every`` registered frames the Haar
  cascade checks the registered image (upright, reference size: a small
  search); ``checks_to_lose`` failed checks in a row mark the frames from
  the first one as faceless, until a check passes (a chain that wandered
  off the face, e.g. through a cross-fade, keeps registering).
* **Lost.** When registration fails the transform is held, and the whole
  frame is searched 1, 2, 4, ... frames later (at most every
  ``max_search_gap``); a face found there is registered onto the last
  anchor or the reference, or else starts a new chain from its box.
* **Before the reference.** Raw frames wait in a queue (at most
  ``queue_bytes``) until the reference is found, then are registered
  backwards from it. A clip with no face within that budget gives its
  frames the centre crop until one shows.

Memory per clip: one decoded frame at a time (plus the queue until the
first face: usually none, the first frame shows it), the output-scale
region of the current frame, two A x A grey images (A = 112) and the
per-frame record (a few numbers per frame). No look-ahead once the
reference is found: every estimate is causal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np

from ahdi.kernels.params import TRACKED_CROPS
from ahdi.kernels.registration import (Anchor, Region, analysis_to_output, apply, compose,
                                       covers, crop_transform, face_grid, invert, region_for,
                                       register, render, scale_of, shrink, square_transform)

from .face import CROP_MARGIN, center_box, detect_face, grey_of, square_box
from .face_settings import FaceTrack, TrackSettings
from .face_presence import (DETECTED, HELD, NO_FACE_YET, REGISTERED, face_in_registered,
                            presence_warnings)

__all__ = ["REGION_MARGIN", "FaceFollower"]
#: Border around the predicted square, as a share of S, cut along with it:
#: room for the registration's correction (a few output pixels; a frame
#: whose square moved farther is cut again).
REGION_MARGIN = 0.02


# ----------------------------------------------------------------------
# the follower
# ----------------------------------------------------------------------

class FaceFollower:
    """Streams S x S frames that hold the clip's face still (``track`` or ``align``).

    Parameters
    ----------
    size : int
        Output side S.
    mode : {'track', 'align'}
        Show the followed position only, or the registered frame.
    bgr : bool
        Frames come in OpenCV's BGR order (decoded video) or RGB (images);
        the output keeps the order.
    settings : TrackSettings, optional

    Iterate :meth:`frames` once; afterwards :attr:`track` holds the
    per-frame record and :meth:`warnings` the messages.
    """

    def __init__(self, size: int, mode: str = "align", bgr: bool = True,
                 settings: TrackSettings | None = None):
        if mode not in TRACKED_CROPS:
            raise ValueError(f"mode must be one of {TRACKED_CROPS}, got {mode!r}")
        self.size = size
        self.mode = mode
        self.bgr = bgr
        self.settings = s = settings or TrackSettings()
        self.track: FaceTrack | None = None
        self._to_output = analysis_to_output(size, s.analysis_side)
        self._to_analysis = invert(self._to_output)
        self._record: dict[str, list] = {"boxes": [], "transforms": [], "found": [],
                                         "status": []}
        self._reference: Anchor | None = None
        self._anchor: Anchor | None = None
        self._grid: np.ndarray | None = None  # face grid, analysis px
        self._face_side = 0.0  # reference face box side, analysis px
        self._current: np.ndarray | None = None  # out_to_src of the last frame
        self._velocity: np.ndarray | None = None  # last frame-to-frame change, output px
        self._reference_tried = 0
        self._lost_since = 0
        self._next_search = 0
        self._registered_count = 0
        self._failed_checks = 0
        self._first_failed_check = 0
        self._frame_wh: tuple[int, int] = (0, 0)

    # -- the stream -----------------------------------------------------
    def frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The S x S output frames, one per input frame, in order."""
        queue: deque = deque()  # (index, frame) waiting for the reference
        queued_bytes = 0
        waiting = True  # False once the queue overflowed: frames go out at once
        for index, frame in enumerate(frames):
            if index == 0:
                self._frame_wh = (frame.shape[1], frame.shape[0])
            if self._reference is not None:
                yield self._follow(frame, index)
            elif self._start(frame, index):
                yield from self._replay_backwards(queue)
                yield self._output(frame, index, self._current, REGISTERED, True)
            elif waiting and queued_bytes + frame.nbytes <= self.settings.queue_bytes:
                queue.append((index, frame))
                queued_bytes += frame.nbytes
            else:
                waiting = False
                while queue:
                    yield self._centre(*reversed(queue.popleft()))
                yield self._centre(frame, index)
        while queue:  # the clip ended before any face showed
            yield self._centre(*reversed(queue.popleft()))
        self.track = FaceTrack(
            boxes=np.array(self._record["boxes"], np.float64).reshape(-1, 4),
            transforms=np.array(self._record["transforms"], np.float64).reshape(-1, 2, 3),
            found=np.array(self._record["found"], bool),
            status=np.array(self._record["status"], np.int8),
            reference=self._reference.frame if self._reference is not None else -1)

    def warnings(self, name: str) -> list[str]:
        """The clip's face messages, naming ``name`` and the frames (1-based)."""
        if self.track is None:
            return []
        s = self.settings
        return presence_warnings(self.track, name, s.min_found_share, s.min_gap)

    # -- analysis images ------------------------------------------------
    def _analysis_region(self, region: Region, out_to_src: np.ndarray) -> Region:
        """Grey copy of ``region`` at analysis scale (shrunk with INTER_AREA when larger)."""
        grey = Region(grey_of(region.image, self.bgr), region.to_region, region.source_box)
        per_analysis_px = scale_of(compose(region.to_region, compose(out_to_src, self._to_output)))
        return shrink(grey, 1 / per_analysis_px) if per_analysis_px > 1 else grey

    def _analysis_image(self, grey_region: Region, out_to_src: np.ndarray) -> np.ndarray:
        return render(grey_region, compose(out_to_src, self._to_output),
                      self.settings.analysis_side)

    def _register(self, predicted: np.ndarray, image: np.ndarray,
                  anchor: Anchor) -> tuple[np.ndarray, float] | None:
        """(out_to_src, share of the grid that agrees) of the frame on ``anchor``, or None.

        ``image``: the frame's analysis image under ``predicted``. One pass
        from the prediction, again with ``wide_levels`` if it fails.
        """
        s = self.settings
        fit = register(anchor, image, self._grid, s)
        if fit is None and s.wide_levels > s.lk_levels:
            fit = register(anchor, image, self._grid, s, levels=s.wide_levels)
        if fit is None:
            return None
        delta, agree = fit
        share = float(agree.mean())
        if share < s.min_inlier_share:
            return None
        return compose(predicted, self._from_analysis(delta)), share

    def _from_analysis(self, delta: np.ndarray) -> np.ndarray:
        """A change of analysis coordinates, as a change of output coordinates."""
        return compose(self._to_output, compose(delta, self._to_analysis))

    # -- before the first face ------------------------------------------
    def _search_due(self, index: int) -> bool:
        """Whole-frame searches 1, 2, 4, ... frames apart, at most ``max_search_gap``."""
        if index < self._next_search:
            return False
        gap = min(self.settings.max_search_gap, max(1, self._lost_since))
        self._lost_since = max(1, 2 * self._lost_since)
        self._next_search = index + gap
        return True

    def _start(self, frame: np.ndarray, index: int) -> bool:
        """Make ``frame`` the reference when a whole face shows in it."""
        if not self._search_due(index):
            return False
        face = detect_face(frame, self.bgr)
        if face is None:
            return False
        w, h = self._frame_wh
        cx, cy = face[0] + face[2] / 2, face[1] + face[3] / 2
        side = max(face[2], face[3]) * (1 + CROP_MARGIN)
        if not (side / 2 <= cx <= w - side / 2 and side / 2 <= cy <= h - side / 2):
            return False  # the crop would leave the frame: not a good reference
        out_to_src = crop_transform(square_box(cx, cy, side, w, h), self.size)
        to_analysis = compose(self._to_analysis, invert(out_to_src))
        corners = apply(to_analysis, np.array([[face[0], face[1]],
                                               [face[0] + face[2], face[1] + face[3]]]))
        box = (corners[0, 0], corners[0, 1], *(corners[1] - corners[0]))
        grid = face_grid(self.settings.analysis_side, box, self.settings.grid_step)
        if len(grid) < self.settings.min_inliers:
            return False  # too small a face to register
        region = region_for(frame, out_to_src, self.size)
        grey = self._analysis_image(self._analysis_region(region, out_to_src), out_to_src)
        self._reference = self._anchor = Anchor(grey, index, out_to_src)
        self._grid, self._face_side = grid, box[2]
        self._current = out_to_src
        self._lost_since = 0
        return True

    def _replay_backwards(self, queue: deque) -> Iterator[np.ndarray]:
        """The frames queued before the reference, registered backwards from it, in order."""
        results = []
        anchor, transform = self._reference, self._current
        while queue:
            index, frame = queue.pop()
            region = region_for(frame, transform, self.size, REGION_MARGIN)
            grey_region = self._analysis_region(region, transform)
            image = self._analysis_image(grey_region, transform)
            fit = self._register(transform, image, anchor)
            if fit is not None:
                transform = fit[0]
                anchor = Anchor(self._analysis_image(grey_region, transform), index, transform)
            results.append((frame, index, transform, fit is not None))
        while results:  # earliest first; each raw frame is let go once it is out
            frame, index, transform, ok = results.pop()
            yield self._output(frame, index, transform, REGISTERED if ok else HELD, ok)

    def _centre(self, frame: np.ndarray, index: int) -> np.ndarray:
        """Centre crop of a frame seen before any face."""
        w, h = self._frame_wh
        return self._output(frame, index, crop_transform(center_box(w, h), self.size),
                            NO_FACE_YET, False)

    # -- following ----------------------------------------------------------
    def _follow(self, frame: np.ndarray, index: int) -> np.ndarray:
        s = self.settings
        predicted = self._current if self._velocity is None else compose(self._current,
                                                                         self._velocity)
        region = region_for(frame, predicted, self.size, self._margin(predicted))
        grey_region = self._analysis_region(region, predicted)
        image = self._analysis_image(grey_region, predicted)
        fit = None
        if (self._anchor is not self._reference
                and index - self._reference_tried >= s.retry_reference):
            self._reference_tried = index
            fit = self._register(predicted, image, self._reference)
            if fit is not None and fit[1] < s.reference_share:
                fit = None
        if fit is None:
            fit = self._register(predicted, image, self._anchor)
        if fit is None:
            return self._lost(frame, index)
        return self._registered(frame, index, region, grey_region, fit[0], REGISTERED)

    def _margin(self, predicted: np.ndarray) -> float:
        """Margin of the region around the predicted square: room for the fit.

        ``track`` shows the reference's (larger where the face got smaller):
        the margin grows to hold it, so the frame is not cut a second time.
        """
        if self.mode != "track":
            return REGION_MARGIN
        growth = scale_of(self._reference.out_to_src) / scale_of(predicted) - 1
        return REGION_MARGIN + max(0.0, growth / 2)

    def _registered(self, frame, index, region, grey_region, out_to_src, status) -> np.ndarray:
        """Take ``out_to_src`` for this frame: it becomes the anchor of the next."""
        if self._lost_since == 0 and self._current is not None:
            self._velocity = compose(invert(self._current), out_to_src)
        else:  # back after a loss: no motion to carry
            self._velocity = None
        self._current = out_to_src
        self._lost_since = 0
        grey = self._analysis_image(grey_region, out_to_src)
        self._anchor = Anchor(grey, index, out_to_src)
        found = self._check_face(grey, index)
        if not covers(region, out_to_src, self.size, *self._frame_wh):
            region = region_for(frame, out_to_src, self.size)  # moved past the margin
        shown = render(region, out_to_src, self.size) if self.mode == "align" else None
        return self._output(frame, index, out_to_src, status, found, rendered=shown,
                            region=region)

    def _check_face(self, grey: np.ndarray, index: int) -> bool:
        """Whether the face counts as present; every ``verify_every`` frames the cascade checks.

        ``checks_to_lose`` failed checks in a row take the face away from the
        first of them on (those frames already went out: only their record
        changes), until a check passes. The cascade misses a real face now
        and then (a wide-open mouth, a turned head, motion blur: up to ten
        frames in a row on carphone), so one miss proves nothing.
        """
        self._registered_count += 1
        if self._registered_count % self.settings.verify_every == 0:
            if face_in_registered(grey, self._face_side):
                self._failed_checks = 0
            else:
                self._failed_checks += 1
                if self._failed_checks == 1:
                    self._first_failed_check = index
                elif self._failed_checks == self.settings.checks_to_lose:
                    found = self._record["found"]
                    for i in range(self._first_failed_check, index):
                        found[i] = False
        return self._failed_checks < self.settings.checks_to_lose

    def _lost(self, frame: np.ndarray, index: int) -> np.ndarray:
        """No registration: hold the transform, search the whole frame now and then."""
        self._velocity = None
        if self._lost_since == 0:
            self._next_search = index
        if self._search_due(index):
            face = detect_face(frame, self.bgr)
            if face is not None:
                return self._reacquire(frame, index, face)
        return self._output(frame, index, self._current, HELD, False)

    def _reacquire(self, frame, index, face) -> np.ndarray:
        """A face found by a whole-frame search: register it, or start a new chain from its box."""
        # The reference face's centre and size (output px) onto the detected ones.
        side_out = self._face_side * scale_of(self._to_output)
        scale = max(face[2], face[3]) / side_out
        centre = np.array([face[0] + face[2] / 2, face[1] + face[3] / 2])
        placed = square_transform(centre, scale * self.size, self.size)
        self._failed_checks = 0  # the cascade just saw a face: earlier misses are void
        region = region_for(frame, placed, self.size, REGION_MARGIN)
        grey_region = self._analysis_region(region, placed)
        image = self._analysis_image(grey_region, placed)
        for anchor in (self._anchor, self._reference):
            fit = self._register(placed, image, anchor)
            if fit is not None:
                return self._registered(frame, index, region, grey_region, fit[0], REGISTERED)
        return self._registered(frame, index, region, grey_region, placed, DETECTED)

    # -- output and record -------------------------------------------------
    def _output(self, frame, index, out_to_src, status, found, rendered=None,
                region=None) -> np.ndarray:
        """Record one frame and return its S x S image.

        ``rendered``: the image, when the caller has it; ``region``: a
        region of the frame to render from, when it covers what is shown.
        """
        size = self.size
        shown = out_to_src
        if self.mode == "track" and self._reference is not None:
            # The reference's square, upright, moved to the followed centre.
            centre = apply(out_to_src, np.array([[(size - 1) / 2, (size - 1) / 2]]))[0]
            shown = square_transform(centre, scale_of(self._reference.out_to_src) * size, size)
            rendered = None
        if rendered is None:
            if region is None or not covers(region, shown, size, *self._frame_wh):
                region = region_for(frame, shown, size)
            rendered = render(region, shown, size)
        centre = apply(shown, np.array([[(size - 1) / 2, (size - 1) / 2]]))[0]
        side = scale_of(shown) * size
        transform = (np.eye(2, 3) if self._reference is None
                     else compose(self._reference.out_to_src, invert(out_to_src)))
        self._record["boxes"].append((centre[0] - side / 2 + 0.5, centre[1] - side / 2 + 0.5,
                                      side, side))
        self._record["transforms"].append(transform)
        self._record["found"].append(found)
        self._record["status"].append(status)
        return rendered
