"""The tables and plots of an ablation: results.csv, table.md and one PNG per swept axis.

:func:`write_outputs` turns the trained cells of :mod:`ahdi.pipeline.ablate`
into what a paper table needs: every fold of every cell (results.csv), mean
± std per cell with the folds and items it was scored on (table.md, best
values in bold, a cell with a diverged fold never ranked), and the main
metric against each swept axis.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ahdi.train.vocab import LOWER_IS_BETTER, MAIN_METRIC

if TYPE_CHECKING:
    from .ablate import Cell

__all__ = ["write_outputs"]


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def write_outputs(out: Path, cells: list[Cell], results: dict[Cell, dict], task: str) -> dict:
    """results.csv, table.md and one PNG per swept axis; returns the table rows.

    Each row carries the cell's folds, scored items and diverged folds; a
    cell with a diverged fold is never ranked (no bold, no plotted point).
    """
    axis_names = [k for k, _ in cells[0].values] if cells else []
    metric_names = list(next(iter(results.values()))["aggregate"]) if results else []
    rows = []
    for i, cell in enumerate(cells):
        result = results[cell]
        agg = result["aggregate"]
        rows.append({"cell": i, "values": dict(cell.values),
                     "n_folds": len(result["folds"]), "n_items": result["n_predictions"],
                     "n_diverged": len(result.get("diverged", [])),
                     "metrics": {m: (agg[m]["mean"], agg[m]["std"]) for m in metric_names},
                     "n": {m: agg[m]["n"] for m in metric_names}})
    _write_results_csv(out / "results.csv", cells, results, rows, axis_names, metric_names)
    best = _best_values(rows, metric_names)
    _write_table(out / "table.md", rows, best, axis_names, metric_names, task)
    _write_axis_plots(out, cells, rows, axis_names, task)
    return {"rows": rows, "best": best, "metrics": metric_names}


def _write_results_csv(path: Path, cells: list[Cell], results: dict[Cell, dict],
                       rows: list[dict], axis_names: list[str], metric_names: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["cell", *axis_names, "cell_folds", "cell_items", "fold", "status",
                         "n_test", *metric_names])
        for i, (cell, row) in enumerate(zip(cells, rows)):
            for fold in results[cell]["folds"]:
                writer.writerow([i, *[v for _, v in cell.values], row["n_folds"], row["n_items"],
                                 fold["fold"], fold.get("status", "done"), fold["n_test"],
                                 *[repr(float(fold["metrics"][m])) for m in metric_names]])


def _best_values(rows: list[dict], metric_names: list[str]) -> dict[str, float]:
    best = {}
    for m in metric_names:
        finite = [r["metrics"][m][0] for r in rows
                  if not r["n_diverged"] and math.isfinite(r["metrics"][m][0])]
        if finite:
            best[m] = min(finite) if m in LOWER_IS_BETTER else max(finite)
    return best


def _metric_text(row: dict, m: str, best: dict[str, float]) -> str:
    if row["n_diverged"]:
        return "diverged"
    mean, std = row["metrics"][m]
    text = _fmt(mean, std)
    if math.isfinite(mean) and row["n"][m] < row["n_folds"]:
        text += f" (n={row['n'][m]})"
    return f"**{text}**" if best.get(m) == mean else text


def _write_table(path: Path, rows: list[dict], best: dict[str, float], axis_names: list[str],
                 metric_names: list[str], task: str) -> None:
    lines = [f"| cell | {' | '.join(axis_names)} | folds | items | {' | '.join(metric_names)} |",
             "|" + "---|" * (3 + len(axis_names) + len(metric_names))]
    for r in rows:
        folds = f"{r['n_folds']} ({r['n_diverged']} diverged)" if r["n_diverged"] \
            else str(r["n_folds"])
        lines.append(f"| {r['cell']} | {' | '.join(str(v) for v in r['values'].values())} | "
                     f"{folds} | {r['n_items']} | "
                     f"{' | '.join(_metric_text(r, m, best) for m in metric_names)} |")
    lines += ["", f"Mean ± standard deviation over folds ({task}); `items`: held-out items "
                  f"scored, the same items in every cell. The best value of each metric in "
                  f"bold (lowest for {', '.join(sorted(LOWER_IS_BETTER))}, highest otherwise). "
                  f"(n=K): only K folds define the metric (e.g. AUC of a fold with one "
                  f"class). A cell with a diverged fold (non-finite loss or predictions) "
                  f"shows no value and is not ranked."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_axis_plots(out: Path, cells: list[Cell], rows: list[dict], axis_names: list[str],
                      task: str) -> None:
    """One PNG per swept axis: the main metric against the axis, a line per other setting."""
    from ahdi.train import plots

    primary = MAIN_METRIC[task]
    for axis in axis_names:
        if len({str(dict(c.values)[axis]) for c in cells}) < 2:
            continue
        series: dict[str, list[tuple[str, float, float]]] = {}
        for cell, r in zip(cells, rows):
            others = ", ".join(f"{k}={v}" for k, v in cell.values if k != axis) or primary
            mean, std = r["metrics"][primary] if not r["n_diverged"] else (math.nan, math.nan)
            series.setdefault(others, []).append((str(dict(cell.values)[axis]), mean, std))
        plots.errorbar_plot(series, out / f"axis_{axis}.png", xlabel=axis, ylabel=primary,
                            title=f"{primary} vs {axis} (bars: std over folds)")
