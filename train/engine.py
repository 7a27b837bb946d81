"""Training runs: one model per fold, epoch by epoch, resumable at every epoch.

``run_training(config)`` trains every fold of the protocol into the run
folder ``config.out`` (see :mod:`ahdi.train.runfolder` for its files):

1. the items, the folds (with an inner validation split when asked) and
   the data checks (:mod:`ahdi.train.checks`), before anything is written;
2. ``config.json``: the settings as they ran (``amp`` and
   ``channels_last`` only where CUDA ran them), the store, the device
   used, the ahdi and library versions;
3. per fold and epoch: a row of ``history.csv``, TensorBoard scalars, a
   console line, and the ``last.pt`` resume state; with a validation set,
   the best epoch by the task's main metric (ties: the lower validation
   loss) is kept, and ``patience`` epochs without improvement stop the
   fold early; the test subjects never choose anything;
4. per finished fold: its weights-only checkpoint, then its record;
5. the run's tables, predictions, plots and ``metrics.json``.

A fold whose training loss is not finite stops at that epoch and is
recorded as diverged (every metric undefined, no checkpoint); the other
folds go on. Ctrl-C (or SIGTERM, which the command line turns into the
same) raises :class:`TrainingInterrupted` with the finished folds kept;
``run_training(config, resume=True)`` continues from the last finished
epoch and, on CPU, ends with the predictions an uninterrupted run gives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import signal
import sys
import time

import numpy as np
import torch

from ahdi.pipeline.errors import SettingError

from . import metrics as M
from .checkpoint import (CheckpointError, load_last, restore_rng_states, save_final,
                         save_last, weights_copy)
from .checks import check_run
from .config import FIELDS, RESUME_FREE, TrainConfig
from .data import BatchTransform, ImageSource, select_items
from .loop import (describe_device, determinism, evaluate, loss_function,
                   outputs_to_predictions, resolve_device, seed_all, train_one_epoch)
from .models import build_model
from .outputs import finish_run
from .runfolder import RunFolder, read_json, write_json
from .splits import assert_no_leak, make_folds, with_validation
from .tracking import Console, History, Scalars
from .vocab import LOWER_IS_BETTER, MAIN_METRIC

__all__ = ["TrainConfig", "CheckpointError", "TrainingInterrupted", "run_training",
           "read_run_settings"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run; finished folds and the last epoch are kept.

    A KeyboardInterrupt, so callers that only know "the user stopped it"
    (``ahdi ablate``) need nothing of the trainer's to handle it.

    ``exit_code`` is 128 + the signal's number (130 for SIGINT, 143 for
    SIGTERM), read from the interrupting exception's ``signum`` when it has one.
    """

    def __init__(self, run_dir, finished: int, total: int, signum: int = signal.SIGINT):
        self.run_dir, self.finished, self.total = str(run_dir), finished, total
        self.exit_code = 128 + int(signum)
        what = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        super().__init__(f"{what}: {finished} of {total} folds finished and kept in "
                         f"{run_dir}; continue with: ahdi train --resume {run_dir}")


def read_run_settings(run_dir) -> dict:
    """The settings a run folder's config.json recorded (to resume it).

    Raises
    ------
    RunFolderError
        The folder holds no run.
    """
    folder = RunFolder(run_dir)
    folder.prepare(resume=True)          # refuses a folder that holds no unfinished run
    saved = read_json(folder.config)
    return {k: saved[k] for k in FIELDS if k in saved}


