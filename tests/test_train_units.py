"""Unit tests of train/: metrics, splits, models, data selection, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ahdi.train import metrics as M
from ahdi.train.splits import Fold, SubjectLeakError, assert_no_leak, make_folds

torch = pytest.importorskip("torch")


# ----------------------------------------------------------------------------
# a small real store with synthetic images
class _Source:
    def __init__(self, text):
        self.text = text

    def describe(self):
        return self.text


def make_store(path, n=16, size=16, n_subjects=4, fail=(), pending=(), mdv=False, seed=0):
    """Label ``y`` = 1 when the left half is bright; ``kind`` the same as text."""
    from ahdi.kernels import AhdiParams
    from ahdi.pipeline.layout import create_store
    rng = np.random.default_rng(seed)
    items = [SimpleNamespace(video_id=f"v{i:02d}", subject=f"s{i % n_subjects}",
                             labels={"y": float((i // n_subjects) % 2),
                                     "kind": "pain" if (i // n_subjects) % 2 else "none",
                                     "score": float(i % 5)},
                             source=_Source(f"synthetic {i}")) for i in range(n)]
    params = AhdiParams(size=size, crop="center", patch=3, n_segments=4)
    reps = ["ahdi", "mdv"] if mdv else ["ahdi"]
    store = create_store(str(path), items, params, reps, dataset="synthetic",
                         source="test", overwrite=True)
    for i, it in enumerate(items):
        if i in fail:
            store.write_failure(i, "could not decode")
            continue
        if i in pending:
            continue
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        if it.labels["y"]:
            img[:, : size // 2] += 150
        m = 1 + i % params.mdv_capacity
        store.write_item(i, SimpleNamespace(
            ahdi=img, mdv=np.repeat(img[None], m, 0) if mdv else None, sdi=None, mean=None,
            flow=None, motion=np.zeros(8), eps=0.1, bounds=None,
            windows=np.tile([[0, 8]], (m, 1)), n_frames=8), fps=25.0)
    return store


# ----------------------------------------------------------------------------
# metrics
def test_regression_metrics_match_sklearn_scipy():
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error
    rng = np.random.default_rng(1)
    t = rng.normal(size=50)
    p = t + rng.normal(scale=0.5, size=50)
    assert M.mae(t, p) == pytest.approx(mean_absolute_error(t, p), rel=1e-12)
    assert M.mse(t, p) == pytest.approx(mean_squared_error(t, p), rel=1e-12)
    assert M.pcc(t, p) == pytest.approx(pearsonr(t, p)[0], rel=1e-10)
    assert np.isnan(M.pcc(t, np.ones_like(t)))


def test_icc31_hand_computed():
    # x = [[1,2],[2,2],[3,4],[4,5]]: MS_rows = 11.375/3, MS_err = 0.375/3,
    # ICC(3,1) = (MS_r - MS_e) / (MS_r + MS_e) = (11/3) / (47/12) = 44/47
    assert M.icc31([1, 2, 3, 4], [2, 2, 4, 5]) == pytest.approx(44 / 47, rel=1e-12)
    assert M.icc31([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # consistency: a constant offset does not lower ICC(3,1)
    assert M.icc31([1, 2, 3, 5], [11, 12, 13, 15]) == pytest.approx(1.0)


def test_binary_metrics_match_sklearn():
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, f1_score,
                                 roc_auc_score)
    rng = np.random.default_rng(2)
    t = rng.integers(0, 2, 80)
    score = np.round(t * 0.3 + rng.random(80), 1)      # rounded: many ties
    label = score >= 0.5
    assert M.roc_auc(t, score) == pytest.approx(roc_auc_score(t, score), rel=1e-12)
    assert M.accuracy(t, label) == pytest.approx(accuracy_score(t, label))
    assert M.balanced_accuracy(t, label) == pytest.approx(balanced_accuracy_score(t, label))
    assert M.f1(t, label) == pytest.approx(f1_score(t, label))
    assert np.isnan(M.roc_auc([1, 1], [0.2, 0.3]))


def test_average_ranks_and_aggregate():
    assert M.average_ranks([3, 1, 3, 2]).tolist() == [3.5, 1.0, 3.5, 2.0]
    agg = M.aggregate([{"mae": 1.0, "auc": float("nan")}, {"mae": 3.0, "auc": 0.5}])
    assert agg["mae"] == {"mean": 2.0, "std": 1.0, "n": 2, "n_undefined": 0, "n_diverged": 0}
    assert agg["auc"] == {"mean": 0.5, "std": 0.0, "n": 1, "n_undefined": 1, "n_diverged": 0}
    # A diverged fold is not "undefined": it is counted apart and never averaged.
    agg = M.aggregate([{"mae": 1.0}, {"mae": float("nan")}, {"mae": 3.0}], [False, True, False])
    assert agg["mae"] == {"mean": 2.0, "std": 1.0, "n": 2, "n_undefined": 0, "n_diverged": 1}


def test_non_finite_predictions_are_never_a_score():
    t = np.array([0, 1] * 20, float)
    for task, y in (("binary", t), ("regression", t * 3)):
        metrics = M.compute_metrics(task, y, np.full(40, np.nan))
        assert metrics and all(np.isnan(v) for v in metrics.values()), task
        one_bad = np.where(np.arange(40) == 7, np.inf, 0.5)
        assert all(np.isnan(v) for v in M.compute_metrics(task, y, one_bad).values())


def test_roc_and_pr_points_match_sklearn():
    from sklearn.metrics import auc, precision_recall_curve, roc_curve
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, 60)
    score = np.round(t * 0.3 + rng.random(60), 1)          # ties
    fpr, tpr = M.roc_points(t, score)
    ref_fpr, ref_tpr, _ = roc_curve(t, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr)
    np.testing.assert_allclose(tpr, ref_tpr)
    assert auc(fpr, tpr) == pytest.approx(M.roc_auc(t, score), rel=1e-12)
    recall, precision = M.pr_points(t, score)
    ref_p, ref_r, _ = precision_recall_curve(t, score, drop_intermediate=False)
    np.testing.assert_allclose(recall, ref_r[:-1][::-1])
    np.testing.assert_allclose(precision, ref_p[:-1][::-1])


# ----------------------------------------------------------------------------
# splits
subject_lists = st.lists(st.sampled_from([f"p{i}" for i in range(12)]), min_size=2, max_size=60)


@settings(max_examples=60, deadline=None)
@given(subjects=subject_lists, k=st.integers(2, 6), seed=st.integers(0, 1000))
def test_splits_never_leak_subjects(subjects, k, seed):
    subjects = np.array(subjects)
    n_subj = len(set(subjects.tolist()))
    for protocol in ("loso", f"kfold:{k}"):
        if n_subj < (2 if protocol == "loso" else k):
            with pytest.raises(ValueError):
                make_folds(protocol, subjects, seed=seed)
            continue
        folds = make_folds(protocol, subjects, seed=seed)
        tested = np.concatenate([f.test for f in folds])
        assert sorted(tested.tolist()) == list(range(subjects.size))   # each item once
        for f in folds:
            assert not set(subjects[f.train]) & set(subjects[f.test])
            assert f.train.size + f.test.size == subjects.size


def test_validation_subjects_come_from_the_training_side():
    from ahdi.pipeline.errors import SettingError
    from ahdi.train.splits import with_validation
    subjects = np.repeat([f"p{i}" for i in range(6)], 3)
    for i, fold in enumerate(make_folds("loso", subjects)):
        for ask, n_val in ((2, 2), (0.4, 2), (0.01, 1)):
            f = with_validation(fold, subjects, ask, seed=0, index=i)
            val, train, test = (set(subjects[p]) for p in (f.val, f.train, f.test))
            assert len(val) == n_val and not val & (train | test) and test == {f"p{i}"}
            assert sorted(np.r_[f.train, f.val, f.test].tolist()) == list(range(18))
            g = with_validation(fold, subjects, ask, seed=0, index=i)
            assert g.val.tolist() == f.val.tolist()            # same run, same subjects
    with pytest.raises(SettingError, match=r"^fold p0: --val-subjects 5 asks for 5 validation "
                                           r"subject\(s\) of its 5 training subject\(s\); at least "
                                           r"one must stay for training$"):
        with_validation(make_folds("loso", subjects)[0], subjects, 5, seed=0, index=0)


def test_split_column_and_leak_detection():
    subjects = np.array(["a", "a", "b", "c", "d"])
    folds = make_folds("split:part", subjects,
                       {"part": np.array(["train", "train", "val", "test", "Test"])})
    assert folds[0].train.tolist() == [0, 1] and folds[0].val.tolist() == [2]
    assert folds[0].test.tolist() == [3, 4]
    with pytest.raises(ValueError, match="in both train and test"):
        make_folds("split:part", subjects, {"part": np.array(["train", "test", "val",
                                                               "test", "train"])})
    with pytest.raises(SubjectLeakError, match="in both train and test"):
        assert_no_leak(Fold("x", np.array([0]), np.array([1])), np.array(["a", "a"]))
    with pytest.raises(ValueError, match="unknown protocol"):
        make_folds("holdout", subjects)


# ----------------------------------------------------------------------------
# models
@pytest.mark.parametrize("pool", ["avg", "max", "rank", "lstm", "attention"])
def test_mdv_pooling_heads_masked(pool):
    from ahdi.train.models import build_model
    torch.manual_seed(0)
    model = build_model(f"mdv:{pool}", "resnet18", "none")
    x = torch.randn(3, 4, 3, 16, 16)
    counts = torch.tensor([1, 3, 4])
    mask = torch.arange(4).unsqueeze(0) < counts.unsqueeze(1)
    out = model(x, mask)
    assert out.shape == (3,) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # padded images do not change the output
    model.eval()
    with torch.no_grad():
        a = model(x, mask)
        x2 = x.clone()
        x2[~mask] = 100.0
        b = model(x2, mask)
    torch.testing.assert_close(a, b)


def test_arp_weights_match_kernel_coefficients():
    from ahdi.kernels import arp_coefficients
    from ahdi.train.models import arp_weights
    w = arp_weights(torch.tensor([5, 3]), 5)
    for row, m in zip(w, (5, 3)):
        ref = np.asarray(arp_coefficients(m), np.float64)
        ref = ref / np.abs(ref).sum()
        np.testing.assert_allclose(row[:m].numpy(), ref, rtol=1e-5, atol=1e-7)
        assert (row[m:] == 0).all()


def test_imagenet_weights_missing_is_a_clear_error(tmp_path):
    from ahdi.train.models import WeightsNotFoundError, build_model
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(WeightsNotFoundError) as err:
            build_model("single", "resnet18", "imagenet")
    finally:
        torch.hub.set_dir(old)
    msg = str(err.value)
    assert "not in the local torch cache" in msg and "resnet18-f37072fd.pth" in msg
    assert "--weights none" in msg


def test_weights_from_state_dict_path(tmp_path):
    from ahdi.train.models import build_backbone, build_model
    torch.manual_seed(3)
    net, _ = build_backbone("resnet18", "none")
    torch.save(net.state_dict(), tmp_path / "w.pt")
    model = build_model("single", "resnet18", str(tmp_path / "w.pt"))
    torch.testing.assert_close(model.backbone.conv1.weight, net.conv1.weight)
    with pytest.raises(FileNotFoundError):
        build_model("single", "resnet18", str(tmp_path / "missing.pt"))


# ----------------------------------------------------------------------------
# data
def test_select_items_errors_and_targets(tmp_path):
    from ahdi.train.data import DataError, select_items
    store = make_store(tmp_path / "s.zarr", fail=(1,), pending=(2,))
    sel = select_items(store, "kind", "binary", positive="pain")
    assert 1 not in sel.indices and 2 not in sel.indices and len(sel) == 14
    np.testing.assert_array_equal(sel.targets, np.asarray(store.labels()["y"])[sel.indices])
    with pytest.raises(DataError, match=r"unknown label 'nope'; known labels: "):
        select_items(store, "nope", "regression")
    with pytest.raises(DataError, match="--positive VALUE"):
        select_items(store, "kind", "binary")
    with pytest.raises(DataError, match="regression needs numbers"):
        select_items(store, "kind", "regression")
    with pytest.raises(DataError, match="not in this store"):
        select_items(store, "y", "binary", representation="flow")
    empty = make_store(tmp_path / "e.zarr", n=4, pending=(0, 1, 2, 3))
    with pytest.raises(DataError, match="no done items"):
        select_items(empty, "y", "binary")


def test_batch_transform_is_seeded_and_shaped():
    from ahdi.train.data import BatchTransform
    x = torch.randint(0, 256, (4, 2, 16, 16, 3), dtype=torch.uint8)
    a = BatchTransform(train=True, size=24, seed=5)(x)
    b = BatchTransform(train=True, size=24, seed=5)(x)
    assert a.shape == (4, 2, 3, 24, 24)
    torch.testing.assert_close(a, b)
    e = BatchTransform(train=False)(x[:, 0])
    ref = (x[:, 0].permute(0, 3, 1, 2).float() / 255 - 0.485) / 0.229
    torch.testing.assert_close(e[:, 0], ref[:, 0])


def test_a_flipped_flow_picture_shows_the_mirrored_motion():
    # The flow picture's hue is the direction of motion: a horizontal flip of
    # the picture must show the flow field mirrored, (dx, dy) -> (-dx, dy).
    from ahdi.kernels.motion import flow_picture
    from ahdi.train.data import IMAGENET_MEAN, IMAGENET_STD, BatchTransform
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(32, 32, 2)).astype(np.float32) * 3
    mirrored = flow[:, ::-1].copy()
    mirrored[..., 0] *= -1

    def picture(f):
        return flow_picture(f, np.hypot(f[..., 0], f[..., 1]).astype(np.float32), 32)

    def flipped(representation):
        tf = BatchTransform(train=True, seed=0, scale=(1, 1), ratio=(1, 1), jitter=0.0,
                            representation=representation, flip=1.0)
        out = tf(torch.from_numpy(picture(flow))[None])[0]
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        return ((out * std + mean) * 255).permute(1, 2, 0).numpy()

    truth = picture(mirrored).astype(np.float64)
    assert np.abs(flipped("flow") - truth).max() <= 1.5              # uint8 rounding
    assert np.abs(flipped("ahdi") - truth).max() > 100                # pixels only: wrong hue


def test_streaming_and_memory_give_the_same_batches(tmp_path):
    from ahdi.train.data import ImageSource, select_items
    store = make_store(tmp_path / "s.zarr", mdv=True, n=12)
    sel = select_items(store, "y", "binary", representation="mdv")
    dev = torch.device("cpu")
    mem = ImageSource(store, sel, "mdv", dev, in_memory="always")
    stream = ImageSource(store, sel, "mdv", dev, in_memory="never", num_workers=0)
    pos = np.arange(len(sel))[::-1].copy()
    for (xa, ma, pa), (xb, mb, pb) in zip(mem.batches(pos, 5), stream.batches(pos, 5)):
        assert torch.equal(xa, xb) and torch.equal(ma, mb) and torch.equal(pa, pb)


# ----------------------------------------------------------------------------
# engine + CLI
def _cfg(store, out, **kw):
    base = dict(store=str(store), label="y", task="binary", protocol="kfold:2", epochs=2,
                batch_size=4, lr=1e-3, out=str(out), progress=False)
    base.update(kw)
    return base


def test_trains_on_done_items_only_and_repeatable(tmp_path):
    from ahdi.train.engine import run_training
    store = make_store(tmp_path / "s.zarr", n=16, fail=(3, 7), pending=(8,))
    r1 = run_training(_cfg(tmp_path / "s.zarr", tmp_path / "r1"))
    r2 = run_training(_cfg(tmp_path / "s.zarr", tmp_path / "r2"))
    rows = list(csv.DictReader(open(tmp_path / "r1" / "predictions.csv")))
    done = set(np.asarray(store.video_ids())[np.asarray(store.statuses()) == "done"])
    assert {r["item"] for r in rows} == done and len(rows) == 13
    p1 = (tmp_path / "r1" / "predictions.csv").read_text()
    assert p1 == (tmp_path / "r2" / "predictions.csv").read_text()     # fixed seed, CPU
    assert r1["aggregate"] == r2["aggregate"]
    cfg = json.loads((tmp_path / "r1" / "config.json").read_text())
    assert cfg["store_param_hash"] == store.param_hash
    assert len(list((tmp_path / "r1" / "checkpoints").glob("*.pt"))) == 2
    assert (tmp_path / "r1" / "confusion.png").is_file()
    assert (tmp_path / "r1" / "learning_curves.png").is_file()


def test_cli_train_and_evaluate(tmp_path):
    from click.testing import CliRunner
    from ahdi.train.cli import evaluate_command, train_command
    make_store(tmp_path / "s.zarr", n=12)
    runner = CliRunner()
    res = runner.invoke(train_command, [str(tmp_path / "s.zarr"), "--task", "regression",
                                        "--label", "score", "--protocol", "loso",
                                        "--max-folds", "1", "--epochs", "1", "--batch-size", "4",
                                        "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "mae" in res.output and (tmp_path / "run" / "scatter.png").is_file()
    res = runner.invoke(evaluate_command, [str(tmp_path / "run"), str(tmp_path / "s.zarr"),
                                           "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "ev" / "predictions.csv")))
    assert len(rows) == 12
    res = runner.invoke(train_command, [str(tmp_path / "s.zarr"), "--label", "nope",
                                        "--out", str(tmp_path / "bad")])
    assert res.exit_code == 1
    assert "Error: unknown label 'nope'; known labels: y, kind, score" in res.output


def test_cli_module_does_not_import_torch():
    code = ("import sys, ahdi.train.cli; "
            "bad = [m for m in ('torch', 'torchvision', 'ahdi.train.engine') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
