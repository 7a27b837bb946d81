"""Tests of the NumPy float64 reference (the oracle of the fast kernels)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ahdi.kernels import reference as R
from ahdi.kernels.params import AhdiParams

S = 32
PARAMS = AhdiParams(size=S, patch=3)


# ----------------------------------------------------------------------
# synthetic videos
# ----------------------------------------------------------------------
def moving_square(T=16, size=S, side=8, step=1, bg=20, fg=200):
    """A bright square sliding right by `step` px per frame on a dark background."""
    out = np.full((T, size, size, 3), bg, np.uint8)
    for t in range(T):
        x = 4 + t * step
        out[t, 10:10 + side, x:x + side] = fg
    return out


def brightening(T=20, c=5, size=S, seed=0):
    """I_t = base + t * c (c may be negative), kept inside uint8."""
    rng = np.random.default_rng(seed)
    base = rng.integers(100, 140, (size, size, 3)).astype(np.int64)
    frames = np.stack([base + t * c for t in range(T)])
    assert frames.min() >= 0 and frames.max() <= 255
    return frames.astype(np.uint8)


# ----------------------------------------------------------------------
# ARP
# ----------------------------------------------------------------------
@pytest.mark.parametrize("M, expected", [
    (1, [0.0]),
    (2, [-0.5, 0.5]),
    (3, [-4 / 3, 2 / 3, 2 / 3]),
    (4, [-29 / 12, 7 / 12, 13 / 12, 9 / 12]),
])
def test_arp_coefficients_by_hand(M, expected):
    np.testing.assert_allclose(R.arp_coefficients(M), expected, rtol=0, atol=1e-12)
    assert R.arp_coefficients(M).dtype == np.float64


@pytest.mark.parametrize("M", range(1, 51))
def test_arp_coefficients_sum_to_zero(M):
    assert abs(R.arp_coefficients(M).sum()) < 1e-9


def test_arp_coefficients_reject_zero():
    with pytest.raises(ValueError, match="M must be"):
        R.arp_coefficients(0)


def test_rank_pool_values_and_single_frame():
    x = np.arange(3 * 2, dtype=np.float64).reshape(3, 2)  # rows 0..2
    expected = R.arp_coefficients(3) @ x
    np.testing.assert_allclose(R.rank_pool(x), expected, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 frames"):
        R.rank_pool(x[:1])


# ----------------------------------------------------------------------
# box mean
# ----------------------------------------------------------------------
def brute_box_mean(img, p):
    """Double loop; the border index reflects with the edge repeated (fedcba|abcdef)."""
    h, w = img.shape[:2]
    r = p // 2

    def reflect(i, n):
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - 1 - i
        return i

    out = np.zeros(img.shape, dtype=np.float64)
    for y in range(h):
        for x in range(w):
            acc = np.zeros(img.shape[2:], dtype=np.float64)
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    acc = acc + img[reflect(y + dy, h), reflect(x + dx, w)]
            out[y, x] = acc / (p * p)
    return out


@pytest.mark.parametrize("shape", [(5, 7), (6, 4, 3)])
@pytest.mark.parametrize("p", [1, 3, 5])
def test_box_mean_equals_brute_force(shape, p):
    img = np.random.default_rng(1).normal(size=shape)
    np.testing.assert_allclose(R.box_mean(img, p), brute_box_mean(img, p), atol=1e-12)


def test_box_mean_matches_opencv_border_reflect():
    img = np.random.default_rng(2).random((20, 17, 3))
    ours = R.box_mean(img, 9)
    cv = cv2.blur(img, (9, 9), borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(ours, cv, atol=1e-10)


def test_box_mean_rejects_even_patch():
    with pytest.raises(ValueError, match="odd"):
        R.box_mean(np.zeros((4, 4)), 4)


# ----------------------------------------------------------------------
# motion
# ----------------------------------------------------------------------
def test_grey_for_flow_sizes():
    f = np.zeros((40, 20, 3), np.uint8)
    assert R.grey_for_flow(f, 64).shape == (64, 32)
    assert R.grey_for_flow(f, 10).shape == (10, 5)
    assert R.grey_for_flow(f, 40).shape == (40, 20)
    assert R.grey_for_flow(np.zeros((1, 50, 3), np.uint8), 10).shape == (1, 10)
    assert R.grey_for_flow(f, 64).dtype == np.uint8


def test_motion_activity_moving_square():
    v = moving_square()
    ma = R.motion_activity(v)
    assert ma.shape == (len(v),) and ma.dtype == np.float64
    assert ma[0] == ma[1]
    assert np.all(ma > 0.1)
    flows = R.flow_fields(v, 64, (0.5, 3, 15, 3, 5, 1.2, 0))
    assert len(flows) == len(v) - 1
    assert flows[0].shape == (64, 64, 2) and flows[0].dtype == np.float32


def test_motion_activity_static_is_zero():
    v = np.repeat(moving_square(T=1), 5, axis=0)
    np.testing.assert_allclose(R.motion_activity(v), 0.0, atol=1e-6)


@pytest.mark.parametrize("T", [0, 1])
def test_motion_activity_needs_two_frames(T):
    with pytest.raises(ValueError, match="needs at least 2 frames"):
        R.motion_activity(moving_square(T=2)[:T])


def test_motion_activity_accepts_list():
    v = moving_square(T=4)
    np.testing.assert_array_equal(R.motion_activity(list(v)), R.motion_activity(v))


# ----------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------
def test_resolve_eps():
    assert R.resolve_eps([1.0, 2.0, 3.0], "auto") == 1.0
    assert R.resolve_eps([1.0, 2.0], 0.25) == 0.25
    with pytest.raises(ValueError):
        R.resolve_eps([1.0, 2.0], -1.0)


def test_segment_bounds_static_curve_equal_split():
    b = R.segment_bounds(np.ones(24), n_segments=8, min_len=3)
    np.testing.assert_array_equal(b, np.arange(0, 25, 3))
    assert b.dtype == np.int64


def test_segment_bounds_zero_energy_equal_split():
    b = R.segment_bounds(np.zeros(16), n_segments=8, min_len=1)
    np.testing.assert_array_equal(b, np.arange(0, 17, 2))
    b = R.segment_bounds(np.zeros(10), n_segments=3, min_len=1)
    np.testing.assert_array_equal(b, [0, 3, 6, 10])


def burst_curve():
    ma = np.full(40, 0.1)
    ma[20:28] = 10.0
    return ma


def test_segment_bounds_burst_gets_short_segments():
    b = R.segment_bounds(burst_curve(), n_segments=8, min_len=1, eps=1.0)
    np.testing.assert_array_equal(b, [0, 21, 22, 23, 24, 25, 26, 27, 40])


def test_segment_bounds_min_len_merging():
    # lengths 21,1,1,1,1,1,1,13 -> merge earliest short into shorter
    # neighbour (earlier on a tie) -> 21,3,3,13
    b = R.segment_bounds(burst_curve(), n_segments=8, min_len=3, eps=1.0)
    np.testing.assert_array_equal(b, [0, 21, 24, 27, 40])


def test_segment_bounds_merge_tie_goes_to_earlier():
    ma = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1], dtype=np.float64)
    # C = 0,0,0,0,1,2,2,2,2,3 ; thresholds 1 -> j=4, 2 -> j=5 ; lengths 4,1,4
    np.testing.assert_array_equal(
        R.segment_bounds(ma, n_segments=3, min_len=1, eps=0.0), [0, 4, 5, 9])
    # the middle segment is short and both neighbours have 4 frames: earlier wins
    np.testing.assert_array_equal(
        R.segment_bounds(ma, n_segments=3, min_len=2, eps=0.0), [0, 5, 9])


def test_segment_bounds_repeated_bounds_dropped():
    ma = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1], dtype=np.float64)
    # C = 0,0,0,0,1,1,1,1,1,2 ; thresholds 2/3 -> j=4, 4/3 -> j=9 = T
    np.testing.assert_array_equal(
        R.segment_bounds(ma, n_segments=3, min_len=1, eps=0.0), [0, 4, 9])


def test_segment_bounds_n_larger_than_T_allows():
    b = R.segment_bounds(np.ones(10), n_segments=8, min_len=3)
    np.testing.assert_array_equal(b, [0, 4, 7, 10])


def test_segment_bounds_tiny_videos():
    np.testing.assert_array_equal(R.segment_bounds(np.ones(2)), [0, 1, 2])
    np.testing.assert_array_equal(R.segment_bounds(np.ones(3)), [0, 2, 3])
    with pytest.raises(ValueError, match="needs at least 2 frames"):
        R.segment_bounds(np.ones(1))


def test_segment_bounds_energy_in_last_frame_falls_back_to_halves():
    ma = np.zeros(11)
    ma[-1] = 5.0
    np.testing.assert_array_equal(R.segment_bounds(ma, eps=0.0), [0, 5, 11])


def test_segment_bounds_invariants_on_random_curves():
    rng = np.random.default_rng(3)
    for _ in range(200):
        T = int(rng.integers(2, 60))
        ma = rng.exponential(size=T) * (rng.random(T) < 0.5)
        n, m = int(rng.integers(2, 10)), int(rng.integers(1, 5))
        b = R.segment_bounds(ma, n, m)
        assert b[0] == 0 and b[-1] == T
        assert np.all(np.diff(b) > 0)
        assert 3 <= len(b) <= max(2, min(n, T // m)) + 1
        if len(b) > 3:
            assert np.diff(b).min() >= m


def test_fixed_windows_examples():
    w = R.fixed_windows(27, 10)
    assert [s for s, _ in w] == [0, 5, 10, 15, 17]
    assert all(e - s == 10 for s, e in w)
    assert R.fixed_windows(25, 10) == [(0, 10), (5, 15), (10, 20), (15, 25)]
    assert R.fixed_windows(8, 10) == [(0, 8)]
    assert R.fixed_windows(10, 10) == [(0, 10)]
    assert R.fixed_windows(12, 4, stride=3) == [(0, 4), (3, 7), (6, 10), (8, 12)]


def test_overlapping_windows():
    assert R.overlapping_windows([0, 3, 7, 12]) == [(0, 7), (3, 12)]
    assert R.overlapping_windows(np.array([0, 5, 9])) == [(0, 9)]
    with pytest.raises(ValueError):
        R.overlapping_windows([0, 9])


# ----------------------------------------------------------------------
# weights and levels
# ----------------------------------------------------------------------
def test_information_weights_sum_to_one():
    D = np.random.default_rng(4).normal(size=(4, 8, 8, 3))
    W = R.information_weights(D, 3)
    assert W.shape == (4, 8, 8)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-5)
    assert np.all(W >= 0)


def test_combine_windows_modes():
    D = np.random.default_rng(5).normal(size=(3, 8, 8, 3))
    W = R.information_weights(D, 3)
    np.testing.assert_allclose(R.combine_windows(D, 3, "weighted"),
                               (W[..., None] * D).sum(0), atol=1e-12)
    a = R.arp_coefficients(3) * 3
    np.testing.assert_allclose(R.combine_windows(D, 3, "arp"),
                               (a[:, None, None, None] * W[..., None] * D).sum(0),
                               atol=1e-12)
    np.testing.assert_array_equal(R.combine_windows(D[:1], 3, "arp"), D[0])


def test_hierarchical_pool_levels():
    D = np.random.default_rng(6).normal(size=(6, 8, 8, 3))
    two = R.hierarchical_pool(D, 3, levels=2)
    np.testing.assert_allclose(two, R.combine_windows(D, 3), atol=0)
    # levels 3, window 3: 6 images -> 4 -> final combination
    mid = np.stack([R.combine_windows(D[i:i + 3], 3) for i in range(4)])
    np.testing.assert_allclose(R.hierarchical_pool(D, 3, levels=3, window=3),
                               R.combine_windows(mid, 3), atol=0)
    # levels 4: 6 -> 4 -> 2 -> final
    mid2 = np.stack([R.combine_windows(mid[i:i + 3], 3) for i in range(2)])
    np.testing.assert_allclose(R.hierarchical_pool(D, 3, levels=4, window=3),
                               R.combine_windows(mid2, 3), atol=0)
    # the loop stops once the sequence is no longer than the window
    np.testing.assert_allclose(R.hierarchical_pool(D, 3, levels=9, window=3),
                               R.combine_windows(mid2, 3), atol=0)


# ----------------------------------------------------------------------
# to_uint8
# ----------------------------------------------------------------------
def test_to_uint8_minmax_and_flat_rule():
    x = np.array([[0.0, 0.5], [1.0, 0.25]])
    np.testing.assert_array_equal(R.to_uint8(x), [[0, 128], [255, 64]])
    np.testing.assert_array_equal(R.to_uint8(np.full((3, 3, 3), 0.7)), 0)
    flat_noise = 0.3 + 1e-8 * np.random.default_rng(7).random((4, 4, 3))
    np.testing.assert_array_equal(R.to_uint8(flat_noise), 0)
    np.testing.assert_array_equal(R.to_uint8(flat_noise, "percentile"), 0)
    assert R.to_uint8(x).dtype == np.uint8


def test_to_uint8_percentile_clips_outliers():
    x = np.linspace(0.0, 1.0, 1001)
    x[0], x[-1] = -100.0, 100.0
    y = R.to_uint8(x, "percentile")
    assert y[0] == 0 and y[-1] == 255
    assert y[500] in (127, 128)
    with pytest.raises(ValueError, match="normalize"):
        R.to_uint8(x, "other")


# ----------------------------------------------------------------------
# invariants of the spec
# ----------------------------------------------------------------------
def test_constant_video_gives_zero():
    v = np.full((12, S, S, 3), 137, np.uint8)
    v[:, 5:9, 5:9] = (10, 200, 30)
    for level2 in ("weighted", "arp"):
        r = R.ahdi(v, PARAMS.replace(level2=level2))
        assert np.abs(r["ahdi_float"]).max() < 1e-9
        np.testing.assert_array_equal(r["ahdi"], 0)
        np.testing.assert_array_equal(r["sdi"], 0)
        np.testing.assert_array_equal(r["mdv"], 0)


@pytest.mark.parametrize("c", [5, -5])
@pytest.mark.parametrize("levels", [1, 2, 3])
def test_linear_brightening_sign(c, levels):
    v = brightening(c=c)
    assert np.all(np.sign(R.sdi(v)) == np.sign(c))
    r = R.ahdi(v, PARAMS.replace(levels=levels, level2="weighted"))
    assert np.all(np.sign(r["ahdi_float"]) == np.sign(c))
    assert np.all(np.sign(r["mdv_float"]) == np.sign(c))


@pytest.mark.parametrize("segmentation", ["adaptive", "fixed"])
@pytest.mark.parametrize("level2", ["weighted", "arp"])
def test_adding_constant_leaves_float_images_unchanged(segmentation, level2):
    v = moving_square(T=18, bg=20, fg=180)
    p = PARAMS.replace(segmentation=segmentation, level2=level2, segment_len=6)
    a, b = R.ahdi(v, p), R.ahdi(v + 40, p)
    np.testing.assert_allclose(R.sdi(v), R.sdi(v + 40), atol=1e-12)
    np.testing.assert_array_equal(a["windows"], b["windows"])
    np.testing.assert_allclose(a["ahdi_float"], b["ahdi_float"], atol=1e-12)
    # and the pooling alone, on the same windows, whatever the motion says
    w = a["windows"]
    Da, Db = R.window_images(v, w, 3), R.window_images(v + 40, w, 3)
    np.testing.assert_allclose(Da, Db, atol=1e-12)


# ----------------------------------------------------------------------
# the whole chain
# ----------------------------------------------------------------------
def test_ahdi_outputs_adaptive():
    v = moving_square(T=16)
    r = R.ahdi(v, PARAMS)
    T = len(v)
    b, w = r["bounds"], r["windows"]
    assert b[0] == 0 and b[-1] == T and np.all(np.diff(b) > 0)
    np.testing.assert_array_equal(w, np.array(R.overlapping_windows(b)))
    assert w.dtype == np.int64 and w.shape == (len(b) - 2, 2)
    M = len(w)
    assert r["mdv_float"].shape == (M, S, S, 3)
    assert r["ahdi_float"].shape == (S, S, 3) and r["ahdi_float"].dtype == np.float64
    for key in ("ahdi", "sdi", "mean", "flow"):
        assert r[key].shape == (S, S, 3) and r[key].dtype == np.uint8, key
    assert r["mdv"].shape == (M, S, S, 3) and r["mdv"].dtype == np.uint8
    assert r["motion"].shape == (T,)
    assert r["eps"] == pytest.approx(0.5 * np.median(r["motion"]))
    np.testing.assert_allclose(
        r["ahdi_float"], R.hierarchical_pool(r["mdv_float"], 3), atol=0)
    for q in range(M):
        np.testing.assert_array_equal(r["mdv"][q], R.to_uint8(r["mdv_float"][q]))
    assert r["ahdi"].max() == 255 and r["ahdi"].min() == 0
    assert r["flow"].max() > 0


def test_ahdi_levels_one_and_fixed():
    v = moving_square(T=14)
    r1 = R.ahdi(v, PARAMS.replace(levels=1))
    np.testing.assert_array_equal(r1["windows"], [[0, 14]])
    expected = R.box_mean(R.rank_pool(v / 255.0), 3)
    np.testing.assert_allclose(r1["ahdi_float"], expected, atol=1e-12)
    assert r1["mdv_float"].shape == (1, S, S, 3)
    assert r1["motion"].shape == (14,)

    rf = R.ahdi(v, PARAMS.replace(segmentation="fixed", segment_len=6))
    assert rf["bounds"] is None
    np.testing.assert_array_equal(rf["windows"], R.fixed_windows(14, 6))


def test_flow_picture():
    v = moving_square(T=8)
    pic = R.flow_picture(v, S, 64, (0.5, 3, 15, 3, 5, 1.2, 0))
    assert pic.shape == (S, S, 3) and pic.dtype == np.uint8
    assert pic.max() > 0
    big = R.flow_picture(v, 96)
    assert big.shape == (96, 96, 3)
    static = np.repeat(v[:1], 4, axis=0)
    np.testing.assert_array_equal(R.flow_picture(static, S), 0)


def test_mean_image():
    v = np.stack([np.full((S, S, 3), 10, np.uint8), np.full((S, S, 3), 30, np.uint8)])
    np.testing.assert_allclose(R.mean_image(v), 20 / 255.0, atol=1e-15)


# ----------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------
def test_input_checks():
    v = moving_square(T=4)
    with pytest.raises(ValueError, match="needs at least 2 frames"):
        R.ahdi(v[:1], PARAMS)
    with pytest.raises(ValueError, match="uint8"):
        R.ahdi(v.astype(np.float32), PARAMS)
    with pytest.raises(ValueError, match="uint8"):
        R.sdi(v.astype(np.int16))
    with pytest.raises(ValueError, match=r"\(T, S, S, 3\)"):
        R.sdi(v[..., :2])
    with pytest.raises(ValueError, match=r"\(T, S, S, 3\)"):
        R.sdi(v[:, :, :, 0])
    with pytest.raises(ValueError, match="32"):
        R.ahdi(v[:, :16, :16], PARAMS)
    with pytest.raises(ValueError, match="odd"):
        R.window_images(v, [(0, 4)], 4)
    with pytest.raises(ValueError, match="fewer than 2 frames"):
        R.window_images(v, [(0, 1)], 3)
    with pytest.raises(ValueError, match="needs at least 2 frames"):
        R.motion_activity([])
