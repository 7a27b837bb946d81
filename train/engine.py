"""Training and evaluation loops, and the self-describing run folder.

``run_training(config)`` trains one model per fold of the protocol and
writes to ``config.out``::

    config.json        the exact configuration, store path and param hash
    metrics.json       per-fold metrics and history, mean +- std over folds,
                       metrics of all held-out predictions pooled
    predictions.csv    item, subject, fold, target, prediction
    checkpoints/       one final checkpoint per fold (model, optimizer,
                       scheduler, epoch, config, target scaling)
    learning_curves.png, scatter.png (regression) / confusion.png (binary)

``evaluate_checkpoint(checkpoint, store, out)`` applies a trained model (or
every fold model of a run folder, averaged) to another store and writes the
same files.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ahdi.pipeline.errors import AhdiError, SettingError

from . import metrics as M
from . import plots
from .data import (BatchTransform, DataError, ImageSource, NoLabelValuesError,
                   Selection, select_items)
from .models import build_model, parse_model
from .splits import Fold, assert_no_leak, make_folds
from .vocab import DEVICES, TASKS, check_choice


class CheckpointError(AhdiError, ValueError):
    """A file or run folder given as a checkpoint is not one (the message says why)."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (written to config.json)."""
    store: str
    label: str
    task: str = "regression"                 # regression | binary
    positive: str | None = None              # binary: which label value is 1
    protocol: str = "loso"                   # loso | kfold:K | split:COLUMN
    representation: str = "ahdi"             # ahdi | sdi | mean | flow | mdv
    model: str = "single"                    # single | mdv:avg|max|rank|lstm|attention
    arch: str = "resnet18"
    weights: str = "none"                    # none | imagenet | PATH
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"                     # auto | cpu | cuda
    compile: bool = False
    max_folds: int | None = None
    out: str = "run"
    size: int | None = None                  # resize model input; None = store size
    augment: bool = True
    in_memory: str = "auto"                  # auto | always | never
    num_workers: int | None = None           # streaming only; None = cores - 1
    channels_last: bool = True               # CUDA only
    amp: bool = True                         # bf16 autocast, CUDA only
    progress: bool = True

    def validate(self) -> None:
        check_choice("task", self.task, TASKS)
        kind, _ = parse_model(self.model)
        if (kind == "mdv") != (self.representation == "mdv"):
            raise SettingError(f"model {self.model!r} needs representation "
                             f"{'mdv' if kind == 'mdv' else 'ahdi, sdi, mean or flow'}, "
                             f"got {self.representation!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be >= 1")
        check_choice("device", self.device, DEVICES)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def store_param_hash(store) -> str | None:
    """The store's conversion parameter hash, however the store exposes it."""
    for attr in ("param_hash",):
        v = getattr(store, attr, None)
        if v is not None:
            return v() if callable(v) else str(v)
    params = getattr(store, "params", None)
    if params is None:
        return None
    if hasattr(params, "param_hash"):
        return params.param_hash()
    try:
        from ahdi.kernels import AhdiParams
        return AhdiParams.from_dict(dict(params)).param_hash()
    except Exception:  # noqa: BLE001 - unknown param layout: record nothing
        return None


class Progress:
    """A one-line text progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()

    def update(self, done: int, loss: float | None = None, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        width = 24
        fill = int(width * done / max(self.total, 1))
        loss_s = f" loss {loss:.4f}" if loss is not None else ""
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{done}/{self.total}{loss_s} {now - self.t0:.1f}s")
        self.stream.flush()

    def close(self, summary: str = "") -> None:
        if self.enabled:
            self.stream.write(f"\r{self.label} {summary} ({time.monotonic() - self.t0:.1f}s)"
                              + " " * 20 + "\n")
            self.stream.flush()


def _forward(model, x, mask):
    return model(x) if mask is None else model(x, mask)


def _prepare(x, transform, channels_last):
    inp = transform(x)
    if channels_last and inp.dim() == 4:
        inp = inp.contiguous(memory_format=torch.channels_last)
    return inp


def train_one_epoch(model, batches, transform, optimizer, scheduler, loss_fn,
                    targets: torch.Tensor, *, amp: bool = False, channels_last: bool = False,
                    progress: Progress | None = None) -> float:
    """One pass over ``batches``; returns the mean training loss per sample."""
    model.train()
    dev_type = targets.device.type
    total = torch.zeros((), device=targets.device, dtype=torch.float64)
    n = 0
    for step, (x, mask, pos) in enumerate(batches, 1):
        if pos.numel() < 2:          # BatchNorm cannot train on one sample
            continue
        inp = _prepare(x, transform, channels_last)
        y = targets[pos]
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
            out = _forward(model, inp, mask)
            loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach().double() * pos.numel()
        n += pos.numel()
        if progress is not None and progress.enabled:
            progress.update(step, None)
    return float(total.item() / max(n, 1))


@torch.no_grad()
def evaluate(model, batches, transform, loss_fn=None, targets: torch.Tensor | None = None,
             *, amp: bool = False, channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw model outputs over ``batches``: (positions, outputs, mean loss or nan)."""
    model.eval()
    outs, poss = [], []
    total, n = 0.0, 0
    for x, mask, pos in batches:
        inp = _prepare(x, transform, channels_last)
        with torch.autocast(inp.device.type, dtype=torch.bfloat16, enabled=amp):
            out = _forward(model, inp, mask).float()
        if loss_fn is not None and targets is not None:
            total += float(loss_fn(out, targets[pos]).item()) * pos.numel()
            n += pos.numel()
        outs.append(out.cpu().numpy())
        poss.append(pos.cpu().numpy())
    pos = np.concatenate(poss) if poss else np.zeros(0, np.int64)
    out = np.concatenate(outs) if outs else np.zeros(0, np.float32)
    return pos, out.astype(np.float64), (total / n if n else float("nan"))


