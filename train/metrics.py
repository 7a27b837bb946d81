"""Evaluation metrics, pure NumPy.

Regression: MAE, MSE, PCC, ICC(3,1). Binary: accuracy, balanced accuracy,
ROC AUC (rank formulation, ties get average ranks) and F1. A metric that
is undefined for the given data (one class only, constant predictions) is
``nan`` rather than an exception, so a fold with one class does not stop a
leave-one-subject-out run. Non-finite predictions (a diverged model) make
every metric ``nan``: a NaN probability is never read as "negative".
``aggregate`` keeps the two apart: a fold that diverged is counted in
``n_diverged``, a finished fold that cannot define a metric in
``n_undefined``.
"""

from __future__ import annotations

import math

import numpy as np

REGRESSION_METRICS = ("mae", "mse", "pcc", "icc")
BINARY_METRICS = ("accuracy", "balanced_accuracy", "auc", "f1")


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no values to score")
    return t, p


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def mse(y_true, y_pred) -> float:
    """Mean squared error."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def pcc(y_true, y_pred) -> float:
    """Pearson correlation; nan when either side is constant."""
    t, p = _pair(y_true, y_pred)
    dt, dp = t - t.mean(), p - p.mean()
    den = math.sqrt(float(np.sum(dt * dt)) * float(np.sum(dp * dp)))
    return float(np.sum(dt * dp) / den) if den > 0 else float("nan")


def icc31(y_true, y_pred) -> float:
    """ICC(3,1): two-way mixed, consistency, single rater (Shrout & Fleiss).

    The n targets x 2 "raters" (truth, prediction) table gives
    ``(MS_rows - MS_err) / (MS_rows + (k - 1) MS_err)`` with k = 2.
    """
    t, p = _pair(y_true, y_pred)
    x = np.stack([t, p], axis=1)
    n, k = x.shape
    if n < 2:
        return float("nan")
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((x - grand) ** 2) - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_err = ss_err / ((n - 1) * (k - 1))
    den = ms_rows + (k - 1) * ms_err
    return float((ms_rows - ms_err) / den) if den > 0 else float("nan")


def _binary_true(y_true) -> np.ndarray:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    if not np.all((t == 0) | (t == 1)):
        raise ValueError("binary targets must be 0 or 1")
    return t.astype(bool)


def accuracy(y_true, y_label) -> float:
    t = _binary_true(y_true)
    return float(np.mean(t == np.asarray(y_label).astype(bool).ravel()))


def balanced_accuracy(y_true, y_label) -> float:
    """Mean of the recalls of the classes present."""
    t = _binary_true(y_true)
    y = np.asarray(y_label).astype(bool).ravel()
    recalls = [float(np.mean(y[t == c] == c)) for c in (False, True) if np.any(t == c)]
    return float(np.mean(recalls))


def f1(y_true, y_label) -> float:
    """F1 of the positive class; 0 when nothing is predicted or true positive."""
    t = _binary_true(y_true)
    y = np.asarray(y_label).astype(bool).ravel()
    tp = float(np.sum(t & y))
    den = 2 * tp + float(np.sum(~t & y)) + float(np.sum(t & ~y))
    return 2 * tp / den if den > 0 else 0.0


def average_ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start of each run of equal values
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    run_rank = (starts + ends + 1) / 2.0          # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(y_true, y_score) -> float:
    """ROC AUC via the Mann-Whitney U statistic; nan with one class only."""
    t = _binary_true(y_true)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(y_score)
    u = r[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    return {"mae": mae(y_true, y_pred), "mse": mse(y_true, y_pred),
            "pcc": pcc(y_true, y_pred), "icc": icc31(y_true, y_pred)}


def binary_metrics(y_true, y_prob, threshold: float = 0.5) -> dict[str, float]:
    """Binary metrics from positive-class probabilities."""
    prob = np.asarray(y_prob, dtype=np.float64).ravel()
    label = prob >= threshold
    return {"accuracy": accuracy(y_true, label),
            "balanced_accuracy": balanced_accuracy(y_true, label),
            "auc": roc_auc(y_true, prob), "f1": f1(y_true, label)}


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics ``compute_metrics`` gives for ``task``, in order."""
    if task == "regression":
        return REGRESSION_METRICS
    if task == "binary":
        return BINARY_METRICS
    raise ValueError(f"unknown task {task!r}; expected 'regression' or 'binary'")


def compute_metrics(task: str, y_true, y_pred) -> dict[str, float]:
    """Metrics of ``task`` ('regression' or 'binary'; y_pred = probability).

    Any non-finite prediction makes every metric ``nan``: the model that
    made it diverged, and no part of its output is a score.
    """
    names = metric_names(task)
    if not np.all(np.isfinite(np.asarray(y_pred, dtype=np.float64))):
        return {name: float("nan") for name in names}
    if task == "regression":
        return regression_metrics(y_true, y_pred)
    return binary_metrics(y_true, y_pred)


def aggregate(per_fold: list[dict[str, float]],
              diverged: list[bool] | None = None) -> dict[str, dict[str, float]]:
    """``{metric: {'mean', 'std', 'n', 'n_undefined', 'n_diverged'}}`` over folds.

    Parameters
    ----------
    per_fold : list of dict
        Each fold's metrics.
    diverged : list of bool, optional
        Which folds diverged (their metrics are all undefined); default none.

    Returns
    -------
    dict
        ``mean`` and ``std`` (population, ddof=0) over the ``n`` folds that
        define the metric; ``n_undefined`` finished folds could not define
        it (AUC of a fold with one class); ``n_diverged`` folds diverged.
        A caller ranking results must not rank a result with
        ``n_diverged > 0``.
    """
    diverged = list(diverged) if diverged is not None else [False] * len(per_fold)
    if len(diverged) != len(per_fold):
        raise ValueError(f"{len(per_fold)} folds but {len(diverged)} diverged flags")
    names = [k for k in per_fold[0]] if per_fold else []
    out = {}
    for name in names:
        v = np.array([f[name] for f, bad in zip(per_fold, diverged) if not bad],
                     dtype=np.float64)
        ok = v[np.isfinite(v)]
        out[name] = {"mean": float(ok.mean()) if ok.size else float("nan"),
                     "std": float(ok.std()) if ok.size else float("nan"),
                     "n": int(ok.size), "n_undefined": int(v.size - ok.size),
                     "n_diverged": int(sum(diverged))}
    return out


def roc_points(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct threshold, from (0, 0).

    Ties in the scores move both rates at once (a diagonal step), as the
    Mann-Whitney AUC counts them; the area under these points is
    :func:`roc_auc`.
    """
    t = _binary_true(y_true)
    s = np.asarray(y_score, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_run = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last_of_run]
    fp = np.cumsum(~t)[last_of_run]
    n_pos, n_neg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def pr_points(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, highest threshold first."""
    t = _binary_true(y_true)
    s = np.asarray(y_score, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_run = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(t)[last_of_run].astype(np.float64)
    predicted = np.flatnonzero(last_of_run) + 1.0
    return tp / max(int(t.sum()), 1), tp / predicted
