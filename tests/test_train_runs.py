"""Training runs a lab can rely on: one run per folder, resume, logs as it goes,
checked data, honest numbers, weights-only checkpoints (CPU, small stores)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from ahdi.train.cli import evaluate_command, train_command  # noqa: E402
from tests.test_train_units import make_store  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _cfg(store, out, **kw):
    base = dict(store=str(store), label="y", task="binary", protocol="kfold:2", epochs=2,
                batch_size=4, lr=1e-3, out=str(out), progress=False, device="cpu")
    base.update(kw)
    return base


def _train_args(store, out, *extra):
    return [str(store), "--task", "binary", "--label", "y", "--protocol", "kfold:2",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "s.zarr"
    make_store(path, n=16)
    return path


@pytest.fixture(scope="module")
def finished(store, tmp_path_factory):
    """A finished 2-fold run, and the epoch lines a console received while it ran."""
    from ahdi.train.engine import run_training
    from ahdi.train.tracking import Console

    out = tmp_path_factory.mktemp("finished") / "run"
    seen = []

    def sink(line):
        # history.csv as it is when each epoch line is printed
        rows = list(csv.DictReader(open(out / "history.csv")))
        seen.append((line, len(rows)))

    result = run_training(_cfg(store, out), console=Console(sink=sink))
    return SimpleNamespace(out=out, result=result, seen=seen)


# ----------------------------------------------------------------------------
# one run per folder
def test_a_run_folder_belongs_to_one_run(store, tmp_path):
    run = tmp_path / "run"
    first = CliRunner().invoke(train_command, _train_args(store, run))
    assert first.exit_code == 0, first.output
    assert len(list((run / "checkpoints").glob("*.pt"))) == 2
    again = CliRunner().invoke(train_command, _train_args(store, run, "--max-folds", "1"))
    assert again.exit_code == 1
    assert again.output.strip().endswith(
        f"Error: {run} already holds a run; pass --resume {run} to continue it, or "
        f"--overwrite to replace it")
    # --overwrite clears the folder: no checkpoint of the old run stays to be averaged.
    over = CliRunner().invoke(train_command,
                              _train_args(store, run, "--max-folds", "1", "--overwrite"))
    assert over.exit_code == 0, over.output
    assert [p.name for p in (run / "checkpoints").glob("*.pt")] == ["fold01-fold1.pt"]
    assert len(json.loads((run / "metrics.json").read_text())["folds"]) == 1
    finished = CliRunner().invoke(train_command, ["--resume", str(run)])
    assert finished.exit_code == 1
    assert (f"Error: {run} is a finished run (it has metrics.json): nothing to resume; "
            f"pass --overwrite to train it again") in finished.output
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    refused = CliRunner().invoke(train_command, _train_args(store, other, "--overwrite"))
    assert refused.exit_code == 1
    assert f"Error: {other} exists and is not an ahdi run folder; choose another --out" \
        in refused.output
    assert (other / "todo.txt").read_text() == "mine"


def test_plain_epoch_lines_when_not_a_terminal(store, tmp_path):
    res = CliRunner().invoke(train_command, _train_args(store, tmp_path / "run"))
    assert res.exit_code == 0, res.output
    assert "fold 1/2 (fold1) epoch 1/1: train loss " in res.output
    assert "fold 2/2 (fold2) done: accuracy " in res.output
    assert "\r" not in res.output
    # the per-fold table and the mean over folds
    assert "fold   status   train  val test epoch  accuracy" in res.output
    assert "held-out metrics, mean ± std over folds (2 folds, 16 items):" in res.output


def test_config_records_what_ran(finished):
    from importlib.metadata import version
    config = json.loads((finished.out / "config.json").read_text())
    assert config["ahdi_version"] == version("ahdi")
    assert config["device_used"] == "cpu"
    assert config["amp"] is False and config["channels_last"] is False    # CUDA only
    assert [f["name"] for f in config["folds"]] == ["fold1", "fold2"]


def test_config_file_and_the_command_line_over_it(store, tmp_path):
    settings = tmp_path / "train.yaml"
    settings.write_text(f"train:\n  store: {store}\n  task: binary\n  label: y\n"
                        f"  protocol: kfold:2\n  epochs: 3\n  batch-size: 4\n  lr: 3e-4\n"
                        f"  max_folds: 1\n  device: cpu\n")
    res = CliRunner().invoke(train_command, ["--config", str(settings), "--epochs", "1",
                                             "--out", str(tmp_path / "run"), "--quiet"])
    assert res.exit_code == 0, res.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["epochs"], config["batch_size"], config["lr"]) == (1, 4, 3e-4)
    settings.write_text("epoch: 3\n")
    res = CliRunner().invoke(train_command, ["--config", str(settings)])
    assert res.exit_code == 1
    assert f"Error: {settings}: unknown setting 'epoch'; the settings are store, label, " \
        in res.output


# ----------------------------------------------------------------------------
# logged as it goes
def test_history_rows_appear_during_training(finished):
    epoch_lines = [(line, n) for line, n in finished.seen if " epoch " in line]
    assert [line.split(":")[0] for line, _ in epoch_lines] == [
        "fold 1/2 (fold1) epoch 1/2", "fold 1/2 (fold1) epoch 2/2",
        "fold 2/2 (fold2) epoch 1/2", "fold 2/2 (fold2) epoch 2/2"]
    # each line is printed once its epoch's row is in history.csv, not at the end
    assert [n for _, n in epoch_lines] == [1, 2, 3, 4]
    rows = list(csv.DictReader(open(finished.out / "history.csv")))
    assert list(rows[0]) == ["fold", "epoch", "train_loss", "val_loss", "val_accuracy",
                             "val_balanced_accuracy", "val_auc", "val_f1", "lr", "seconds"]
    assert [(r["fold"], r["epoch"]) for r in rows] == [("fold1", "1"), ("fold1", "2"),
                                                       ("fold2", "1"), ("fold2", "2")]


def test_a_terminal_gets_a_bar_a_log_gets_lines():
    import io
    from ahdi.train.tracking import Console

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, bar in ((Terminal(), True), (io.StringIO(), False)):
        console = Console(stream=stream)
        progress = console.progress("fold 1/1 (a) epoch 1/1", 2)
        assert (progress is not None) == bar
        if progress is not None:
            progress.update(2)
            progress.clear()
        console.info("fold 1/1 (a) epoch 1/1: train loss 0.5")
        console.warn("careful")
        text = stream.getvalue()
        assert text.endswith("fold 1/1 (a) epoch 1/1: train loss 0.5\nwarning: careful\n")
        assert ("\r" in text) == bar and ("[" in text) == bar
    quiet = io.StringIO()
    Console(enabled=False, stream=quiet).info("epoch line")
    Console(enabled=False, stream=quiet).warn("still shown")
    assert quiet.getvalue() == "warning: still shown\n"


def test_the_cuda_precision_path_runs_on_cpu():
    # bf16 autocast and channels_last are CUDA settings; their code runs on
    # CPU too (CPU autocast), so a typo in that path fails here, not on a GPU.
    from ahdi.train.data import BatchTransform
    from ahdi.train.loop import evaluate, loss_function, train_one_epoch
    from ahdi.train.models import build_model
    torch.manual_seed(0)
    model = build_model("single", "resnet18", "none").to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x = torch.randint(0, 256, (8, 16, 16, 3), dtype=torch.uint8)
    targets = torch.tensor([0.0, 1.0] * 4)
    batches = [(x[:4], None, torch.arange(4)), (x[4:], None, torch.arange(4, 8))]
    tf = BatchTransform(train=True, seed=0)
    loss = train_one_epoch(model, batches, tf, opt, sched, loss_function("binary"), targets,
                           amp=True, channels_last=True)
    assert np.isfinite(loss)
    pos, out, val_loss = evaluate(model, batches, BatchTransform(train=False),
                                  loss_function("binary"), targets, amp=True,
                                  channels_last=True)
    assert pos.tolist() == list(range(8)) and np.isfinite(out).all() and np.isfinite(val_loss)


def test_tensorboard_event_files(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for fold in ("fold01-fold1", "fold02-fold2"):
        events = EventAccumulator(str(finished.out / "tensorboard" / fold))
        events.Reload()
        assert [e.step for e in events.Scalars("loss/train")] == [1, 2]
        assert "lr" in events.Tags()["scalars"]


# ----------------------------------------------------------------------------
# outputs
def test_final_checkpoints_hold_weights_only(finished):
    from ahdi.train.models import build_model
    params = build_model("single", "resnet18", "none").state_dict()
    model_bytes = sum(t.numel() * t.element_size() for t in params.values())
    for path in sorted((finished.out / "checkpoints").glob("*.pt")):
        ck = torch.load(path, weights_only=True)
        assert not {"optimizer", "scheduler", "rng"} & set(ck)
        assert {"model", "config", "store_param_hash", "train_items"} <= set(ck)
        assert path.stat().st_size <= 1.2 * model_bytes
    assert not (finished.out / "last.pt").exists()        # a finished run needs no resume


def test_outputs_a_researcher_expects(finished):
    out = finished.out
    for name in ("folds.csv", "predictions.csv", "confusion.png", "roc.png",
                 "precision_recall.png", "learning_curves.png", "curves/fold01-fold1.png",
                 "curves/fold02-fold2.png"):
        assert (out / name).is_file(), name
    folds = list(csv.DictReader(open(out / "folds.csv")))
    assert [f["fold"] for f in folds] == ["fold1", "fold2"]
    assert {f["status"] for f in folds} == {"done"} and {f["best_epoch"] for f in folds} == {"2"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["main_metric"] == "accuracy"
    assert metrics["aggregate"]["accuracy"]["mean"] == pytest.approx(
        np.mean([float(f["accuracy"]) for f in folds]))


# ----------------------------------------------------------------------------
# evaluate
def test_evaluate_never_writes_into_its_run_and_warns_of_training_items(finished, store,
                                                                        tmp_path):
    run = finished.out
    before = (run / "metrics.json").read_bytes()
    for out in (run, run / "evaluation"):
        res = CliRunner().invoke(evaluate_command, [str(run), str(store), "--out", str(out)])
        assert res.exit_code == 1
        assert (f"Error: --out {out} is inside the run folder {run} being evaluated; "
                f"evaluate writes to a folder of its own") in res.output
    res = CliRunner().invoke(evaluate_command, [str(run), str(store),
                                                "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    # kfold:2: every item trained one of the two fold models
    assert ("warning: 16 of the 16 evaluated items were in the training set of 2 of the 2 "
            "fold model(s) (same video id); their predictions are not held-out") in res.output
    assert (run / "metrics.json").read_bytes() == before


def test_evaluate_refuses_an_unfinished_run(store, tmp_path):
    from ahdi.train.engine import run_training
    run = tmp_path / "run"
    run_training(_cfg(store, run, epochs=1, max_folds=1))
    (run / "metrics.json").unlink()
    res = CliRunner().invoke(evaluate_command, [str(run), str(store),
                                                "--out", str(tmp_path / "ev")])
    assert res.exit_code == 1
    assert (f"Error: {run} is an unfinished run (no metrics.json): resume it with "
            f"`ahdi train --resume {run}`, or give one of its checkpoint files") in res.output
    # ... and resuming it with other settings is refused by name
    res = CliRunner().invoke(train_command, ["--resume", str(run), "--lr", "0.5"])
    assert res.exit_code == 1
    assert (f"Error: {run}: this run has lr = 0.001, not 0.5; resume it with its own "
            f"settings, or start a new run with another --out") in res.output
    res = CliRunner().invoke(train_command, ["--resume", str(run), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (run / "metrics.json").is_file()


# ----------------------------------------------------------------------------
# checked data, honest numbers
def _labelled_store(path, values):
    from ahdi.kernels import AhdiParams
    from ahdi.pipeline.layout import create_store
    items = [SimpleNamespace(video_id=f"v{i:02d}", subject=f"s{i % 3}", labels={"score": v},
                             source=SimpleNamespace(describe=lambda: "synthetic"))
             for i, v in enumerate(values)]
    store = create_store(str(path), items, AhdiParams(size=16, crop="center", patch=3),
                         ["ahdi"], dataset="synthetic", source="test", overwrite=True)
    for i in range(len(items)):
        store.write_item(i, SimpleNamespace(
            ahdi=np.full((16, 16, 3), i, np.uint8), mdv=None, sdi=None, mean=None, flow=None,
            motion=np.zeros(4), eps=0.1, bounds=None, windows=np.tile([[0, 4]], (1, 1)),
            n_frames=4), fps=25.0)
    return store


def test_non_finite_labels_are_refused_before_training(tmp_path):
    from ahdi.train.data import DataError
    from ahdi.train.engine import run_training
    values = [float(i) for i in range(9)]
    values[3], values[5] = float("inf"), float("nan")       # nan = missing, inf = wrong
    _labelled_store(tmp_path / "s.zarr", values)
    with pytest.raises(DataError) as err:
        run_training(dict(store=str(tmp_path / "s.zarr"), label="score", out=str(tmp_path / "r"),
                          progress=False))
    assert str(err.value) == ("label 'score' is not a finite number for 1 item(s) (v03 = inf); "
                              "fix them, or leave them empty to skip them")
    assert not (tmp_path / "r").exists()                     # nothing started


def test_folds_that_cannot_learn_are_refused_by_name(store, tmp_path):
    from ahdi.train.data import DataError
    from ahdi.train.engine import run_training
    ids = np.asarray(make_store(tmp_path / "t.zarr", n=16).video_ids()).astype(str)
    # make_store: y = 1 for items 4..7 and 12..15; subject = i % 4
    with pytest.raises(DataError, match=r"^binary task: all 8 items are class 1; a binary "
                                        r"model needs items of both classes$"):
        run_training(_cfg(store, tmp_path / "a", items=[ids[i] for i in (4, 5, 6, 7, 12, 13,
                                                                           14, 15)]))
    # LOSO over s0 (4 items) and one item of s1: fold s0 trains on 1 item
    with pytest.raises(DataError, match=r"^fold s0: its training side has 1 item\(s\); "
                                        r"training needs at least 2$"):
        run_training(_cfg(store, tmp_path / "b", protocol="loso",
                          items=[ids[i] for i in (0, 4, 8, 12, 1)]))
    result = run_training(_cfg(store, tmp_path / "c", epochs=1, batch_size=32, max_folds=1))
    assert result["warnings"] == ["fold fold1: its training side has 8 items, fewer than one "
                                  "batch (32): one optimizer step per epoch"]


def test_a_diverged_fold_is_undefined_and_named(store, tmp_path, monkeypatch):
    from ahdi.train import engine
    real, losses = engine.train_one_epoch, []

    def nan_in_second_fold(*args, **kwargs):
        losses.append(real(*args, **kwargs))
        return float("nan") if len(losses) == 3 else losses[-1]   # fold 2, epoch 1

    monkeypatch.setattr(engine, "train_one_epoch", nan_in_second_fold)
    res = CliRunner().invoke(train_command, _train_args(store, tmp_path / "run", "--epochs", "2"))
    assert res.exit_code == 1
    message = ("fold fold2: the training loss is not finite at epoch 1 (nan); lower --lr, "
               "or check the labels")
    assert f"warning: {message}" in res.output
    assert (f"Error: 1 of 2 folds diverged ({message}); their metrics are undefined and left "
            f"out of the means") in res.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    fold2 = metrics["folds"][1]
    assert fold2["status"] == "diverged" and fold2["checkpoint"] is None
    assert all(np.isnan(v) for v in fold2["metrics"].values())
    assert metrics["aggregate"]["accuracy"]["n_diverged"] == 1
    assert metrics["aggregate"]["accuracy"]["n"] == 1
    rows = list(csv.DictReader(open(tmp_path / "run" / "predictions.csv")))
    assert {r["prediction"] for r in rows if r["fold"] == "fold2"} == {""}
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")] == ["fold01-fold1.pt"]


def test_validation_chooses_the_epoch_and_patience_stops(store, tmp_path):
    from ahdi.train.engine import run_training
    result = run_training(_cfg(store, tmp_path / "run", protocol="loso", epochs=4,
                               val_subjects=1, patience=1, max_folds=2, lr=3e-3))
    for fold in result["folds"]:
        assert fold["n_val"] == 4 and fold["n_train"] == 8        # one of 3 training subjects
        scores = [(-r["val_accuracy"], r["val_loss"]) for r in fold["history"]]
        assert fold["best_epoch"] == 1 + scores.index(min(scores))
        # patience 1: a fold stops one epoch after its last improvement
        assert fold["epochs_run"] == min(4, fold["best_epoch"] + 1)


# ----------------------------------------------------------------------------
# interrupt and resume, in real processes
def _start(args, env):
    # SIG_DFL: a child of a shell that ignores SIGINT would ignore it too.
    return subprocess.Popen([sys.executable, "-m", "ahdi.pipeline.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                       signal.SIG_DFL))


def _stop_when(proc, path: Path, signum) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the fold never finished"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_interrupted_then_resumed_equals_an_uninterrupted_run(tmp_path):
    make_store(tmp_path / "s.zarr", n=18, n_subjects=3)
    common = [str(tmp_path / "s.zarr"), "--task", "binary", "--label", "y", "--protocol",
              "loso", "--epochs", "3", "--batch-size", "4", "--seed", "1", "--device", "cpu",
              "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    whole = subprocess.run([sys.executable, "-m", "ahdi.pipeline.cli", "train", *common,
                            "--out", str(tmp_path / "whole")], capture_output=True, text=True,
                           env=env, cwd=REPO)
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "run"
    code, err = _stop_when(_start([*common, "--out", str(run)], env),
                           run / "folds" / "fold01-s0.json", signal.SIGINT)
    assert code == 130, err
    assert (f"interrupted: 1 of 3 folds finished and kept in {run}; continue with: "
            f"ahdi train --resume {run}") in err
    assert "Traceback" not in err
    code, err = _stop_when(_start(["--resume", str(run), "--quiet"], env),
                           run / "folds" / "fold02-s1.json", signal.SIGTERM)
    assert code == 143, err
    assert f"terminated (SIGTERM): 2 of 3 folds finished and kept in {run}" in err
    # each part in its own process, as the uninterrupted run
    rest = subprocess.run([sys.executable, "-m", "ahdi.pipeline.cli", "train", "--resume",
                           str(run), "--quiet"], capture_output=True, text=True, env=env,
                          cwd=REPO)
    assert rest.returncode == 0, rest.stderr
    assert (run / "predictions.csv").read_text() == \
        (tmp_path / "whole" / "predictions.csv").read_text()
    rows = list(csv.DictReader(open(run / "history.csv")))
    assert [(r["fold"], r["epoch"]) for r in rows] == [
        (f"s{f}", str(e)) for f in range(3) for e in range(1, 4)]
