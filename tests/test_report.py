"""The pictures of a store and of a run folder.

ahdi.pipeline.summary (the text and JSON of ``ahdi inspect``),
ahdi.pipeline.figures (montage, PNG files), ahdi.pipeline.video_figure (the
per-video figure), ahdi.pipeline.html_report and ahdi.train.plots.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import types
import warnings

import cv2
import numpy as np
import pytest

from ahdi.kernels import AhdiParams, compute_ahdi
from ahdi.pipeline import figures, video_figure
from ahdi.pipeline.html_report import html_report
from ahdi.pipeline.errors import StoreError
from ahdi.pipeline.layout import create_store
from ahdi.pipeline.store import open_store
from ahdi.pipeline.summary import format_summary, summary
from ahdi.train import plots
from tests.fixtures import blob_frames

S = 32
PARAMS = AhdiParams(size=S, patch=3, n_segments=4, min_len=2)
REPS = ("ahdi", "mdv", "sdi", "mean", "flow")
FAIL_MESSAGE = "cannot decode frame 7 of sub/v02.mp4 <broken & odd>"


class FakeSource:
    def __init__(self, where: str) -> None:
        self.where = where

    def describe(self) -> str:
        return f"file:{self.where}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Five items: 0, 1, 3 done; 2 failed; 4 pending. Ids hold a '/'."""
    items = []
    for i in range(5):
        labels = {"pain": float(i), "sex": "f" if i % 2 else "m"}
        if i == 3:
            labels = {"sex": "m"}                      # missing numeric label
        items.append(types.SimpleNamespace(video_id=f"sub/v{i:02d}", subject=f"s{i // 2}",
                                           labels=labels, source=FakeSource(f"/v/{i}.mp4")))
    path = tmp_path_factory.mktemp("pictures") / "store.zarr"
    # one item per stored object (G = 1): the damage below touches one item
    st = create_store(path, items, PARAMS, REPS, dataset="tiny", source="synthetic",
                      items_per_shard=1)
    for i in (0, 1, 3):
        frames = blob_frames(24, S, S, seed=i)
        result = compute_ahdi(frames, PARAMS, REPS)
        st.write_item(i, result, fps=25.0, warnings=["no face found; used a center crop"]
                      if i == 1 else ())
    st.write_failure(2, FAIL_MESSAGE)
    return open_store(path)


def test_summary_counts_failures_labels(store):
    s = summary(store)
    json.dumps(s)                                        # serialisable as is
    assert s["counts"] == {"done": 3, "failed": 1, "pending": 1}
    assert s["n_items"] == 5 and s["dataset"] == "tiny" and s["source"] == "synthetic"
    assert s["param_hash"] == PARAMS.param_hash()
    assert s["params"]["size"] == S
    assert s["representations"] == list(REPS)
    assert s["failures"] == [{"index": 2, "video_id": "sub/v02", "error": FAIL_MESSAGE}]
    assert s["warnings"] == [{"index": 1, "video_id": "sub/v01",
                              "warning": "no face found; used a center crop"}]
    pain, sex = s["labels"]["pain"], s["labels"]["sex"]
    assert pain["kind"] == "number" and pain["n_missing"] == 1
    assert (pain["min"], pain["max"], pain["mean"]) == (0.0, 4.0, 7.0 / 4)
    assert sex == {"kind": "text", "n_missing": 0, "n_distinct": 2,
                   "values": {"m": 4, "f": 1}}


def test_format_summary(store):
    text = format_summary(summary(store))
    assert "5: 3 done, 1 failed, 1 pending" in text
    assert f"[2] sub/v02: {FAIL_MESSAGE}" in text
    assert re.search(r"^\s+patch\s+3$", text, re.M)
    assert re.search(r"^\s+pain\s+number\s+min 0\s+max 4", text, re.M)
    assert "m: 4, f: 1" in text
    assert text.index("failures") < text.index("parameters") < text.index("labels")


def test_montage_skips_failed_and_pending(store):
    img = figures.montage(store, columns=3, tile=40)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # 3 done items in 3 columns: one row, each cell at least 110 px wide
    assert img.shape[1] >= 3 * 110
    one = figures.montage(store, indices=[0, 2, 4], tile=40)   # only item 0 is done
    assert one.shape[1] < img.shape[1]
    assert one.shape[0] < 40 + 100