def outputs_to_predictions(task: str, out: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Regression: undo the target standardisation; binary: sigmoid probability."""
    if task == "regression":
        return out * std + mean
    return 1.0 / (1.0 + np.exp(-out))


def _loss_fn(task: str) -> nn.Module:
    return nn.MSELoss() if task == "regression" else nn.BCEWithLogitsLoss()


@contextlib.contextmanager
def _determinism(enabled: bool):
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench


def _seed_all(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def _write_json(path: Path, obj) -> None:
    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return str(o)
    path.write_text(json.dumps(obj, indent=2, default=default, allow_nan=True) + "\n")


def _write_predictions(path: Path, sel: Selection, rows) -> None:
    """rows: iterable of (position, fold, prediction)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "subject", "fold", "target", "prediction"])
        for p, fold, pred in rows:
            t = sel.targets[p]
            w.writerow([sel.video_ids[p], sel.subjects[p], fold,
                        "" if not np.isfinite(t) else f"{float(t):.6g}", f"{float(pred):.6g}"])


def _final_plots(out: Path, task: str, y_true, y_pred, curves: dict | None) -> list[str]:
    made = []
    if curves:
        made.append(plots.learning_curves(curves, out / "learning_curves.png",
                                          title="loss per epoch (mean over folds)"))
    ok = np.isfinite(np.asarray(y_true, np.float64))
    if ok.any():
        if task == "regression":
            made.append(plots.scatter(np.asarray(y_true)[ok], np.asarray(y_pred)[ok],
                                      out / "scatter.png"))
        else:
            made.append(plots.confusion(np.asarray(y_true)[ok], np.asarray(y_pred)[ok] >= 0.5,
                                        out / "confusion.png"))
    return made


def _versions() -> dict:
    import torchvision
    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": sys.version.split()[0]}


