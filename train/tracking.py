"""What a run shows and records while it trains, epoch by epoch.

* :class:`Console`: on a terminal a progress bar redrawn in place during
  each epoch; otherwise (a log file, a pipe, ``ahdi ablate``) one plain
  line per epoch. Warnings are always shown.
* :class:`History`: ``history.csv``, one row per fold and epoch, appended
  and flushed as each epoch ends (``tail -f`` shows it).
* :class:`Scalars`: TensorBoard event files, one folder per fold under
  ``tensorboard/`` (``tensorboard --logdir RUN_DIR/tensorboard``).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

from .metrics import metric_names


class Progress:
    """A one-line bar on a terminal, redrawn at most 5 times a second."""

    def __init__(self, total: int, label: str, stream):
        self.total, self.label, self.stream = total, label, stream
        self.t0 = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done < self.total:
            return
        self.last = now
        width = 24
        fill = int(width * done / max(self.total, 1))
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                          f"{done}/{self.total} {now - self.t0:.1f}s")
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


class Console:
    """Where a run's progress lines and warnings go.

    Parameters
    ----------
    enabled : bool
        Show progress (bars, epoch lines); warnings show regardless.
    stream : file, optional
        Default ``sys.stderr``.
    prefix : str
        Put before every line (``ahdi ablate`` names the cell).
    sink : callable, optional
        Receives each line instead of the stream (no bars then).
    """

    def __init__(self, enabled: bool = True, stream=None, prefix: str = "",
                 sink: Callable[[str], None] | None = None):
        self.enabled, self.prefix, self.sink = enabled, prefix, sink
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = sink is None and bool(isatty and isatty())

    def _emit(self, line: str) -> None:
        if self.sink is not None:
            self.sink(line)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def progress(self, label: str, total: int) -> Progress | None:
        """A bar for one epoch, only on a terminal."""
        if self.enabled and self.tty:
            return Progress(total, self.prefix + label, self.stream)
        return None

    def info(self, text: str) -> None:
        if self.enabled:
            self._emit(self.prefix + text)

    def warn(self, text: str) -> None:
        self._emit(f"warning: {self.prefix}{text}")


def history_columns(task: str) -> list[str]:
    """The columns of history.csv for ``task``."""
    return (["fold", "epoch", "train_loss", "val_loss"]
            + [f"val_{m}" for m in metric_names(task)] + ["lr", "seconds"])


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class History:
    """history.csv: rewritten from ``rows`` when opened, appended per epoch after."""

    def __init__(self, path: str | os.PathLike, task: str, rows: list[dict] = ()):
        self.path = Path(path)
        self.columns = history_columns(task)
        with open(self.path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in self.columns])

    def append(self, row: dict) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerow([_cell(row.get(c)) for c in self.columns])
            fh.flush()


_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "lr": "lr", "seconds": "seconds"}


class Scalars:
    """TensorBoard event files, one writer per fold; nothing when tensorboard is missing."""

    def __init__(self, folder: str | os.PathLike, console: Console):
        self.folder = Path(folder)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            console.warn("tensorboard is not installed, so no event files are written "
                         "(pip install tensorboard, or the `train` extra)")
            self._writer_class = None
        else:
            self._writer_class = SummaryWriter

    def open_fold(self, name: str, first_epoch: int) -> None:
        """Start fold ``name``; events from ``first_epoch`` on (a resumed run's) are replaced."""
        self.close()
        if self._writer_class is not None:
            self.writer = self._writer_class(str(self.folder / name), purge_step=first_epoch)

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            tag = _TAGS.get(key) or (f"val/{key[4:]}" if key.startswith("val_") else None)
            if tag is not None and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
