"""Reading videos: sources, decoding, crops, archives and every VideoError.

Covers ahdi.pipeline.video, .face, .archives and .files.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline import files
from ahdi.pipeline.errors import VideoError
from ahdi.pipeline.files import natural_key
from ahdi.pipeline.sources import VideoSource, frame_folder_source
from ahdi.pipeline.video import open_video
from tests import fixtures as fx

P = AhdiParams(size=16, crop="center")


def read_all(source, params=P, **kw):
    with open_video(source, params, **kw) as reader:
        frames = list(reader)
    return reader, frames


# ----------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------
def test_natural_key_orders_numbers():
    names = ["frame10.png", "frame2.png", "frame1.png"]
    assert sorted(names, key=natural_key) == ["frame1.png", "frame2.png", "frame10.png"]


def test_source_is_picklable_and_describes_itself():
    src = VideoSource("frames", "a/seq", archive="x.zip", frames=["a/seq/1.png"],
                      landmarks=("a/1_aam.txt",), fps=30)
    assert pickle.loads(pickle.dumps(src)) == src
    assert src.describe() == "x.zip!a/seq"
    assert VideoSource("file", "v.mp4").describe() == "v.mp4"
    with pytest.raises(ValueError, match="kind"):
        VideoSource("stream", "v.mp4")


def test_frame_folder_source_sorts_naturally(folder_tree):
    src = frame_folder_source(folder_tree["root"] / "subjB" / "seq")
    names = [Path(f).name for f in src.frames]
    assert names[:3] == ["frame1.png", "frame2.png", "frame3.png"]
    assert names.index("frame2.png") < names.index("frame10.png")


# ----------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------
def test_video_file_frames_shape_and_colour(tmp_path):
    frames = fx.blob_frames(8, w=32, h=24)
    path = fx.write_video(tmp_path / "v.mp4", frames)
    reader, out = read_all(VideoSource("file", str(path)), AhdiParams(size=24, crop="center"))
    assert len(out) == 8
    assert all(f.shape == (24, 24, 3) and f.dtype == np.uint8 for f in out)
    assert reader.fps == pytest.approx(30.0)
    assert reader.frame_count_hint == 8
    assert reader.crop_box == (4, 0, 24, 24)
    assert reader.warnings == []
    # RGB, not BGR: the blob is red-dominant (R=255, B < 100)
    raw = fx.read_video_raw(path)[3]
    blob = raw[..., 0] > 200
    assert blob.any() and raw[blob][:, 2].mean() < 120
    diff = np.abs(out[3].astype(int) - raw[:, 4:28].astype(int)).mean()
    assert diff < 1e-9  # same size crop, no resize


def test_frame_folder_matches_images(folder_tree):
    src = frame_folder_source(folder_tree["root"] / "subjB" / "seq", fps=25)
    reader, out = read_all(src, AhdiParams(size=24, crop="center"))
    assert len(out) == 12 and reader.fps == 25.0 and reader.frame_count_hint == 12
    for got, want in zip(out, folder_tree["seq_frames"]):
        np.testing.assert_array_equal(got, want[:, 4:28])


def test_resize_interpolation_area_and_linear(tmp_path):
    frames = fx.blob_frames(3, w=40, h=40)
    path = fx.write_frames(tmp_path / "seq", frames)
    src = frame_folder_source(tmp_path / "seq")
    _, small = read_all(src, AhdiParams(size=10, crop="none"))
    np.testing.assert_array_equal(small[1], cv2.resize(frames[1], (10, 10),
                                                       interpolation=cv2.INTER_AREA))
    _, big = read_all(src, AhdiParams(size=64, crop="none", patch=9))
    np.testing.assert_array_equal(big[1], cv2.resize(frames[1], (64, 64),
                                                     interpolation=cv2.INTER_LINEAR))
    assert path


def test_grey_16bit_and_rgba_frames_become_rgb8(tmp_path):
    folder = tmp_path / "mixed_depth"
    folder.mkdir()
    grey = np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1))
    cv2.imwrite(str(folder / "f1.png"), grey)
    cv2.imwrite(str(folder / "f2.png"), grey.astype(np.uint16) * 257)
    bgra = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    cv2.imwrite(str(folder / "f3.png"), bgra)
    _, out = read_all(frame_folder_source(folder), AhdiParams(size=32, crop="none"))
    assert len(out) == 3
    for f in out:
        assert f.dtype == np.uint8 and f.shape == (32, 32, 3)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])


def test_reader_streams_one_frame_at_a_time(blob_video):
    with open_video(VideoSource("file", str(blob_video)), P) as reader:
        it = iter(reader)
        first = next(it)
        assert first.shape == (16, 16, 3)
        assert hasattr(it, "__next__") and not isinstance(it, (list, tuple))
        rest = list(it)
    assert len(rest) == 7


def test_single_frame_is_not_an_error(tmp_path):
    path = fx.write_video(tmp_path / "one.mp4", fx.blob_frames(1))
    _, out = read_all(VideoSource("file", str(path)))
    assert len(out) == 1


# ----------------------------------------------------------------------
# crops
# ----------------------------------------------------------------------
def test_crop_none_keeps_whole_frame(blob_video):
    reader, out = read_all(VideoSource("file", str(blob_video)), AhdiParams(size=16, crop="none"))
    assert reader.crop_box == (0, 0, 32, 24)
    assert out[0].shape == (16, 16, 3)


def test_face_crop_finds_carphone_face(sample_video):
    reader, out = read_all(VideoSource("file", str(sample_video)),
                           AhdiParams(size=64, crop="face"))
    assert reader.warnings == []
    x, y, w, h = reader.crop_box
    assert w == h and 40 <= w <= 144
    assert 0 <= x and x + w <= 176 and 0 <= y and y + h <= 144
    assert reader.crop_box != (16, 0, 144, 144)  # not the centre crop
    assert len(out) == 120 and out[0].shape == (64, 64, 3)


def test_face_crop_falls_back_to_center_on_blank(tmp_path):
    path = fx.make_blank_video(tmp_path / "blank.mp4")
    reader, out = read_all(VideoSource("file", str(path)), AhdiParams(size=16, crop="face"))
    assert reader.crop_box == (8, 0, 48, 48)
    assert reader.warnings == [f"no face found in {path}; used a center crop",
                               f"{path}: its 6 frames never change; its dynamic images are "
                               "blank"]
    assert len(out) == 6


def test_landmarks_crop(unbc_tree):
    subj, seq = "042-ll042", "ll042t1aaaff"
    folder = unbc_tree["root"] / "Images" / subj / seq
    src = frame_folder_source(folder)
    lm = tuple(str(unbc_tree["root"] / "AAM_landmarks" / subj / seq /
                   (Path(f).stem + "_aam.txt")) for f in src.frames)
    src = VideoSource("frames", src.path, frames=src.frames, landmarks=lm, fps=30)
    reader, out = read_all(src, AhdiParams(size=16, crop="landmarks"))
    x, y, w, h = reader.crop_box
    # landmarks span 12.8 x 14.4 px around (16.5, 12): side 14.4 * 1.25 = 18
    assert (w, h) == (18, 18) and abs(x + w / 2 - 16.5) <= 1 and abs(y + h / 2 - 12) <= 1
    assert len(out) == 8


def test_landmarks_crop_without_landmarks_fails(blob_video):
    with pytest.raises(VideoError, match=r"blob\.mp4: crop='landmarks' needs landmark files"):
        open_video(VideoSource("file", str(blob_video)), AhdiParams(size=16, crop="landmarks"))


# ----------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------
def test_missing_file(tmp_path):
    p = tmp_path / "nope.mp4"
    with pytest.raises(VideoError, match=rf"^{p}: file does not exist$"):
        open_video(VideoSource("file", str(p)), P)


def test_permission_denied(tmp_path, monkeypatch, blob_video):
    if os.geteuid() != 0:
        p = tmp_path / "locked.mp4"
        p.write_bytes(blob_video.read_bytes())
        p.chmod(0)
    else:  # root reads anything: simulate the refusal
        p = blob_video

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(files, "open", refuse, raising=False)
    with pytest.raises(VideoError, match=rf"^{p}: permission denied$"):
        open_video(VideoSource("file", str(p)), P)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match=rf"^{p}: empty file \(0 bytes\)$"):
        open_video(VideoSource("file", str(p)), P)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 20,
                                     bytes(np.random.default_rng(0).integers(0, 256, 4096,
                                                                             dtype=np.uint8))])
def test_not_decodable(tmp_path, content):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(VideoError, match=rf"^{p}: not a decodable video|^{p}: no frame could"):
        open_video(VideoSource("file", str(p)), P)


def test_zero_frames_decoded(tmp_path):
    path, n = fx.make_truncated_video(tmp_path / "cut.avi", keep=0.02)
    with pytest.raises(VideoError, match=rf"^{path}: (no frame could be decoded|not a decodable)"):
        open_video(VideoSource("file", str(path)), P)


def test_truncated_video_warns(tmp_path):
    path, n = fx.make_truncated_video(tmp_path / "cut.avi")
    reader, out = read_all(VideoSource("file", str(path)))
    assert 0 < len(out) < n
    assert reader.warnings == [f"{path}: decoded {len(out)} of {n} frames "
                               "(truncated or damaged video)"]


def test_empty_frame_folder(tmp_path):
    (tmp_path / "noframes").mkdir()
    src = frame_folder_source(tmp_path / "noframes")
    with pytest.raises(VideoError, match=rf"^{tmp_path / 'noframes'}: frame folder holds no images"):
        open_video(src, P)


def test_unreadable_frame_is_named(tmp_path):
    fx.write_frames(tmp_path / "seq", fx.blob_frames(4))
    (tmp_path / "seq" / "frame3.png").write_bytes(b"not a png")
    src = frame_folder_source(tmp_path / "seq")
    with pytest.raises(VideoError, match=r"frame3\.png: frame image cannot be decoded$"):
        read_all(src)


def test_mixed_frame_sizes_named(tmp_path):
    fx.write_frames(tmp_path / "seq", fx.blob_frames(3))
    fx.write_frames(tmp_path / "seq", fx.blob_frames(1, w=40, h=30), start=4)
    src = frame_folder_source(tmp_path / "seq")
    with pytest.raises(VideoError) as err:
        read_all(src)
    msg = str(err.value)
    assert msg == (f"{tmp_path / 'seq' / 'frame4.png'}: frame is 40x30, but the first frame "
                   f"{tmp_path / 'seq' / 'frame1.png'} is 32x24 (frames of mixed sizes)")


# ----------------------------------------------------------------------
# archives
# ----------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["zip", "tar.gz", "tar"])
def test_archive_frames_equal_folder(folder_tree, tmp_path, ext):
    arc = fx.make_archive(folder_tree["root"], tmp_path / f"clips.{ext}")
    direct = frame_folder_source(folder_tree["root"] / "subjB" / "seq")
    members = tuple(f"clips/subjB/seq/frame{i}.png" for i in range(1, 13))
    src = VideoSource("frames", "clips/subjB/seq", archive=str(arc), frames=members)
    _, a = read_all(src)
    _, b = read_all(direct)
    assert len(a) == 12
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("ext", ["zip", "tar.gz"])
def test_archive_video_member_temp_copy_removed(folder_tree, tmp_path, ext):
    arc = fx.make_archive(folder_tree["root"], tmp_path / f"clips.{ext}")
    tmp = tmp_path / "scratch"
    tmp.mkdir()
    src = VideoSource("file", "clips/subjA/clip1.mp4", archive=str(arc))
    with open_video(src, P, tmp_dir=tmp) as reader:
        assert len(os.listdir(tmp)) == 1
        a = list(reader)
    assert os.listdir(tmp) == []
    _, b = read_all(VideoSource("file", str(folder_tree["root"] / "subjA" / "clip1.mp4")))
    assert len(a) == 8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_archive_temp_copy_removed_on_error(tmp_path):
    bad = tmp_path / "src"
    bad.mkdir()
    (bad / "bad.mp4").write_bytes(b"text, not video" * 10)
    arc = fx.make_archive(bad, tmp_path / "bad.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(VideoError, match=rf"^{tmp_path / 'bad.zip'}!src/bad\.mp4: not a decodable"):
        open_video(VideoSource("file", "src/bad.mp4", archive=str(arc)), P, tmp_dir=scratch)
    assert os.listdir(scratch) == []
    # an error in the middle of iteration also removes it
    arc2 = fx.make_archive(Path(fx.make_truncated_video(tmp_path / "t" / "cut.avi")[0]).parent,
                           tmp_path / "t.zip")
    with open_video(VideoSource("file", "t/cut.avi", archive=str(arc2)), P,
                    tmp_dir=scratch) as reader:
        next(iter(reader))
    assert os.listdir(scratch) == []


def test_archive_missing_member(tmp_path, folder_tree):
    arc = fx.make_archive(folder_tree["root"], tmp_path / "clips.zip")
    with pytest.raises(VideoError, match=r"clips\.zip!clips/nope\.mp4: no such member"):
        open_video(VideoSource("file", "clips/nope.mp4", archive=str(arc)), P)


# ----------------------------------------------------------------------
def test_face_search_replays_a_short_clip_instead_of_decoding_it_twice(sample_video,
                                                                       monkeypatch):
    params = AhdiParams(size=64, crop="face")
    src = VideoSource("file", str(sample_video))
    with open_video(src, params) as reader:
        plain = list(reader)
        plain_box = reader.crop_box
    reads = []
    real = cv2.VideoCapture

    class Counting:
        def __init__(self, *args):
            self.cap = real(*args)

        def read(self):
            reads.append(1)
            return self.cap.read()

        def grab(self):
            reads.append(1)
            return self.cap.grab()

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Counting)
    with open_video(src, params, replay_budget=64 * 2**20) as reader:
        assert reader.replay_bytes > 0 and reader.crop_box == plain_box
        replayed = list(reader)
        assert reader.replay_bytes == 0
    assert len(replayed) == len(plain) == 120
    assert all(np.array_equal(a, b) for a, b in zip(plain, replayed))
    # Every frame decoded once: 120 frames and two reads that find the end.
    assert len(reads) == 122
    # A budget smaller than the clip keeps nothing and decodes as before.
    reads.clear()
    with open_video(src, params, replay_budget=1000) as reader:
        assert reader.replay_bytes == 0
        assert len(list(reader)) == 120
    assert len(reads) > 122 + 60  # the face search decoded much of the clip a second time