def test_montage_errors(store):
    with pytest.raises(StoreError, match="holds no 'nope'"):
        figures.montage(store, rep="nope")
    with pytest.raises(StoreError, match="no done item"):
        figures.montage(store, indices=[2, 4])


def test_video_plot(store):
    img = video_figure.video_plot(store, "sub/v01")
    assert img.dtype == np.uint8 and img.shape[2] == 3
    assert img.shape[1] >= 600 and img.shape[0] > 400
    assert np.array_equal(img, video_figure.video_plot(store, 1))
    failed = video_figure.video_plot(store, 2)                     # a short panel, no error
    assert failed.dtype == np.uint8 and failed.shape[0] < img.shape[0]


def test_video_plot_unknown_id(store):
    with pytest.raises(StoreError, match=r"no video 'nope'.*known ids: sub/v00, sub/v01"):
        video_figure.video_plot(store, "nope")
    with pytest.raises(StoreError, match="out of range"):
        video_figure.video_plot(store, 99)


def test_export_pngs(store, tmp_path):
    paths = figures.export_pngs(store, tmp_path / "png")
    n_mdv = sum(len(store.mdv(i)) for i in (0, 1, 3))
    assert len(paths) == 3 * 4 + n_mdv
    assert str(tmp_path / "png" / "ahdi" / "0_sub_v00.png") in paths
    assert str(tmp_path / "png" / "mdv" / "3_sub_v03_0.png") in paths
    assert not any("v02" in p or "v04" in p for p in paths)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "flow" / "1_sub_v01.png")),
                        cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, store.image("flow", 1))
    for p in paths:
        assert cv2.imread(p) is not None


def test_save_png_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file"):
        figures.save_png(tmp_path / "file" / "a.png", np.zeros((4, 4, 3), np.uint8))


def test_html_report(store, tmp_path):
    path = html_report(store, tmp_path / "out" / "report.html")
    page = open(path, encoding="utf-8").read()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for vid in ("sub/v00", "sub/v01", "sub/v03"):
        assert vid in page
    assert "cannot decode frame 7 of sub/v02.mp4 &lt;broken &amp; odd&gt;" in page
    assert "<broken" not in page
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)   # no external assets
    # 1 montage + 5 item plots
    assert page.count("data:image/png;base64,") == 6


def test_export_names_are_distinct_and_stable(tmp_path):
    ids = ["x/y", "x__y", "x\\y", "../up", "é"]
    items = [types.SimpleNamespace(video_id=v, subject="s", labels={}, source=FakeSource(v))
             for v in ids]
    st = create_store(tmp_path / "ids.zarr", items, PARAMS, ["ahdi"], dataset="d", source="s")
    for i in range(len(ids)):
        st.write_item(i, compute_ahdi(blob_frames(12, S, S, seed=i), PARAMS, ["ahdi"]), fps=25)
    paths = figures.export_pngs(st, tmp_path / "png")
    names = [os.path.basename(p) for p in paths]
    assert names == ["0_x_y.png", "1_x__y.png", "2_x_y.png", "3__up.png", "4__.png"]
    assert len(set(paths)) == len(ids) == len(os.listdir(tmp_path / "png" / "ahdi"))
    assert figures.export_pngs(st, tmp_path / "again") == [
        p.replace(str(tmp_path / "png"), str(tmp_path / "again")) for p in paths]
    assert figures.export_name(7, "a/b", 1000) == "007_a_b"


@pytest.fixture
def damaged_copy(store, tmp_path):
    """A copy of the store whose item 1 has a damaged ahdi chunk and item 3 a
    zero-byte status chunk."""
    path = tmp_path / "damaged.zarr"
    shutil.copytree(store.path, path)
    chunk = path / "ahdi" / "c" / "1" / "0" / "0" / "0"    # a shard of one chunk
    data = chunk.read_bytes()
    offset, nbytes = np.frombuffer(data[-20:-4], "<u8")     # its index: one entry
    chunk.write_bytes(data[:offset] + data[offset:offset + nbytes][::-1]
                      + data[offset + nbytes:])
    (path / "status" / "c" / "3").write_bytes(b"")
    return open_store(path)


