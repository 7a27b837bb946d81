"""compute_ahdi as a whole: against the reference, the spec's invariants,
reproducibility, clear errors, and the spilling frame buffer.

Images are compared as in tests/test_kernels.py: float images within
``1e-5 * max(max|ref|, 1e-9)``, uint8 images at most 1 apart (rounding
ties), integers exactly.

The mean image: the project maps it as ``floor(255 * mean + 0.5)`` (the
mean of the frames as a picture, see docs/algorithm.md), while
``reference.ahdi`` stretches it with ``params.normalize``; the comparison
below uses the reference's float mean mapped the project's way.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ahdi.kernels import AhdiParams, FrameBuffer, compute_ahdi, rank_pool_windows
from ahdi.kernels import reference as R
from ahdi.kernels.buffer import FrameBuffer as _FrameBuffer

from test_kernels import (assert_rel, assert_uint8_close, carphone,  # noqa: E402
                          make_video)

ROOT = Path(__file__).resolve().parents[1]
ALL = ("ahdi", "mdv", "sdi", "mean", "flow")


def params_for(size, **kw):
    kw.setdefault("crop", "center")
    kw.setdefault("flow_side", 8 if size < 16 else 64)
    return AhdiParams(size=size, **kw)


def fingerprint(result) -> str:
    """sha256 of every array of an AhdiResult, in a fixed order."""
    h = hashlib.sha256()
    for name in ("ahdi", "mdv", "sdi", "mean", "flow", "ahdi_float", "motion", "bounds",
                 "windows"):
        value = getattr(result, name)
        h.update(name.encode())
        if value is not None:
            value = np.ascontiguousarray(value)
            h.update(str((value.dtype, value.shape)).encode())
            h.update(value.tobytes())
    h.update(repr((result.eps, result.n_frames)).encode())
    return h.hexdigest()


def assert_matches_reference(result, frames, params):
    ref = R.ahdi(frames, params)
    assert result.n_frames == len(frames)
    assert_rel(result.motion, ref["motion"], "motion")
    assert result.eps == pytest.approx(ref["eps"], rel=1e-5, abs=1e-12)
    if ref["bounds"] is None:
        assert result.bounds is None
    else:
        np.testing.assert_array_equal(result.bounds, ref["bounds"])
    np.testing.assert_array_equal(result.windows, ref["windows"])
    assert_rel(result.ahdi_float, ref["ahdi_float"], "ahdi_float")
    assert_uint8_close(result.ahdi, ref["ahdi"], "ahdi")
    assert result.mdv.shape == ref["mdv"].shape
    for q, (a, b) in enumerate(zip(result.mdv, ref["mdv"])):
        assert_uint8_close(a, b, f"mdv[{q}]")
    assert_uint8_close(result.sdi, ref["sdi"], "sdi")
    mean = np.floor(255.0 * R.mean_image(frames) + 0.5).astype(np.uint8)
    assert_uint8_close(result.mean, mean, "mean")
    assert_uint8_close(result.flow, ref["flow"], "flow")


# ----------------------------------------------------------------------
# against the reference
# ----------------------------------------------------------------------
REAL_CASES = {
    "default": {},
    "patch3-arp": {"patch": 3, "level2": "arp"},
    "levels1": {"levels": 1},
    "levels3-percentile": {"levels": 3, "normalize": "percentile"},
    "fixed": {"segmentation": "fixed", "segment_len": 20},
    "fixed-stride": {"segmentation": "fixed", "segment_len": 16, "stride": 7, "levels": 3},
    "many-segments": {"n_segments": 64, "min_len": 2, "patch": 1},
}


@pytest.mark.parametrize("case", sorted(REAL_CASES))
def test_real_video_matches_reference(case):
    frames = carphone(64)
    params = params_for(64, **REAL_CASES[case])
    assert_matches_reference(compute_ahdi(frames, params, ALL), frames, params)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([3, 5, 7, 9]),
       n_frames=st.integers(2, 10), kind=st.sampled_from(["noise", "moving", "constant", "ramp"]),
       patch=st.sampled_from([1, 3]), n_segments=st.integers(2, 12), min_len=st.integers(1, 3),
       levels=st.integers(1, 3), level2=st.sampled_from(["weighted", "arp"]),
       segmentation=st.sampled_from(["adaptive", "fixed"]), segment_len=st.integers(2, 5),
       normalize=st.sampled_from(["minmax", "percentile"]), window=st.integers(2, 3))
def test_random_videos_match_reference(seed, size, n_frames, kind, patch, n_segments, min_len,
                                       levels, level2, segmentation, segment_len, normalize,
                                       window):
    frames = make_video(seed, n_frames, size, kind)
    params = params_for(size, patch=patch, n_segments=n_segments, min_len=min_len,
                        levels=levels, level2=level2, segmentation=segmentation,
                        segment_len=segment_len, normalize=normalize, window=window)
    assert_matches_reference(compute_ahdi(frames, params, ALL), frames, params)


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_tiny_compute_matches_reference(levels):
    frames = make_video(3, 7, 5, "moving")
    params = params_for(5, patch=3, levels=levels, n_segments=4, min_len=1, window=2)
    assert_matches_reference(compute_ahdi(frames, params, ALL), frames, params)


def test_results_follow_the_requested_representations():
    frames = make_video(0, 6, 9, "moving")
    result = compute_ahdi(frames, params_for(9, patch=3), ["sdi", "sdi", "flow"])
    assert result.ahdi is result.mdv is result.mean is result.ahdi_float is None
    assert result.sdi.shape == result.flow.shape == (9, 9, 3)
    result = compute_ahdi(iter(list(frames)), params_for(9, patch=3), ["mdv"])
    assert result.ahdi is None and result.mdv.dtype == np.uint8
    assert result.mdv.shape == (len(result.windows), 9, 9, 3)


def test_levels_1_reports_the_whole_video_as_one_segment():
    frames = make_video(0, 6, 9, "moving")
    result = compute_ahdi(frames, params_for(9, patch=3, levels=1))
    np.testing.assert_array_equal(result.bounds, [0, 6])
    np.testing.assert_array_equal(result.windows, [[0, 6]])


# ----------------------------------------------------------------------
# the spec's invariants
# ----------------------------------------------------------------------
INVARIANT_PARAMS = [
    {"patch": 3},
    {"patch": 1, "levels": 1},
    {"patch": 3, "levels": 3, "n_segments": 6, "min_len": 2},
    {"patch": 3, "segmentation": "fixed", "segment_len": 4},
    {"patch": 3, "normalize": "percentile"},
]


@pytest.mark.parametrize("kw", INVARIANT_PARAMS + [{"patch": 3, "level2": "arp"}])
@pytest.mark.parametrize("value, size, n_frames", [(0, 9, 2), (77, 16, 12), (255, 9, 5)])
def test_constant_video_gives_zero(kw, value, size, n_frames):
    frames = np.full((n_frames, size, size, 3), value, np.uint8)
    result = compute_ahdi(frames, params_for(size, **kw), ALL)
    assert np.abs(result.ahdi_float).max() < 1e-9
    assert not result.ahdi.any() and not result.mdv.any() and not result.sdi.any()
    assert np.all(result.mean == value)
    assert np.all(result.motion == 0.0)


def _linear_video(sign, n_frames=12, size=16, seed=0, base=True):
    """I_t = base + t * c (c > 0 per pixel) or, for sign < 0, the same played backwards."""
    rng = np.random.default_rng(seed)
    c = rng.integers(1, 6, (size, size, 3))
    start = rng.integers(0, 120, (size, size, 3)) if base else 0
    t = np.arange(n_frames)[:, None, None, None]
    frames = (start + t * c).astype(np.uint8)
    assert (start + t * c).max() <= 255
    return frames if sign > 0 else frames[::-1].copy()


@pytest.mark.parametrize("kw", INVARIANT_PARAMS)
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("base", [False, True])
def test_linear_brightening_has_the_sign_of_c(kw, sign, base):
    frames = _linear_video(sign, base=base)
    sdi = rank_pool_windows(frames, np.zeros((0, 2), np.int64), with_sdi=True)["sdi"]
    assert np.all(sign * sdi > 0)
    result = compute_ahdi(frames, params_for(16, **kw), ("ahdi",))
    assert np.all(sign * result.ahdi_float > 0)


@pytest.mark.parametrize("kw", INVARIANT_PARAMS + [{"patch": 3, "level2": "arp"}])
def test_adding_a_constant_leaves_sdi_and_ahdi_unchanged(kw):
    frames = carphone(64)[:40].astype(np.int64)
    frames = (20 + frames * 170 // 255).astype(np.uint8)       # room to add 40
    brighter = frames + np.uint8(40)
    params = params_for(64, **kw)
    a = compute_ahdi(frames, params, ("ahdi",))
    b = compute_ahdi(brighter, params, ("ahdi",))
    np.testing.assert_array_equal(a.windows, b.windows)
    assert_rel(b.ahdi_float, a.ahdi_float, "AHDI(I + 40)")
    no_windows = np.zeros((0, 2), np.int64)
    assert_rel(rank_pool_windows(brighter, no_windows, with_sdi=True)["sdi"],
               rank_pool_windows(frames, no_windows, with_sdi=True)["sdi"], "SDI(I + 40)")


# ----------------------------------------------------------------------
# reproducibility
# ----------------------------------------------------------------------
def _at_offset(frames, offset):
    """A copy of ``frames`` starting ``offset`` bytes past an aligned address."""
    raw = np.empty(frames.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    copy = raw[start:start + frames.nbytes].reshape(frames.shape)
    copy[...] = frames
    return copy


def test_repeated_runs_are_bit_identical():
    # Also with the frames (and so every buffer after them) at other memory
    # alignments: OpenCV's SIMD paths must not leak into the result.
    frames = carphone(64)
    params = params_for(64, levels=3)
    first = fingerprint(compute_ahdi(frames, params, ALL))
    for offset in (0, 8, 24, 40, 3):
        assert fingerprint(compute_ahdi(list(_at_offset(frames, offset)), params, ALL)) == first


_HASH_SCRIPT = textwrap.dedent("""
    import sys
    import cv2
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_compute import ALL, fingerprint, params_for
    from ahdi.kernels import compute_ahdi
    if sys.argv[2] != "default":
        cv2.setNumThreads(int(sys.argv[2]))
    frames = np.load(sys.argv[1])
    print(fingerprint(compute_ahdi(frames, params_for(64, levels=3), ALL)))
