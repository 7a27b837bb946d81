"""Run-folder plots drawn with matplotlib.

``learning_curves`` (loss per epoch, one line per series), ``scatter``
(predicted vs true, with the y = x line), ``confusion`` (2 x 2 counts and
the same normalised per true class, labelled), ``roc_curve`` and
``pr_curve`` (binary scores) and ``errorbar_plot`` (a metric along one
ablation axis). Each writes a PNG and returns its path.

Figures are :class:`matplotlib.figure.Figure` objects rendered by Agg
(:func:`ahdi.pipeline.figures.render_figure`), never pyplot, so a user's
backend and open figures stay as they are; matplotlib is imported inside
each function. Every file goes through
:func:`ahdi.pipeline.figures.save_png`, which raises an ``OSError`` naming
the file when it cannot be written.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from ahdi.pipeline.figures import render_figure, save_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

W, H, DPI = 640, 480, 100              # pixels, as the run folders always had


def _figure(title: str) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(W / DPI, H / DPI), dpi=DPI, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, parse_math=False)
    return fig, ax


def _legend(ax: Axes, **kwargs) -> None:
    """A legend whose names (axis values, run names) show as written, never as TeX."""
    for text in ax.legend(frameon=False, **kwargs).get_texts():
        text.set_parse_math(False)


def _write(fig: Figure, path: str | os.PathLike) -> str:
    """Render ``fig`` and write it as PNG; an OSError names the file on failure."""
    return save_png(path, render_figure(fig))


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """``[lo, hi]`` widened by 5 % (or around a single value), finite."""
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _learning_figure(series: dict[str, list[float]], title: str, ylabel: str) -> Figure:
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(title)
    for name, values in series.items():
        y = np.asarray(values, np.float64)
        ax.plot(np.arange(1, y.size + 1), y, marker="o", markersize=4, linewidth=2,
                label=str(name))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, integer=True))    # epochs are whole
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(color="#e6e6e6", linewidth=0.8)
    if series:
        _legend(ax)
    return fig


def learning_curves(series: dict[str, list[float]], path, title: str = "learning curves",
                    ylabel: str = "loss") -> str:
    """One line per named series over epochs 1..n.

    Parameters
    ----------
    series : dict of str to list of float
        Legend name -> value per epoch (NaN leaves a gap).
    path : str or PathLike
        PNG to write (parent folders are created).
    title, ylabel : str
        Figure title and y-axis label.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    return _write(_learning_figure(series, title, ylabel), path)


def _scatter_figure(y_true, y_pred, title: str) -> Figure:
    t = np.asarray(y_true, np.float64).reshape(-1)
    p = np.asarray(y_pred, np.float64).reshape(-1)
    both = np.concatenate([t, p])
    both = both[np.isfinite(both)]
    lo, hi = _padded(both.min(), both.max()) if both.size else (0.0, 1.0)
    fig, ax = _figure(title)
    ax.plot([lo, hi], [lo, hi], color="#969696", linewidth=1, label="y = x")
    ax.scatter(t, p, s=16, color="tab:blue", label="items")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.grid(color="#e6e6e6", linewidth=0.8)
    _legend(ax, loc="upper left")
    return fig


def scatter(y_true, y_pred, path, title: str = "predicted vs true") -> str:
    """Predicted against true values with the identity line.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    return _write(_scatter_figure(y_true, y_pred, title), path)


def _matrix_panel(ax: Axes, values: np.ndarray, texts: list[list[str]], vmax: float,
                  names, title: str) -> None:
    ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    for i in range(2):
        for j in range(2):
            # Dark cells get white digits so every number stays readable.
            dark = values[i, j] > 0.6 * vmax
            ax.text(j, i, texts[i][j], ha="center", va="center", fontsize=18,
                    color="white" if dark else "black")
    ax.set_xticks([0, 1], [f"pred {n}" for n in names[:2]], parse_math=False)
    ax.set_yticks([0, 1], [f"true {n}" for n in names[:2]], parse_math=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)


def _confusion_figure(y_true, y_label, title: str, names) -> Figure:
    from matplotlib.figure import Figure

    t = np.asarray(y_true).astype(bool)
    y = np.asarray(y_label).astype(bool)
    m = np.array([[np.sum(~t & ~y), np.sum(~t & y)], [np.sum(t & ~y), np.sum(t & y)]])
    rows = m.sum(axis=1, keepdims=True)
    # Each row divided by its true-class count: the diagonal is each class's recall.
    norm = np.divide(m, rows, out=np.zeros((2, 2)), where=rows > 0)
    fig = Figure(figsize=(W / DPI, H / DPI), dpi=DPI, facecolor="white", layout="constrained")
    fig.suptitle(title, fontsize=11)
    counts_ax, norm_ax = fig.subplots(1, 2)
    _matrix_panel(counts_ax, m, [[str(int(v)) for v in r] for r in m],
                  max(int(m.max()), 1), names, "counts")
    _matrix_panel(norm_ax, norm, [[f"{v:.0%}" for v in r] for r in norm], 1.0, names,
                  "normalised per true class")
    return fig


def confusion(y_true, y_label, path, title: str = "confusion matrix",
              names=("0", "1")) -> str:
    """2 x 2 confusion matrix, rows = true class, columns = predicted class.

    Two panels: the counts, and each row divided by its true-class count
    (the diagonal reads as the recall of each class).

    Parameters
    ----------
    y_true, y_label : array-like of bool
        True and predicted class of each item.
    path : str or PathLike
        PNG to write (parent folders are created).
    title : str
        Figure title.
    names : pair of str
        Names of class 0 and class 1, used in the tick labels.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    return _write(_confusion_figure(y_true, y_label, title, names), path)


