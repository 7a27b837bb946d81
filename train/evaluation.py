"""Applying trained models to the items of a store: ``ahdi evaluate``.

``evaluate_checkpoint(checkpoint, store, out)`` takes one checkpoint file,
or a finished run folder (every fold model it lists, their predictions
averaged), and writes ``predictions.csv``, ``metrics.json`` (with metrics
when the store has the training label), ``config.json`` and the plots to
``out``, a folder of its own: never the run folder it reads.

An item a fold model trained on is no held-out item: the command warns,
naming the count, when the evaluated store holds such items (matched by
video id, as recorded in each checkpoint).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ahdi.pipeline.errors import SettingError

from . import metrics as M
from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig
from .data import BatchTransform, DataError, ImageSource, NoLabelValuesError, Selection, \
    select_items
from .loop import describe_device, evaluate, outputs_to_predictions, resolve_device
from .models import build_model
from .outputs import class_names, result_plots, write_predictions
from .runfolder import RunFolder, read_json, write_json


def checkpoint_files(checkpoint) -> tuple[list[Path], Path | None]:
    """The checkpoints to apply, and the run folder they come from (None: loose files).

    Raises
    ------
    CheckpointError
        Nothing to apply: no such file, an unfinished run, a folder without
        checkpoints.
    """
    p = Path(checkpoint)
    if p.is_dir():
        run = RunFolder(p)
        if not run.is_run():
            files = sorted(p.glob("*.pt"))
            if not files:
                raise CheckpointError(f"no checkpoints (*.pt) in {p}, and it is not a run folder")
            return files, None
        if not run.is_finished():
            raise CheckpointError(f"{p} is an unfinished run (no metrics.json): resume it with "
                                  f"`ahdi train --resume {p}`, or give one of its checkpoint "
                                  f"files")
        folds = read_json(run.metrics)["folds"]
        files = [p / f["checkpoint"] for f in folds if f.get("checkpoint")]
        if not files:
            raise CheckpointError(f"{p}: no fold of this run finished with a model "
                                  f"(every fold diverged)")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{p}: checkpoint(s) listed in metrics.json are missing: "
                                  f"{', '.join(missing[:3])}")
        return files, p
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    owner = p.parent.parent
    return [p], owner if p.parent.name == "checkpoints" and RunFolder(owner).is_run() else None


def _check_out(out: Path, run: Path | None) -> None:
    """``out`` must be a folder of its own: not inside the run read, not a training run."""
    target = out.resolve()
    if run is not None:
        source = run.resolve()
        if target == source or source in target.parents:
            raise SettingError(f"--out {out} is inside the run folder {run} being evaluated; "
                               f"evaluate writes to a folder of its own")
    if RunFolder(out).is_run():
        raise SettingError(f"--out {out} holds a training run; choose another folder")


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


def _seen_in_training(selection: Selection, ckpts: list[dict]) -> str | None:
    """A warning when evaluated items were in a fold model's training set."""
    ids = set(selection.video_ids.tolist())
    trained = [ids & set(ck.get("train_items", [])) for ck in ckpts]
    seen = set().union(*trained)
    if not seen:
        return None
    models = sum(1 for t in trained if t)
    return (f"{len(seen)} of the {len(ids)} evaluated items were in the training set of "
            f"{models} of the {len(ckpts)} fold model(s) (same video id); their predictions "
            f"are not held-out")


def evaluate_checkpoint(checkpoint, store_path, out, *, batch_size: int = 64,
                        device: str = "auto", progress: bool = True, store=None) -> dict:
    """Apply a trained model to the done items of another store.

    Parameters
    ----------
    checkpoint : path
        One checkpoint file, or a finished run folder (its fold models'
        predictions are averaged).
    store_path : path
        The store to apply it to.
    out : path
        The folder for the outputs; not the run folder read.
    batch_size, device, progress :
        How to run; ``progress`` prints a line per model.
    store : Store, optional
        An open store instead of ``store_path``.

    Returns
    -------
    dict
        metrics.json's content: ``metrics`` when the store has the label,
        ``warnings`` (e.g. items seen in training).
    """
    files, run = checkpoint_files(checkpoint)
    out = Path(out)
    _check_out(out, run)
    dev = resolve_device(device)
    ckpts = [load_checkpoint(f) for f in files]
    cfg = TrainConfig(**ckpts[0]["config"])
    if store is None:
        from ahdi.pipeline.store import open_store
        store = open_store(store_path)
    sel = None
    if cfg.label in list(store.label_names):
        try:
            sel = select_items(store, cfg.label, cfg.task, cfg.positive, cfg.representation)
        except NoLabelValuesError:
            sel = None
    has_label = sel is not None
    if sel is None:
        sel = _unlabelled_selection(store, cfg.representation)
    out.mkdir(parents=True, exist_ok=True)
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
    write_predictions(out / "predictions.csv", sel,
                      [(p, "applied", pred[p]) for p in positions])
    result = {"task": cfg.task, "label": cfg.label, "checkpoints": [str(f) for f in files],
              "store": str(Path(store_path).resolve()), "store_param_hash": store.param_hash,
              "train_param_hash": ckpts[0].get("store_param_hash"),
              "n_predictions": int(len(sel)), "warnings": []}
    if store.param_hash != result["train_param_hash"]:
        result["warnings"].append("the store was converted with other parameters than the "
                                  "training store; predictions may be off")
    seen = _seen_in_training(sel, ckpts)
    if seen:
        result["warnings"].append(seen)
    if has_label:
        result["metrics"] = M.compute_metrics(cfg.task, sel.targets, pred)
    result["plots"] = result_plots(out, cfg.task, sel.targets, pred,
                                   class_names(cfg.label, cfg.positive))
    write_json(out / "metrics.json", result)
    write_json(out / "config.json", {"checkpoint": [str(f) for f in files],
                                     "store": result["store"], "train_config": ckpts[0]["config"],
                                     "batch_size": batch_size,
                                     "device_used": describe_device(dev)})
    return result
