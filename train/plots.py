"""Run-folder plots drawn with OpenCV (no matplotlib).

``learning_curves`` (loss per epoch, one line per series), ``scatter``
(predicted vs true, with the y = x line) and ``confusion`` (2 x 2 counts).
Each writes a PNG and returns its path.
"""

from __future__ import annotations

import cv2
import numpy as np

W, H = 640, 480
L, R, T, B = 70, 20, 40, 55          # margins
COLOURS = [(200, 90, 30), (40, 140, 230), (60, 170, 60), (40, 40, 200), (150, 60, 150)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _canvas(title: str) -> np.ndarray:
    img = np.full((H, W, 3), 255, np.uint8)
    cv2.putText(img, title, (L, 25), FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


def _axes(img, xr, yr, xlabel, ylabel, xticks=None):
    x0, y0, x1, y1 = L, H - B, W - R, T
    cv2.rectangle(img, (x0, y1), (x1, y0), (0, 0, 0), 1)

    def px(x):
        return int(round(x0 + (x - xr[0]) / (xr[1] - xr[0]) * (x1 - x0)))

    def py(y):
        return int(round(y0 - (y - yr[0]) / (yr[1] - yr[0]) * (y0 - y1)))

    for v in (xticks if xticks is not None else np.linspace(xr[0], xr[1], 5)):
        cv2.line(img, (px(v), y0), (px(v), y0 + 4), (0, 0, 0), 1)
        cv2.putText(img, f"{v:.3g}", (px(v) - 12, y0 + 18), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for v in np.linspace(yr[0], yr[1], 5):
        cv2.line(img, (x0 - 4, py(v)), (x0, py(v)), (0, 0, 0), 1)
        cv2.putText(img, f"{v:.3g}", (5, py(v) + 4), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, ((x0 + x1) // 2 - 20, H - 12), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (5, T - 8), FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return px, py


def learning_curves(series: dict[str, list[float]], path, title: str = "learning curves",
                    ylabel: str = "loss") -> str:
    """One line per named series over epochs 1..n."""
    vals = np.array([v for s in series.values() for v in s if np.isfinite(v)], np.float64)
    n = max((len(s) for s in series.values()), default=1)
    yr = _nice_range(vals.min(), vals.max()) if vals.size else (0.0, 1.0)
    xr = (1.0, float(max(n, 2)))
    img = _canvas(title)
    ticks = np.unique(np.linspace(1, xr[1], min(n, 10)).round())
    px, py = _axes(img, xr, yr, "epoch", ylabel, xticks=ticks)
    for k, (name, s) in enumerate(series.items()):
        col = COLOURS[k % len(COLOURS)]
        pts = [(px(i + 1), py(v)) for i, v in enumerate(s) if np.isfinite(v)]
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(img, a, b, col, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(img, p, 3, col, -1, cv2.LINE_AA)
        cv2.putText(img, name, (W - R - 150, T + 20 + 18 * k), FONT, 0.5, col, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return str(path)


def scatter(y_true, y_pred, path, title: str = "predicted vs true") -> str:
    """Predicted against true values with the identity line."""
    t = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    both = np.concatenate([t, p])
    r = _nice_range(both.min(), both.max()) if both.size else (0.0, 1.0)
    img = _canvas(title)
    px, py = _axes(img, r, r, "true", "predicted")
    cv2.line(img, (px(r[0]), py(r[0])), (px(r[1]), py(r[1])), (150, 150, 150), 1, cv2.LINE_AA)
    for a, b in zip(t, p):
        cv2.circle(img, (px(a), py(b)), 3, COLOURS[0], -1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return str(path)


def confusion(y_true, y_label, path, title: str = "confusion matrix",
              names=("0", "1")) -> str:
    """2 x 2 confusion matrix, rows = true class, columns = predicted class."""
    t = np.asarray(y_true).astype(bool)
    y = np.asarray(y_label).astype(bool)
    m = np.array([[np.sum(~t & ~y), np.sum(~t & y)], [np.sum(t & ~y), np.sum(t & y)]])
    img = _canvas(title)
    cell = 160
    ox, oy = (W - 2 * cell) // 2 + 20, T + 60
    top = max(int(m.max()), 1)
    for i in range(2):
        for j in range(2):
            shade = int(255 - 180 * m[i, j] / top)
            x, y0 = ox + j * cell, oy + i * cell
            cv2.rectangle(img, (x, y0), (x + cell, y0 + cell), (255, shade, shade), -1)
            cv2.rectangle(img, (x, y0), (x + cell, y0 + cell), (0, 0, 0), 1)
            cv2.putText(img, str(int(m[i, j])), (x + cell // 2 - 15, y0 + cell // 2 + 8),
                        FONT, 0.9, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(img, f"true {names[i]}", (ox - 110, oy + i * cell + cell // 2),
                    FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"pred {names[i]}", (ox + i * cell + cell // 2 - 30, oy - 10),
                    FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return str(path)


def errorbar_plot(series: dict[str, list[tuple[str, float, float]]], path, *, xlabel: str,
                  ylabel: str, title: str) -> str:
    """Metric against the values of one axis: one line per series, error bars +- std.

    ``series`` maps a legend name to ``[(x_value, mean, std), ...]``; the
    x values are categories, placed in order of first appearance.
    """
    img = _canvas(title)
    xs = list(dict.fromkeys(x for points in series.values() for x, _, _ in points))
    lows = [m - s for pts in series.values() for _, m, s in pts if np.isfinite(m)]
    highs = [m + (s if np.isfinite(s) else 0) for pts in series.values()
             for _, m, s in pts if np.isfinite(m)]
    yr = _nice_range(min(lows, default=0.0), max(highs, default=1.0))
    xr = (-0.5, len(xs) - 0.5)
    px, py = _axes(img, xr, yr, xlabel, ylabel, xticks=[])
    for i, x in enumerate(xs):
        cv2.line(img, (px(i), H - B), (px(i), H - B + 4), (0, 0, 0), 1)
        cv2.putText(img, str(x)[:12], (px(i) - 4 * len(str(x)[:12]), H - B + 18), FONT, 0.4,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, points) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        shift = (k - (len(series) - 1) / 2) * 0.06      # keep bars of series apart
        pts = []
        for x, mean, std in points:
            if not np.isfinite(mean):
                continue
            cx, cy = px(xs.index(x) + shift), py(mean)
            if np.isfinite(std) and std > 0:
                cv2.line(img, (cx, py(mean - std)), (cx, py(mean + std)), colour, 1, cv2.LINE_AA)
                for yv in (mean - std, mean + std):
                    cv2.line(img, (cx - 4, py(yv)), (cx + 4, py(yv)), colour, 1, cv2.LINE_AA)
            cv2.circle(img, (cx, cy), 4, colour, -1, cv2.LINE_AA)
            pts.append((cx, cy))
        if len(pts) > 1:
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 1, cv2.LINE_AA)
        cv2.putText(img, name[:40], (L + 10, T + 18 + 16 * k), FONT, 0.42, colour, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)
    return str(path)