def run_training(config: TrainConfig | dict, store=None) -> dict:
    """Train and evaluate every fold of ``config.protocol``; returns metrics.json's content.

    ``store`` (optional) is an already open store object; by default
    ``config.store`` is opened with ``ahdi.pipeline.store.open_store``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    cfg.validate()
    device = resolve_device(cfg.device)
    if store is None:
        from ahdi.pipeline.store import open_store
        store = open_store(cfg.store)
    return _run(cfg, store, device)


def _run(cfg: TrainConfig, store, device: torch.device) -> dict:
    sel = select_items(store, cfg.label, cfg.task, cfg.positive, cfg.representation)
    folds = make_folds(cfg.protocol, sel.subjects, sel.labels, seed=cfg.seed)
    if cfg.max_folds is not None:
        folds = folds[:max(1, cfg.max_folds)]
    out = Path(cfg.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    param_hash = store_param_hash(store)
    cuda = device.type == "cuda"
    amp = cuda and cfg.amp
    channels_last = cuda and cfg.channels_last
    _write_json(out / "config.json", {
        **dataclasses.asdict(cfg), "store": str(Path(cfg.store).resolve()),
        "store_param_hash": param_hash, "store_size": int(store.size),
        "store_params": _plain(getattr(store, "params", None)),
        "device_used": str(device), "n_items": len(sel), "item_counts": sel.counts,
        "folds": [f.name for f in folds], "versions": _versions()})

    with _determinism(not cuda):
        source = ImageSource(store, sel, cfg.representation, device, cfg.in_memory,
                             cfg.num_workers)
        targets = torch.from_numpy(sel.targets).to(device)
        fold_results, rows, curves = [], [], {"train": [], "held-out": []}
        for fi, fold in enumerate(folds):
            res = _train_fold(cfg, fi, fold, len(folds), sel, source, targets, device,
                              amp, channels_last, out, param_hash)
            fold_results.append(res["summary"])
            rows += [(p, fold.name, pr) for p, pr in zip(res["positions"], res["predictions"])]
            curves["train"].append(res["summary"]["history"]["train_loss"])
            curves["held-out"].append(res["summary"]["history"]["heldout_loss"])

    rows.sort(key=lambda r: (r[1], r[0]))
    _write_predictions(out / "predictions.csv", sel, rows)
    pos = np.array([r[0] for r in rows], np.int64)
    preds = np.array([r[2] for r in rows], np.float64)
    result = {
        "task": cfg.task, "label": cfg.label, "protocol": cfg.protocol,
        "folds": fold_results,
        "aggregate": M.aggregate([f["metrics"] for f in fold_results]),
        "pooled": M.compute_metrics(cfg.task, sel.targets[pos], preds),
        "n_predictions": int(pos.size)}
    mean_curves = {k: np.nanmean(np.array(v, np.float64), axis=0).tolist()
                   for k, v in curves.items() if v}
    result["plots"] = _final_plots(out, cfg.task, sel.targets[pos], preds, mean_curves)
    _write_json(out / "metrics.json", result)
    return result


def _plain(obj):
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    try:
        return json.loads(json.dumps(dict(obj), default=str))
    except Exception:  # noqa: BLE001
        return str(obj)


def _train_fold(cfg, fi, fold: Fold, n_folds, sel, source, targets_raw, device, amp,
                channels_last, out: Path, param_hash) -> dict:
    assert_no_leak(fold, sel.subjects)
    fold_seed = cfg.seed * 1000 + fi
    _seed_all(fold_seed)
    train_t = sel.targets[fold.train]
    if cfg.task == "regression":
        t_mean = float(train_t.mean())
        t_std = float(train_t.std()) or 1.0
    else:
        t_mean, t_std = 0.0, 1.0
    targets = (targets_raw - t_mean) / t_std
    model = build_model(cfg.model, cfg.arch, cfg.weights).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if hasattr(model, "channels_last"):
            model.channels_last = True
    step_model = torch.compile(model) if cfg.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, math.ceil(fold.train.size / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    loss_fn = _loss_fn(cfg.task)
    train_tf = BatchTransform(train=cfg.augment, size=cfg.size, seed=fold_seed)
    eval_tf = BatchTransform(train=False, size=cfg.size)
    held = fold.val if fold.val.size else fold.test
    history = {"train_loss": [], "heldout_loss": [], "heldout_metric": []}
    key = "mae" if cfg.task == "regression" else "accuracy"
    n_batches = math.ceil(fold.train.size / cfg.batch_size)
    for epoch in range(cfg.epochs):
        rng = np.random.default_rng([cfg.seed, fi, epoch])
        bar = Progress(n_batches, f"fold {fi + 1}/{n_folds} ({fold.name}) "
                                  f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
        tr = train_one_epoch(step_model, source.batches(fold.train, cfg.batch_size, True, rng),
                             train_tf, optimizer, scheduler, loss_fn, targets, amp=amp,
                             channels_last=channels_last, progress=bar)
        pos, raw, hl = evaluate(step_model, source.batches(held, cfg.batch_size), eval_tf,
                                loss_fn, targets, amp=amp, channels_last=channels_last)
        pred = outputs_to_predictions(cfg.task, raw, t_mean, t_std)
        hm = M.compute_metrics(cfg.task, sel.targets[pos], pred)[key]
        history["train_loss"].append(tr)
        history["heldout_loss"].append(hl)
        history["heldout_metric"].append(hm)
        bar.close(f"train loss {tr:.4f}  held-out loss {hl:.4f}  {key} {hm:.4f}")
    if fold.val.size:
        pos, raw, _ = evaluate(step_model, source.batches(fold.test, cfg.batch_size), eval_tf,
                               amp=amp, channels_last=channels_last)
        pred = outputs_to_predictions(cfg.task, raw, t_mean, t_std)
    fold_metrics = M.compute_metrics(cfg.task, sel.targets[pos], pred)
    ckpt = out / "checkpoints" / f"fold{fi + 1:02d}-{_safe(fold.name)}.pt"
    # Weights and plain values only, so the file loads with weights_only=True.
    torch.save({
        "model": model.state_dict(), "epoch": cfg.epochs,
        "config": dataclasses.asdict(cfg), "fold": fold.name,
        "target_mean": t_mean, "target_std": t_std,
        "input_size": int(cfg.size or source.size), "store_param_hash": param_hash,
        "test_subjects": sorted(set(sel.subjects[fold.test].tolist())),
    }, ckpt)
    return {"positions": pos, "predictions": pred, "summary": {
        "fold": fold.name, "n_train": int(fold.train.size), "n_val": int(fold.val.size),
        "n_test": int(fold.test.size), "metrics": fold_metrics, "history": history,
        "checkpoint": str(ckpt)}}


# ----------------------------------------------------------------------------
def _checkpoint_files(checkpoint) -> list[Path]:
    p = Path(checkpoint)
    if p.is_dir():
        files = sorted((p / "checkpoints").glob("*.pt")) or sorted(p.glob("*.pt"))
        if not files:
            raise CheckpointError(f"no checkpoints (*.pt) in {p} or {p / 'checkpoints'}")
        return files
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    return [p]


CHECKPOINT_KEYS = ("config", "model")


def load_checkpoint(path) -> dict:
    """Read an ahdi checkpoint, or say clearly why the file is not one."""
    try:
        # weights_only: a checkpoint file from elsewhere must not run code.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(f"{path} is not an ahdi checkpoint: torch cannot read it "
                              f"({type(exc).__name__}: {exc})") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not an ahdi checkpoint: it has no "
                              f"{', '.join(missing)} (a checkpoint is what `ahdi train` writes "
                              f"under RUN_DIR/checkpoints)")
    return ckpt


def evaluate_checkpoint(checkpoint, store_path, out, *, batch_size: int = 64,
                        device: str = "auto", progress: bool = True, store=None) -> dict:
    """Apply a trained model to the done items of another store.

    ``checkpoint`` is one checkpoint file, or a run folder whose fold models
    are all applied and their predictions averaged. When the store has the
    training label, metrics are computed; otherwise only predictions are
    written (target left empty).
    """
    files = _checkpoint_files(checkpoint)
    dev = resolve_device(device)
    ckpts = [load_checkpoint(f) for f in files]
    cfg = TrainConfig(**ckpts[0]["config"])
    if store is None:
        from ahdi.pipeline.store import open_store
        store = open_store(store_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    has_label = cfg.label in list(store.label_names)
    sel = None
    if has_label:
        try:
            sel = select_items(store, cfg.label, cfg.task, cfg.positive, cfg.representation)
        except NoLabelValuesError:
            has_label = False
    if sel is None:
        sel = _unlabelled_selection(store, cfg.representation)
    source = ImageSource(store, sel, cfg.representation, dev)
    positions = np.arange(len(sel))
    all_preds = []
    for f, ck in zip(files, ckpts):
        model = build_model(ck["config"]["model"], ck["config"]["arch"], "none")
        model.load_state_dict(ck["model"])
        model.to(dev)
        tf = BatchTransform(train=False, size=ck.get("input_size"))
        if progress:
            print(f"applying {f.name} to {len(sel)} items", file=sys.stderr)
        pos, raw, _ = evaluate(model, source.batches(positions, batch_size), tf,
                               amp=dev.type == "cuda" and cfg.amp)
        pred = np.empty(len(sel))
        pred[pos] = outputs_to_predictions(cfg.task, raw, ck["target_mean"], ck["target_std"])
        all_preds.append(pred)
    pred = np.mean(all_preds, axis=0)
    param_hash = store_param_hash(store)
    _write_predictions(out / "predictions.csv", sel, [(p, "applied", pred[p]) for p in positions])
    result = {"task": cfg.task, "label": cfg.label, "checkpoints": [str(f) for f in files],
              "store": str(Path(store_path).resolve()), "store_param_hash": param_hash,
              "train_param_hash": ckpts[0].get("store_param_hash"),
              "n_predictions": int(len(sel))}
    if param_hash != result["train_param_hash"]:
        result["note"] = ("the store was converted with other parameters than the training "
                          "store; predictions may be off")
    if has_label:
        result["metrics"] = M.compute_metrics(cfg.task, sel.targets, pred)
    result["plots"] = _final_plots(out, cfg.task, sel.targets, pred, None)
    _write_json(out / "metrics.json", result)
    _write_json(out / "config.json", {"checkpoint": [str(f) for f in files],
                                      "store": result["store"], "train_config": ckpts[0]["config"],
                                      "batch_size": batch_size, "device_used": str(dev)})
    return result


def _unlabelled_selection(store, representation) -> Selection:
    if representation not in list(store.representations):
        raise DataError(f"representation {representation!r} is not in this store; "
                        f"it has: {', '.join(store.representations)}")
    statuses = np.asarray(store.statuses()).astype(str)
    idx = np.flatnonzero(statuses == "done")
    if idx.size == 0:
        raise DataError(f"no done items in the store ({store.n_items} items)")
    return Selection(indices=idx, targets=np.full(idx.size, np.nan, np.float32),
                     subjects=np.asarray(store.subjects()).astype(str)[idx],
                     video_ids=np.asarray(store.video_ids()).astype(str)[idx],
                     labels={}, counts={"done": int(idx.size)})