def test_damaged_items_are_named_and_skipped_in_pictures(damaged_copy, tmp_path, caplog):
    st = damaged_copy
    s = summary(st)
    assert s["counts"] == {"done": 2, "failed": 1, "pending": 1}
    assert s["damaged"] == [{"index": 3, "video_id": "sub/v03", "array": "status"}]
    assert (f"damaged (1): run ahdi verify {st.path} --repair, then the same ahdi convert "
            f"command\n  [3] sub/v03: array status: damaged chunk") in format_summary(s)
    with caplog.at_level(logging.WARNING, logger="ahdi.pipeline.figures"):
        img = figures.montage(st, tile=40)
        paths = figures.export_pngs(st, tmp_path / "png", ["ahdi"])
        page = open(html_report(st, tmp_path / "r.html"), encoding="utf-8").read()
    assert np.array_equal(img, figures.montage(st, indices=[0], tile=40))   # item 0 alone
    assert [os.path.basename(p) for p in paths] == ["0_sub_v00.png"]
    assert (f"skipped: store {st.path}: item sub/v01: array ahdi: damaged chunk (Zstd "
            f"decompression error: ") in caplog.text
    assert f"skipped: store {st.path}: item sub/v03: array status: damaged chunk" in caplog.text
    assert page.count("a chunk of this item cannot be read back") == 2
    with pytest.raises(StoreError, match="item sub/v01: array ahdi: damaged chunk"):
        video_figure.video_plot(st, 1)
    assert video_figure.video_plot(st, 0).shape[1] == 760    # another item's damage is not its


# ----------------------------------------------------------------------------
# the per-video figure: ticks, bounds, any script
# ----------------------------------------------------------------------------
NON_ASCII_ID = "patient_Ä/ç"


@pytest.fixture(scope="module")
def short_store(tmp_path_factory):
    """One done 16-frame item with a non-ASCII id, a non-ASCII label and a '$' label."""
    item = types.SimpleNamespace(video_id=NON_ASCII_ID, subject="s0",
                                 labels={"site": "Zürich", "note": r"$\nosuch$"},
                                 source=FakeSource("/v/ä.mp4"))
    path = tmp_path_factory.mktemp("short") / "store.zarr"
    st = create_store(path, [item], PARAMS, REPS, dataset="short", source="synthetic")
    st.write_item(0, compute_ahdi(blob_frames(16, S, S, seed=7), PARAMS, REPS), fps=25.0)
    return open_store(path)


def _motion_axes(fig):
    return next(ax for ax in fig.axes if any(line.get_gid() == "motion" for line in ax.lines))