""")


def test_output_does_not_depend_on_thread_counts(tmp_path):
    frames = carphone(64)
    np.save(tmp_path / "frames.npy", frames)
    expected = fingerprint(compute_ahdi(frames, params_for(64, levels=3), ALL))
    script = _HASH_SCRIPT.format(tests=str(Path(__file__).parent))
    for numba_threads, cv_threads in (("1", "1"), ("2", "default"), ("2", "2")):
        env = dict(os.environ, NUMBA_NUM_THREADS=numba_threads)
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "frames.npy"),
                               cv_threads], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == expected, (numba_threads, cv_threads)


def test_kernels_without_jit():
    # The pure-Python path of every kernel, on the tiny cases of both files.
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_kernels.py", "tests/test_compute.py", "-k", "tiny"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


# ----------------------------------------------------------------------
# clear errors
# ----------------------------------------------------------------------
@pytest.mark.parametrize("n_frames", [0, 1])
def test_fewer_than_two_frames_is_an_error(n_frames):
    frames = [np.zeros((9, 9, 3), np.uint8)] * n_frames
    with pytest.raises(ValueError, match=f"needs at least 2 frames, got {n_frames}"):
        compute_ahdi(frames, params_for(9, patch=3), ALL)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((9, 9, 3), np.float32), r"frame 2 is float32 \(9, 9, 3\); expected uint8"),
    (np.zeros((9, 9, 3), np.int64), r"frame 2 is int64"),
    (np.zeros((9, 9), np.uint8), r"frame 2 is uint8 \(9, 9\); expected uint8 \(9, 9, 3\)"),
    (np.zeros((9, 8, 3), np.uint8), r"\(9, 8, 3\); expected uint8 \(9, 9, 3\) \(size=9\)"),
    (np.zeros((16, 16, 3), np.uint8), r"\(16, 16, 3\); expected uint8 \(9, 9, 3\) \(size=9\)"),
])
def test_bad_frames_are_refused_by_name(bad, message, tmp_path):
    frames = [np.zeros((9, 9, 3), np.uint8), bad, np.zeros((9, 9, 3), np.uint8)]
    with pytest.raises(ValueError, match=message):
        compute_ahdi(frames, params_for(9, patch=3), memory_budget=1, tmp_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_bad_parameters_and_representations_are_refused():
    frames = make_video(0, 6, 9)
    with pytest.raises(ValueError, match="patch must be an odd integer >= 1, got 4"):
        params_for(9, patch=4)
    with pytest.raises(ValueError, match=r"size \(9\) must be >= patch \(11\)"):
        params_for(9, patch=11)
    with pytest.raises(ValueError, match="unknown representation"):
        compute_ahdi(frames, params_for(9, patch=3), ["ahdi", "optical"])
    with pytest.raises(ValueError, match="no representation requested"):
        compute_ahdi(frames, params_for(9, patch=3), [])
    with pytest.raises(ValueError, match="exceed max_windows=3"):
        compute_ahdi(make_video(0, 20, 9), params_for(
            9, patch=3, segmentation="fixed", segment_len=2, max_windows=3))


# ----------------------------------------------------------------------
# the frame buffer: spilling, clean-up, bounded memory
# ----------------------------------------------------------------------
def _watched(frames, tmp_dir, seen, fail_after=None):
    """Yield frames, noting which spill files exist at the end of the stream."""
    for i, frame in enumerate(frames):
        if fail_after is not None and i == fail_after:
            seen.extend(os.listdir(tmp_dir))
            raise RuntimeError("decoder died")
        yield frame
    seen.extend(os.listdir(tmp_dir))


@pytest.fixture
def bounded_buffers(monkeypatch):
    """Check after every append that the in-RAM array stays within budget."""
    original = _FrameBuffer.append
    peaks = []

    def append(self, frame):
        original(self, frame)
        assert self.memory_bytes <= self.memory_budget
        peaks.append(self.memory_bytes)

    monkeypatch.setattr(_FrameBuffer, "append", append)
    return peaks


def test_spilled_frames_give_identical_results(tmp_path, bounded_buffers):
    frames = carphone(64)
    params = params_for(64)
    in_memory = compute_ahdi(frames, params, ALL, tmp_dir=str(tmp_path))
    bounded_buffers.clear()
    frame_bytes = frames[0].nbytes
    for budget in (1, 5 * frame_bytes, 40 * frame_bytes + 7):
        seen = []
        spilled = compute_ahdi(_watched(frames, tmp_path, seen), params, ALL,
                               memory_budget=budget, tmp_dir=str(tmp_path))
        assert len(seen) == 1 and seen[0].startswith("ahdi-frames-")   # it did spill
        assert os.listdir(tmp_path) == []                              # and cleaned up
        assert fingerprint(spilled) == fingerprint(in_memory)
    assert 0 < max(bounded_buffers) <= 40 * frame_bytes + 7


def test_spill_file_is_removed_when_the_stream_fails(tmp_path):
    seen = []
    with pytest.raises(RuntimeError, match="decoder died"):
        compute_ahdi(_watched(carphone(64), tmp_path, seen, fail_after=30),
                     params_for(64), ALL, memory_budget=10 * 64 * 64 * 3,
                     tmp_dir=str(tmp_path))
    assert len(seen) == 1 and seen[0].startswith("ahdi-frames-")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("budget_frames", [0, 1, 3, 16, 17, 1000])
def test_frame_buffer_memory_stays_within_budget(tmp_path, budget_frames):
    shape = (8, 8, 3)
    frames = make_video(5, 50, 8)
    budget = budget_frames * int(np.prod(shape)) + 5
    with FrameBuffer(shape, budget, str(tmp_path)) as buffer:
        for frame in frames:
            buffer.append(frame)
            assert buffer.memory_bytes <= budget
        assert buffer.n_frames == 50
        assert buffer.spilled == (budget_frames < 50)
        assert os.listdir(tmp_path) == ([os.path.basename(buffer.spill_path)]
                                        if buffer.spilled else [])
        np.testing.assert_array_equal(buffer.frames(), frames)
    assert os.listdir(tmp_path) == []


def test_frame_buffer_refuses_a_wrong_frame():
    with FrameBuffer((4, 4, 3), 1000) as buffer:
        with pytest.raises(ValueError, match=r"frame 1 is float64 \(4, 4, 3\), expected uint8"):
            buffer.append(np.zeros((4, 4, 3)))
        with pytest.raises(ValueError, match=r"frame 1 is uint8 \(4, 5, 3\)"):
            buffer.append(np.zeros((4, 5, 3), np.uint8))


@given(st.integers(2, 30), st.data())
@settings(max_examples=40, deadline=None)
def test_pooling_in_chunks_is_bit_identical(n_frames, data):
    from ahdi.kernels import rank_pool_chunks

    frames = np.random.default_rng(n_frames).integers(0, 256, (n_frames, 5, 7, 3), np.uint8)
    windows = np.array([[0, n_frames], [n_frames // 2 - 1 if n_frames > 3 else 0, n_frames]])
    cuts = sorted(data.draw(st.sets(st.integers(1, n_frames - 1), max_size=5)))
    chunks = np.split(frames, cuts)
    whole = rank_pool_windows(frames, windows, with_sdi=True, with_mean=True)
    parts = rank_pool_chunks(iter(chunks), n_frames, frames.shape[1:], windows,
                             with_sdi=True, with_mean=True)
    for key in whole:
        assert whole[key].tobytes() == parts[key].tobytes()


@pytest.mark.parametrize("budget_frames", [0, 3, 1000])
def test_frame_buffer_reads_back_block_by_block(tmp_path, budget_frames):
    shape = (8, 8, 3)
    frames = make_video(5, 50, 8)
    frame_bytes = int(np.prod(shape))
    with FrameBuffer(shape, budget_frames * frame_bytes, str(tmp_path),
                     block_bytes=4 * frame_bytes) as buffer:
        for frame in frames:
            buffer.append(frame)
        chunks = [chunk.copy() for chunk in buffer.chunks()]
    assert all(len(chunk) <= 4 for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), frames)