def run_training(config: TrainConfig | dict, store=None, *, resume: bool = False,
                 overwrite: bool = False, console: Console | None = None) -> dict:
    """Train and evaluate every fold of ``config.protocol``; returns metrics.json's content.

    Parameters
    ----------
    config : TrainConfig or dict
        The run's settings; ``config.out`` is the run folder.
    store : Store, optional
        An open store; by default ``config.store`` is opened.
    resume : bool
        Continue the unfinished run in ``config.out`` (its settings must
        match ``config`` in everything that changes results).
    overwrite : bool
        Replace the run in ``config.out``.
    console : Console, optional
        Where progress and warnings go (default: stderr, progress as
        ``config.progress`` says).

    Raises
    ------
    AhdiError
        A setting, the data, the store or the run folder is not usable
        (the message says which and why); nothing is trained then.
    TrainingInterrupted
        Ctrl-C stopped the run; resume it with ``resume=True``.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**config)
    cfg.validate()
    device = resolve_device(cfg.device)
    cuda = device.type == "cuda"
    # config.json tells what ran: bf16 and channels_last exist on CUDA only.
    cfg = dataclasses.replace(cfg, amp=cfg.amp and cuda,
                              channels_last=cfg.channels_last and cuda)
    console = console or Console(enabled=cfg.progress)
    if store is None:
        from ahdi.pipeline.store import open_store
        store = open_store(cfg.store)
    selection, folds, warnings = _plan(cfg, store)
    folder = RunFolder(cfg.out)
    folder.prepare(resume=resume, overwrite=overwrite)
    identity = _selection_sha(selection)
    if resume:
        _check_resumable(folder, cfg, identity, describe_device(device))
    else:
        _write_config(folder, cfg, store, selection, folds, identity, device)
    for text in warnings:
        console.warn(text)
    try:
        return _run(cfg, store, selection, folds, warnings, device, folder, console)
    except KeyboardInterrupt as exc:
        done = len(folder.finished_folds([f.name for f in folds]))
        raise TrainingInterrupted(folder.path, done, len(folds),
                                  getattr(exc, "signum", signal.SIGINT)) from None


def _plan(cfg: TrainConfig, store):
    """The items, the folds with their validation sets, and the data warnings."""
    selection = select_items(store, cfg.label, cfg.task, cfg.positive, cfg.representation,
                             items=cfg.items)
    folds = make_folds(cfg.protocol, selection.subjects, selection.labels, seed=cfg.seed)
    if cfg.max_folds is not None:
        folds = folds[:cfg.max_folds]
    if cfg.val_subjects and any(f.val.size for f in folds):
        raise SettingError(f"protocol {cfg.protocol} has its own validation items; "
                           f"drop --val-subjects")
    folds = [with_validation(f, selection.subjects, cfg.val_subjects, cfg.seed, i)
             for i, f in enumerate(folds)]
    if cfg.patience is not None and not all(f.val.size for f in folds):
        raise SettingError("patience (early stopping) needs a validation split: "
                           "give --val-subjects N (or a fraction)")
    for fold in folds:
        assert_no_leak(fold, selection.subjects)
    return selection, folds, check_run(cfg.task, cfg.batch_size, selection, folds)


def _selection_sha(selection) -> str:
    blob = json.dumps([selection.video_ids.tolist(), selection.subjects.tolist(),
                       [repr(float(t)) for t in selection.targets]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torchvision
    try:
        ahdi = version("ahdi")
    except PackageNotFoundError:
        ahdi = "unknown"
    return {"ahdi": ahdi, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": sys.version.split()[0]}


def _write_config(folder, cfg, store, selection, folds, identity, device) -> None:
    from pathlib import Path
    versions = _versions()
    write_json(folder.config, {
        **dataclasses.asdict(cfg), "store": str(Path(cfg.store).resolve()),
        "store_param_hash": store.param_hash, "store_size": int(store.size),
        "store_params": store.params.to_dict(), "device_used": describe_device(device),
        "ahdi_version": versions["ahdi"], "versions": versions,
        "n_items": len(selection), "item_counts": selection.counts,
        "selection_sha": identity,
        "folds": [{"name": f.name, "n_train": int(f.train.size), "n_val": int(f.val.size),
                   "n_test": int(f.test.size)} for f in folds]})


def _check_resumable(folder, cfg, identity: str, device: str) -> None:
    """Refuse to resume with settings, items or a device that would change the results."""
    saved = read_json(folder.config)
    for name in FIELDS:
        if name in RESUME_FREE or name not in saved:
            continue
        if saved[name] != getattr(cfg, name):
            raise SettingError(f"{folder.path}: this run has {name} = {saved[name]!r}, not "
                               f"{getattr(cfg, name)!r}; resume it with its own settings, or "
                               f"start a new run with another --out")
    if saved.get("selection_sha") != identity:
        raise SettingError(f"{folder.path}: the store's items, subjects or labels changed "
                           f"since this run started ({saved.get('n_items')} items then); "
                           f"start a new run (--overwrite)")
    if saved.get("device_used", device).split(" ")[0].split(":")[0] != device.split(":")[0]:
        raise SettingError(f"{folder.path}: this run started on {saved['device_used']}, "
                           f"not {device}; resume it there (--device)")


@dataclasses.dataclass
class _Shared:
    """What every fold of a run uses."""
    cfg: TrainConfig
    selection: object
    source: ImageSource
    targets: torch.Tensor
    device: torch.device
    folder: RunFolder
    console: Console
    history: History
    scalars: Scalars
    param_hash: str | None
    n_folds: int


def _run(cfg, store, selection, folds, warnings, device, folder, console) -> dict:
    names = [f.name for f in folds]
    finished = folder.finished_folds(names)
    last = load_last(folder.last)
    if last is not None and (last["fold_index"] in finished or last["fold_index"] >= len(folds)
                             or names[last["fold_index"]] != last["fold"]):
        last = None                       # left by a fold that finished after writing it
    rows = [row for i in sorted(finished) for row in finished[i]["history"]]
    history = History(folder.history, cfg.task, rows + (last["history"] if last else []))
    scalars = Scalars(folder.tensorboard, console)
    with determinism(device.type != "cuda"):
        source = ImageSource(store, selection, cfg.representation, device, cfg.in_memory,
                             cfg.num_workers)
        shared = _Shared(cfg, selection, source, torch.from_numpy(selection.targets).to(device),
                         device, folder, console, history, scalars, store.param_hash,
                         len(folds))
        try:
            for fi, fold in enumerate(folds):
                if fi not in finished:
                    state = last if last is not None and last["fold_index"] == fi else None
                    finished[fi] = _train_fold(shared, fi, fold, state)
        finally:
            scalars.close()
    result = finish_run(folder, cfg, selection, [finished[i] for i in range(len(folds))],
                        warnings)
    folder.last.unlink(missing_ok=True)
    return result


def _score(metrics: dict, loss: float, main: str) -> list[float] | None:
    """Smaller is better: the main metric (sign-adjusted), then the loss; None if undefined."""
    value = metrics[main] if main in LOWER_IS_BETTER else -metrics[main]
    if not (math.isfinite(value) and math.isfinite(loss)):
        return None
    return [float(value), float(loss)]


def _epoch_line(fi, n_folds, fold, epoch, epochs, row, main, improved) -> str:
    text = f"fold {fi + 1}/{n_folds} ({fold}) epoch {epoch}/{epochs}: " \
           f"train loss {row['train_loss']:.4f}"
    if "val_loss" in row:
        text += f"  val loss {row['val_loss']:.4f}  val {main} {row['val_' + main]:.4f}"
        text += " *" if improved else ""
    return text + f"  lr {row['lr']:.3g}  {row['seconds']:.1f} s"


def _train_fold(sh: _Shared, fi: int, fold, state: dict | None) -> dict:
    cfg, sel, device = sh.cfg, sh.selection, sh.device
    cuda = device.type == "cuda"
    fold_seed = cfg.seed * 1000 + fi
    seed_all(fold_seed)
    if cfg.task == "regression":
        train_t = sel.targets[fold.train]
        t_mean, t_std = float(train_t.mean()), float(train_t.std()) or 1.0
    else:
        t_mean, t_std = 0.0, 1.0
    targets = (sh.targets - t_mean) / t_std
    model = build_model(cfg.model, cfg.arch, cfg.weights).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
        if hasattr(model, "channels_last"):
            model.channels_last = True
    n_batches = math.ceil(fold.train.size / cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=cfg.epochs * n_batches)
    loss_fn = loss_function(cfg.task)
    train_tf = BatchTransform(train=cfg.augment, size=cfg.size, seed=fold_seed,
                              representation=cfg.representation)
    eval_tf = BatchTransform(train=False, size=cfg.size)
    main = MAIN_METRIC[cfg.task]
    history, stale, start, seconds = [], 0, 0, 0.0
    best = {"epoch": 0, "score": None, "weights": None}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_states(state["rng"], train_tf.gen)
        history, best, stale, start = (state["history"], state["best"], state["stale_epochs"],
                                       state["epoch"])
        seconds = sum(row["seconds"] for row in history)
        sh.console.info(f"fold {fi + 1}/{sh.n_folds} ({fold.name}): resumed after epoch {start}")
    step_model = torch.compile(model) if cfg.compile else model
    amp, cl = cfg.amp, cfg.channels_last
    stem = sh.folder.record_path(fi, fold.name).stem
    sh.scalars.open_fold(stem, start + 1)
    error = None
    for epoch in range(start + 1, cfg.epochs + 1):
        if cfg.patience is not None and stale >= cfg.patience:
            sh.console.info(f"fold {fi + 1}/{sh.n_folds} ({fold.name}): no better validation "
                            f"{main} for {stale} epochs, stopping early")
            break
        t0 = time.monotonic()
        row = {"fold": fold.name, "epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        bar = sh.console.progress(f"fold {fi + 1}/{sh.n_folds} ({fold.name}) epoch "
                                  f"{epoch}/{cfg.epochs}", n_batches)
        rng = np.random.default_rng([cfg.seed, fi, epoch - 1])
        row["train_loss"] = train_one_epoch(
            step_model, sh.source.batches(fold.train, cfg.batch_size, True, rng), train_tf,
            optimizer, scheduler, loss_fn, targets, amp=amp, channels_last=cl, progress=bar)
        improved = False
        if fold.val.size and math.isfinite(row["train_loss"]):
            pos, raw, row["val_loss"] = evaluate(
                step_model, sh.source.batches(fold.val, cfg.batch_size), eval_tf, loss_fn,
                targets, amp=amp, channels_last=cl)
            vm = M.compute_metrics(cfg.task, sel.targets[pos],
                                   outputs_to_predictions(cfg.task, raw, t_mean, t_std))
            row.update({f"val_{k}": v for k, v in vm.items()})
            score = _score(vm, row["val_loss"], main)
            improved = score is not None and (best["score"] is None or score < best["score"])
            if improved:
                best = {"epoch": epoch, "score": score, "weights": weights_copy(model)}
            stale = 0 if improved else stale + 1
        if bar is not None:
            bar.clear()
        row["seconds"] = time.monotonic() - t0
        seconds += row["seconds"]
        history.append(row)
        sh.history.append(row)
        sh.scalars.epoch(row)
        if not math.isfinite(row["train_loss"]):
            error = (f"fold {fold.name}: the training loss is not finite at epoch {epoch} "
                     f"({row['train_loss']}); lower --lr, or check the labels")
            sh.console.warn(error)
            break
        sh.console.info(_epoch_line(fi, sh.n_folds, fold.name, epoch, cfg.epochs, row, main,
                                    improved))
        save_last(sh.folder.last, fold_index=fi, fold=fold.name, epoch=epoch, model=model,
                  optimizer=optimizer, scheduler=scheduler, transform_generator=train_tf.gen,
                  history=history, best=best, stale_epochs=stale)
    chosen = best["epoch"] if best["weights"] is not None else len(history)
    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    record = {"fold": fold.name, "index": fi, "n_train": int(fold.train.size),
              "n_val": int(fold.val.size), "n_test": int(fold.test.size),
              "epochs_run": len(history), "best_epoch": chosen, "history": history}
    positions = fold.test
    if error is None:
        positions, raw, _ = evaluate(step_model, sh.source.batches(fold.test, cfg.batch_size),
                                     eval_tf, amp=amp, channels_last=cl)
        pred = outputs_to_predictions(cfg.task, raw, t_mean, t_std)
        if not np.all(np.isfinite(pred)):
            error = f"fold {fold.name}: the model's predictions are not finite"
            sh.console.warn(error)
    else:
        pred = np.full(positions.size, np.nan)
    record.update(status="diverged" if error else "done", error=error,
                  metrics=M.compute_metrics(cfg.task, sel.targets[positions], pred),
                  checkpoint=None, positions=positions.tolist(), predictions=pred.tolist())
    if error is None:
        path = sh.folder.checkpoint_path(fi, fold.name)
        save_final(path, model.state_dict(), config=dataclasses.asdict(cfg), fold=fold.name,
                   epoch=chosen, target_mean=t_mean, target_std=t_std,
                   input_size=int(cfg.size or sh.source.size), param_hash=sh.param_hash,
                   test_subjects=sorted(set(sel.subjects[fold.test].tolist())),
                   train_items=sel.video_ids[fold.train].tolist())
        record["checkpoint"] = str(path.relative_to(sh.folder.path))
        sh.console.info(f"fold {fi + 1}/{sh.n_folds} ({fold.name}) done: {main} "
                        f"{record['metrics'][main]:.4f} on {fold.test.size} test items "
                        f"(epoch {chosen} of {len(history)})")
    record["seconds"] = seconds
    sh.folder.save_fold(fi, fold.name, record)
    return record
