"""ahdi.pipeline.report: summary, montage, video plot, PNG export, HTML page."""

from __future__ import annotations

import json
import re
import types

import cv2
import numpy as np
import pytest

from ahdi.kernels import AhdiParams, compute_ahdi
from ahdi.pipeline import report
from ahdi.pipeline.store import create_store, open_store
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
    path = tmp_path_factory.mktemp("report") / "store.zarr"
    st = create_store(path, items, PARAMS, REPS, dataset="tiny", source="synthetic")
    for i in (0, 1, 3):
        frames = blob_frames(24, S, S, seed=i)
        result = compute_ahdi(frames, PARAMS, REPS)
        st.write_item(i, result, fps=25.0, warnings=["no face found; used a center crop"]
                      if i == 1 else ())
    st.write_failure(2, FAIL_MESSAGE)
    return open_store(path)


def test_summary_counts_failures_labels(store):
    s = report.summary(store)
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
    text = report.format_summary(report.summary(store))
    assert "5: 3 done, 1 failed, 1 pending" in text
    assert f"[2] sub/v02: {FAIL_MESSAGE}" in text
    assert re.search(r"^\s+patch\s+3$", text, re.M)
    assert re.search(r"^\s+pain\s+number\s+min 0\s+max 4", text, re.M)
    assert "m: 4, f: 1" in text
    assert text.index("failures") < text.index("parameters") < text.index("labels")


def test_montage_skips_failed_and_pending(store):
    img = report.montage(store, columns=3, tile=40)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # 3 done items in 3 columns: one row, each cell at least 110 px wide
    assert img.shape[1] >= 3 * 110
    one = report.montage(store, indices=[0, 2, 4], tile=40)   # only item 0 is done
    assert one.shape[1] < img.shape[1]
    assert one.shape[0] < 40 + 100


def test_montage_errors(store):
    with pytest.raises(ValueError, match="holds no 'nope'"):
        report.montage(store, rep="nope")
    with pytest.raises(ValueError, match="no done item"):
        report.montage(store, indices=[2, 4])


def test_video_plot(store):
    img = report.video_plot(store, "sub/v01")
    assert img.dtype == np.uint8 and img.shape[2] == 3
    assert img.shape[1] >= 600 and img.shape[0] > 400
    assert np.array_equal(img, report.video_plot(store, 1))
    failed = report.video_plot(store, 2)                     # a short panel, no error
    assert failed.dtype == np.uint8 and failed.shape[0] < img.shape[0]


def test_video_plot_unknown_id(store):
    with pytest.raises(ValueError, match=r"no video 'nope'.*known ids: sub/v00, sub/v01"):
        report.video_plot(store, "nope")
    with pytest.raises(ValueError, match="out of range"):
        report.video_plot(store, 99)


def test_export_pngs(store, tmp_path):
    paths = report.export_pngs(store, tmp_path / "png")
    n_mdv = sum(len(store.mdv(i)) for i in (0, 1, 3))
    assert len(paths) == 3 * 4 + n_mdv
    assert str(tmp_path / "png" / "ahdi" / "sub__v00.png") in paths
    assert str(tmp_path / "png" / "mdv" / "sub__v03_0.png") in paths
    assert not any("v02" in p or "v04" in p for p in paths)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "png" / "flow" / "sub__v01.png")),
                        cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, store.image("flow", 1))
    for p in paths:
        assert cv2.imread(p) is not None


def test_save_png_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file"):
        report.save_png(tmp_path / "file" / "a.png", np.zeros((4, 4, 3), np.uint8))


def test_html_report(store, tmp_path):
    path = report.html_report(store, tmp_path / "out" / "report.html")
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