def _png_back(path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable PNG"
    assert img.std() > 0                                # something was drawn
    return img


def test_video_plot_short_clip_ticks_are_frames(short_store):
    assert short_store.n_frames(0) == 16
    fig = video_figure._video_figure(short_store, 0)
    figures.render_figure(fig)                          # tick labels exist once drawn
    ax = _motion_axes(fig)
    lo, hi = ax.get_xlim()
    shown = [(t.get_position()[0], t.get_text()) for t in ax.get_xticklabels()
             if lo - 1e-9 <= t.get_position()[0] <= hi + 1e-9]
    assert len(shown) >= 3
    for position, text in shown:
        # The OpenCV chart put ticks at 2.5, 7.5, ... and labelled them '2', '8'.
        assert float(position).is_integer(), shown
        assert text == str(int(position)), shown
    bounds = [line.get_xdata()[0] for line in ax.lines if line.get_gid() == "bound"]
    stored = short_store.segments(0)
    assert stored.size >= 3 and bounds == [float(b) for b in stored]
    assert lo <= min(bounds) and max(bounds) <= hi     # every bound is inside the axes


def test_video_plot_keeps_non_ascii_ids(short_store, tmp_path):
    fig = video_figure._video_figure(short_store, NON_ASCII_ID)
    assert NON_ASCII_ID in fig.get_suptitle()
    # Labels show as written: '$...$' is not read as TeX (which would fail to draw).
    assert any(r"site=Zürich  note=$\nosuch$" in t.get_text() for t in fig.texts)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb = figures.render_figure(fig)
    missing = [str(w.message) for w in caught if "missing from" in str(w.message)]
    assert not missing, missing                         # every glyph is in the font
    path = figures.save_png(tmp_path / "ä" / "plot.png", rgb)
    img = _png_back(path)
    assert img.shape[1] == 760 and 400 < img.shape[0] < 1200


def test_video_plot_png_round_trip(store, tmp_path):
    img = _png_back(figures.save_png(tmp_path / "plot.png", video_figure.video_plot(store, 0)))
    assert img.shape[1] == 760 and 400 < img.shape[0] < 1200
    failed = video_figure._video_figure(store, 2)
    assert "failed" in failed.get_suptitle()
    assert any("cannot decode frame 7" in t.get_text() for t in failed.texts)


def test_drawing_never_imports_matplotlib_at_import(folder_tree, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ahdi.pipeline import figures, html_report, summary, video_figure\n"
        "from ahdi.train import plots\n"
        "assert 'matplotlib' not in sys.modules, 'importing the picture modules loaded it'\n"
        "from ahdi.pipeline.cli import main\n"
        f"r = CliRunner().invoke(main, ['convert', {str(folder_tree['root'])!r}, '-o', "
        f"{str(tmp_path / 's.zarr')!r}, '--size', '16', '--patch', '3', '--crop', 'center', "
        "'-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'matplotlib' not in sys.modules, 'converting imported matplotlib'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------
# the trainer's plots
# ----------------------------------------------------------------------------
def test_learning_curves(tmp_path):
    series = {"train": [1.0, 0.7, 0.5], "validation": [1.1, float("nan"), 0.8]}
    fig = plots._learning_figure(series, "loss per epoch", "loss")
    figures.render_figure(fig)
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    epochs = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert epochs == [1.0, 2.0, 3.0]                    # whole epochs only
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
    path = plots.learning_curves(series, tmp_path / "lc.png")
    assert _png_back(path).shape == (480, 640, 3)


def test_scatter(tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(size=20)
    path = plots.scatter(t, t + rng.normal(scale=0.1, size=20), tmp_path / "scatter.png")
    assert _png_back(path).shape == (480, 640, 3)


def test_confusion_is_labelled(tmp_path):
    y_true = np.array([0, 0, 0, 1, 1, 1, 1], bool)
    y_pred = np.array([0, 1, 0, 1, 1, 0, 1], bool)
    fig = plots._confusion_figure(y_true, y_pred, "confusion", ("no pain", "pain"))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pred no pain", "pred pain"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["true no pain", "true pain"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    counts = [t.get_text() for t in ax.texts]
    assert counts == ["2", "1", "1", "3"]               # rows true 0/1, columns predicted 0/1
    path = plots.confusion(y_true, y_pred, tmp_path / "confusion.png")
    assert _png_back(path).shape == (480, 640, 3)


def test_errorbar_plot(tmp_path):
    series = {"representation=ahdi": [("3", 0.5, 0.1), ("5", 0.6, float("nan")),
                                      ("9", float("nan"), 0.1)],
              "representation=sdi": [("3", 0.4, 0.05), ("9", 0.45, 0.02)],
              r"name=$\nosuch$": [("3", 0.3, 0.01)]}        # shown as written, not TeX
    fig = plots._errorbar_figure(series, xlabel="patch", ylabel="mae", title="mae vs patch")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "5", "9"]
    assert ax.get_xlabel() == "patch" and ax.get_title() == "mae vs patch"
    path = plots.errorbar_plot(series, tmp_path / "axis_patch.png", xlabel="patch",
                               ylabel="mae", title="mae vs patch")
    assert _png_back(path).shape == (480, 640, 3)


def test_plot_write_failure_names_the_file(tmp_path):
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "lc.png"
    with pytest.raises(OSError, match=re.escape(str(target))):
        plots.learning_curves({"train": [1.0, 0.5]}, target)


# ----------------------------------------------------------------------------
# the face track in pictures (--crop track / align)
# ----------------------------------------------------------------------------
def _track(t: int, faceless: slice | None = None):
    from ahdi.pipeline import face_presence as presence
    from ahdi.pipeline.face_settings import FaceTrack

    frames = np.arange(t, dtype=np.float64)
    boxes = np.stack([100 + frames, 50 + 0.5 * frames, np.full(t, 80.0), np.full(t, 80.0)], 1)
    found = np.ones(t, bool)
    status = np.full(t, presence.REGISTERED, np.int8)
    if faceless is not None:
        found[faceless], status[faceless] = False, presence.HELD
    return FaceTrack(boxes, np.tile(np.eye(2, 3), (t, 1, 1)), found, status, 0)


@pytest.fixture(scope="module")
def face_store(tmp_path_factory):
    """Three done items of 24 frames: a clean track; a track without a face on
    frames 9-16 (its warnings as the follower words them); no track, no face."""
    from ahdi.pipeline.face_presence import no_face_warning, presence_warnings

    items = [types.SimpleNamespace(video_id=f"f{i}", subject="s", labels={},
                                   source=FakeSource(f"/v/f{i}.mp4")) for i in range(3)]
    path = tmp_path_factory.mktemp("faces") / "store.zarr"
    st = create_store(path, items, PARAMS, ("ahdi",), dataset="faces", source="synthetic")
    gone = _track(24, slice(8, 16))
    for i, (track, warnings) in enumerate([
            (_track(24), []), (gone, presence_warnings(gone, "f1.mp4", 0.9, 3)),
            (None, [no_face_warning("f2.mp4")])]):
        st.write_item(i, compute_ahdi(blob_frames(24, S, S, seed=i), PARAMS, ("ahdi",)),
                      fps=25.0, warnings=warnings, face=track)
    return open_store(path)


def _face_axes(fig):
    return [ax for ax in fig.axes if any(line.get_gid() == "face_x" for line in ax.lines)]


def test_video_plot_draws_the_face_track_under_the_motion_curve(face_store):
    fig = video_figure._video_figure(face_store, "f1")
    (ax,) = _face_axes(fig)
    lines = {line.get_gid(): line for line in ax.lines}
    np.testing.assert_allclose(lines["face_x"].get_ydata(), 140 + np.arange(24))   # x + side / 2
    np.testing.assert_allclose(lines["face_y"].get_ydata(), 90 + 0.5 * np.arange(24))
    np.testing.assert_allclose(lines["face_size"].get_ydata(), 80)
    shaded = [p for p in ax.patches if p.get_gid() == "faceless"]
    assert len(shaded) == 1
    x0, x1 = sorted(shaded[0].get_x() + d for d in (0, shaded[0].get_width()))
    assert (x0, x1) == (7.5, 15.5)                          # frames 8-15 (0-based)
    assert ax.get_title(loc="left") == "face on 67% of frames"
    motion = _motion_axes(fig)
    assert motion.get_position().y0 > ax.get_position().y0  # under the motion curve
    assert _face_axes(video_figure._video_figure(face_store, "f2")) == []   # no track


def test_montage_marks_the_items_with_face_warnings(face_store, store):
    assert figures.face_warned(face_store, [0, 1, 2]) == {1, 2}
    img = figures.montage(face_store, columns=3, tile=40)
    mark = np.all(img == figures._FACE_MARK, axis=-1)
    # the legend's square in the head (its first 31 + 20 rows), two bordered tiles
    # (3 px on each side of a 40 px image) in the grid below
    assert np.flatnonzero(mark[:51].any(axis=1)).size
    columns = np.flatnonzero(mark[51:].any(axis=0))
    assert mark[51:].sum() == 2 * (46 * 46 - 40 * 40)
    assert columns.min() > 110 + 6                         # the first item has no border
    plain = figures.montage(face_store, indices=[0], tile=40)
    assert not np.all(plain == figures._FACE_MARK, axis=-1).any()
    assert plain.shape[0] < img.shape[0]                   # no legend line either


def test_every_face_warning_is_recognised():
    from ahdi.pipeline import face_presence as presence

    late = _track(30, slice(0, 5))
    late.reference = 5
    cut = _track(30, slice(10, 20))
    cut.status[25] = presence.DETECTED
    gone = _track(30, slice(20, 30))
    lines = (presence.presence_warnings(late, "a.mp4", 0.9, 3)
             + presence.presence_warnings(cut, "a.mp4", 0.9, 3)
             + presence.presence_warnings(gone, "a.mp4", 0.9, 3)
             + [presence.no_face_warning("a.mp4")])
    assert len(lines) == 8          # share, not yet; share, cut, detected; share, gone; none
    assert all(presence.is_face_warning(line) for line in lines), lines
    assert presence.has_face_warning("a.mp4: its 8 frames never change\n" + lines[0])
    assert not presence.has_face_warning("a.mp4: its 8 frames never change; its dynamic "
                                         "images are blank")
    assert not presence.has_face_warning("")


def test_inspect_json_gives_each_tracked_item_s_face_share(face_store):
    s = summary(face_store)
    assert s["faces"] == [{"index": 0, "video_id": "f0", "face_found_share": 1.0},
                          {"index": 1, "video_id": "f1",
                           "face_found_share": pytest.approx(16 / 24)}]
    assert ("faces       found on 83% of the frames of 2 tracked items on average; "
            "fewest: 67% ([1] f1)") in format_summary(s)
