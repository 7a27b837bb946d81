"""What a finished run leaves for the researcher: tables, predictions, plots, metrics.json.

``finish_run`` turns the fold records into

* ``predictions.csv``: ``item, subject, fold, target, prediction`` (binary:
  probability of class 1; empty for a fold that diverged);
* ``folds.csv``: one row per fold (status, sizes, epochs, chosen epoch,
  every metric, seconds), the table the command prints;
* ``curves/foldNN-NAME.png`` (each fold's learning curves) and
  ``learning_curves.png`` (the mean over folds);
* ``scatter.png`` (regression), or ``confusion.png``, ``roc.png`` and
  ``precision_recall.png`` (binary), over every held-out prediction;
* ``metrics.json``, written last: a folder with it is a finished run.

The figure a run reports is the mean ± std over folds of each metric
(``aggregate``); ``pooled`` (every held-out prediction scored together)
is kept beside it, for AUC when single folds hold one class.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from . import metrics as M
from . import plots
from .runfolder import RunFolder, write_json
from .vocab import MAIN_METRIC

FOLD_COLUMNS = ("fold", "status", "n_train", "n_val", "n_test", "epochs_run", "best_epoch")


def class_names(label: str, positive: str | None) -> tuple[str, str]:
    """How the two classes of a binary task are called in plots."""
    if positive is not None:
        return f"not {positive}", str(positive)
    return f"{label}=0", f"{label}=1"


def _number(value) -> str:
    value = float(value)
    return "" if not np.isfinite(value) else f"{value:.6g}"


def write_predictions(path: Path, selection, rows) -> None:
    """rows: iterable of (position, fold, prediction)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item", "subject", "fold", "target", "prediction"])
        for p, fold, pred in rows:
            writer.writerow([selection.video_ids[p], selection.subjects[p], fold,
                             _number(selection.targets[p]), _number(pred)])


def fold_summary(record: dict) -> dict:
    """A fold record without its predictions (metrics.json's ``folds`` entry)."""
    return {k: v for k, v in record.items() if k not in ("positions", "predictions")}


def fold_table_rows(folds: list[dict], task: str) -> list[dict]:
    """One plain row per fold: its sizes, epochs, every metric and seconds."""
    rows = []
    for f in folds:
        row = {c: f.get(c, "") for c in FOLD_COLUMNS}
        row.update({m: f["metrics"][m] for m in M.metric_names(task)})
        row["seconds"] = f.get("seconds", float("nan"))
        rows.append(row)
    return rows


def write_folds_csv(path: Path, folds: list[dict], task: str) -> None:
    rows = fold_table_rows(folds, task)
    columns = [*FOLD_COLUMNS, *M.metric_names(task), "seconds"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_number(row[c]) if isinstance(row[c], float) else row[c]
                             for c in columns])


def format_fold_table(folds: list[dict], task: str) -> str:
    """The per-fold table the command prints at the end of a run."""
    names = M.metric_names(task)
    width = max([4, *(len(str(f["fold"])) for f in folds)])
    head = (f"{'fold':<{width}}  {'status':<8} {'train':>5} {'val':>4} {'test':>4} "
            f"{'epoch':>5}  " + "  ".join(f"{m:>8}" for m in names))
    lines = [head]
    for row in fold_table_rows(folds, task):
        chosen = row["best_epoch"] if row["status"] == "done" else "-"
        values = "  ".join(f"{row[m]:8.4f}" if np.isfinite(row[m]) else f"{'-':>8}"
                           for m in names)
        lines.append(f"{str(row['fold']):<{width}}  {row['status']:<8} {row['n_train']:>5} "
                     f"{row['n_val']:>4} {row['n_test']:>4} {chosen!s:>5}  {values}")
    return "\n".join(lines)


def format_aggregate(result: dict) -> str:
    """Mean ± std over folds of each metric, with how many folds define it."""
    agg = result["aggregate"]
    n_folds = len(result["folds"])
    lines = [f"held-out metrics, mean ± std over folds ({n_folds} folds, "
             f"{result['n_predictions']} items):"]
    for name, v in agg.items():
        note = [f"n={v['n']}"] if v["n"] < n_folds else []
        if v["n_diverged"]:
            note.append(f"{v['n_diverged']} diverged")
        mean = f"{v['mean']:.4f} ± {v['std']:.4f}" if np.isfinite(v["mean"]) else "undefined"
        lines.append(f"  {name:<18} {mean}" + (f"  ({', '.join(note)})" if note else ""))
    return "\n".join(lines)