def _curve_figure(x, y, title: str, xlabel: str, ylabel: str, label: str,
                  chance: tuple[list[float], list[float]] | None) -> Figure:
    fig, ax = _figure(title)
    if chance is not None:
        ax.plot(*chance, color="#969696", linewidth=1, linestyle="--", label="chance")
    ax.plot(np.asarray(x, np.float64), np.asarray(y, np.float64), color="tab:blue",
            linewidth=2, drawstyle="default", label=label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(color="#e6e6e6", linewidth=0.8)
    _legend(ax, loc="lower right")
    return fig


def roc_curve(fpr, tpr, path, *, auc: float, title: str = "ROC curve") -> str:
    """A receiver operating characteristic curve with the chance diagonal.

    Parameters
    ----------
    fpr, tpr : array-like of float
        False and true positive rates (``ahdi.train.metrics.roc_points``).
    path : str or PathLike
        PNG to write (parent folders are created).
    auc : float
        The area, shown in the legend.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    fig = _curve_figure(fpr, tpr, title, "false positive rate", "true positive rate",
                        f"AUC {auc:.3f}", ([0, 1], [0, 1]))
    return _write(fig, path)


def pr_curve(recall, precision, path, *, prevalence: float,
             title: str = "precision-recall curve") -> str:
    """Precision against recall, with the precision of guessing (the prevalence).

    Parameters
    ----------
    recall, precision : array-like of float
        From ``ahdi.train.metrics.pr_points``.
    path : str or PathLike
        PNG to write (parent folders are created).
    prevalence : float
        Fraction of positives: the precision a random score reaches.
    title : str
        Figure title.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    fig = _curve_figure(recall, precision, title, "recall", "precision", "model",
                        ([0, 1], [prevalence, prevalence]))
    return _write(fig, path)


def _errorbar_figure(series: dict[str, list[tuple[str, float, float]]], *, xlabel: str,
                     ylabel: str, title: str) -> Figure:
    fig, ax = _figure(title)
    xs = list(dict.fromkeys(str(x) for points in series.values() for x, _, _ in points))
    for k, (name, points) in enumerate(series.items()):
        shift = (k - (len(series) - 1) / 2) * 0.06      # keep bars of series apart
        kept = [(xs.index(str(x)) + shift, m, s if np.isfinite(s) else 0.0)
                for x, m, s in points if np.isfinite(m)]
        if not kept:
            continue
        pos, mean, std = (np.asarray(v, np.float64) for v in zip(*kept))
        ax.errorbar(pos, mean, yerr=std, marker="o", markersize=5, linewidth=1, capsize=4,
                    label=str(name)[:60])
    ax.set_xticks(range(len(xs)), [x[:14] for x in xs], parse_math=False)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(xlabel, parse_math=False)
    ax.set_ylabel(ylabel, parse_math=False)
    ax.grid(axis="y", color="#e6e6e6", linewidth=0.8)
    if series:
        _legend(ax, fontsize=8)
    return fig


def errorbar_plot(series: dict[str, list[tuple[str, float, float]]], path, *, xlabel: str,
                  ylabel: str, title: str) -> str:
    """Metric against the values of one axis: one line per series, error bars +- std.

    Parameters
    ----------
    series : dict of str to list of (str, float, float)
        Legend name -> ``[(x_value, mean, std), ...]``; the x values are
        categories, placed in order of first appearance. Points with a
        non-finite mean are left out; a non-finite std draws no bar.
    path : str or PathLike
        PNG to write (parent folders are created).
    xlabel, ylabel, title : str
        Axis labels and figure title.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    OSError
        The file cannot be written (the message names it).
    """
    return _write(_errorbar_figure(series, xlabel=xlabel, ylabel=ylabel, title=title), path)