def result_plots(out: Path, task: str, y_true, y_pred, names) -> list[str]:
    """scatter.png (regression) or confusion, ROC and precision-recall (binary)."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if not t.size:
        return []
    if task == "regression":
        return [plots.scatter(t, p, out / "scatter.png")]
    made = [plots.confusion(t, p >= 0.5, out / "confusion.png", names=names)]
    if 0 < t.sum() < t.size:        # both classes: the curves are defined
        fpr, tpr = M.roc_points(t, p)
        made.append(plots.roc_curve(fpr, tpr, out / "roc.png", auc=M.roc_auc(t, p)))
        recall, precision = M.pr_points(t, p)
        made.append(plots.pr_curve(recall, precision, out / "precision_recall.png",
                                   prevalence=float(t.mean())))
    return made


def _series(history: list[dict], key: str) -> list[float]:
    return [float(row[key]) if row.get(key) is not None else float("nan") for row in history]


def curve_plots(folder: RunFolder, records: list[dict]) -> list[str]:
    """Learning curves of each fold, and their mean over folds."""
    made = []
    (folder.path / "curves").mkdir(exist_ok=True)
    means: dict[str, list[list[float]]] = {"train": [], "validation": []}
    for r in records:
        series = {"train": _series(r["history"], "train_loss")}
        if r["n_val"]:
            series["validation"] = _series(r["history"], "val_loss")
        path = folder.path / "curves" / folder.record_path(r["index"], r["fold"]).with_suffix(
            ".png").name
        made.append(plots.learning_curves(series, path, title=f"loss per epoch, fold {r['fold']}"))
        for key, values in series.items():
            means[key].append(values)
    means = {k: _nanmean_ragged(v) for k, v in means.items() if v}
    if means:
        made.append(plots.learning_curves(means, folder.path / "learning_curves.png",
                                          title="loss per epoch (mean over folds)"))
    return made


def _nanmean_ragged(rows: list[list[float]]) -> list[float]:
    """Mean per epoch over folds of different lengths (early stopping)."""
    n = max(len(r) for r in rows)
    table = np.full((len(rows), n), np.nan)
    for i, r in enumerate(rows):
        table[i, :len(r)] = r
    with np.errstate(all="ignore"):
        counts = np.isfinite(table).sum(axis=0)
        sums = np.nansum(table, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).tolist()


def finish_run(folder: RunFolder, cfg, selection, records: list[dict],
               warnings: list[str]) -> dict:
    """Write every output of a finished run; returns metrics.json's content."""
    rows = sorted(((p, r["fold"], pred) for r in records
                   for p, pred in zip(r["positions"], r["predictions"])),
                  key=lambda row: (row[1], row[0]))
    write_predictions(folder.path / "predictions.csv", selection, rows)
    done = [r for r in records if r["status"] == "done"]
    pos = np.array([p for r in done for p in r["positions"]], np.int64)
    pred = np.array([p for r in done for p in r["predictions"]], np.float64)
    summaries = [fold_summary(r) for r in records]
    result = {
        "task": cfg.task, "label": cfg.label, "protocol": cfg.protocol,
        "main_metric": MAIN_METRIC[cfg.task],
        "folds": summaries,
        "aggregate": M.aggregate([r["metrics"] for r in records],
                                 [r["status"] == "diverged" for r in records]),
        "pooled": (M.compute_metrics(cfg.task, selection.targets[pos], pred) if pos.size
                   else {m: float("nan") for m in M.metric_names(cfg.task)}),
        "n_predictions": int(pos.size),
        "diverged": [{"fold": r["fold"], "error": r["error"]} for r in records
                     if r["status"] == "diverged"],
        "warnings": list(warnings)}
    write_folds_csv(folder.path / "folds.csv", summaries, cfg.task)
    names = class_names(cfg.label, cfg.positive)
    result["plots"] = (curve_plots(folder, records)
                       + result_plots(folder.path, cfg.task, selection.targets[pos], pred, names))
    write_json(folder.metrics, result)
    return result
