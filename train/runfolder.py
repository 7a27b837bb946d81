"""A run folder belongs to one run: created new, cleared on request, or resumed.

Layout (``R`` = the ``--out`` folder)::

    config.json          the settings, store, device and versions (written first)
    history.csv          one row per fold and epoch, appended as each epoch ends
    tensorboard/NAME/    TensorBoard event files of fold NAME
    last.pt              the unfinished fold's state after its last epoch (resume)
    folds/foldNN-NAME.json   a finished fold: its metrics, history and predictions
    checkpoints/foldNN-NAME.pt   a finished fold's weights
    predictions.csv, folds.csv, metrics.json, *.png   written when every fold is done

``metrics.json`` is written last: a folder with it is a finished run. A
fold's JSON record is written after its checkpoint, so a record always
has its weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ahdi.pipeline.errors import AhdiError

from .checkpoint import remove_stale_temporaries


class RunFolderError(AhdiError):
    """A run folder that cannot be used as asked (exists, is not a run, is finished)."""


def safe_name(name: str) -> str:
    """A fold name as a file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class RunFolder:
    """The files of one training run under ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.metrics = self.path / "metrics.json"
        self.last = self.path / "last.pt"
        self.history = self.path / "history.csv"
        self.checkpoints = self.path / "checkpoints"
        self.folds = self.path / "folds"
        self.tensorboard = self.path / "tensorboard"

    # -- what the folder is -------------------------------------------------
    def is_run(self) -> bool:
        """Whether the folder holds a training run (its config.json says so)."""
        try:
            config = read_json(self.config)
        except (OSError, ValueError):
            return False
        return isinstance(config, dict) and "protocol" in config and "label" in config

    def is_finished(self) -> bool:
        return self.is_run() and self.metrics.is_file()

    def _is_empty(self) -> bool:
        return not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir()))

    # -- starting ---------------------------------------------------------------
    def prepare(self, *, resume: bool = False, overwrite: bool = False) -> None:
        """Make the folder ready for a new run, or check that it can be resumed.

        Raises
        ------
        RunFolderError
            A new run's folder already holds a run (or other files); a
            resumed folder holds no run, or a finished one.
        """
        if resume and overwrite:
            raise RunFolderError(f"{self.path}: --resume and --overwrite exclude each other")
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.path} is a file, not a run folder")
        if resume:
            if not self.is_run():
                raise RunFolderError(f"{self.path} holds no run to resume (no config.json of "
                                     f"`ahdi train`)")
            if self.is_finished():
                raise RunFolderError(f"{self.path} is a finished run (it has metrics.json): "
                                     f"nothing to resume; pass --overwrite to train it again")
            for folder in (self.checkpoints, self.folds):
                folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
            remove_stale_temporaries(self.checkpoints)
            remove_stale_temporaries(self.folds)
            return
        if not self._is_empty():
            if not self.is_run():
                raise RunFolderError(f"{self.path} exists and is not an ahdi run folder; "
                                     f"choose another --out")
            if not overwrite:
                raise RunFolderError(f"{self.path} already holds a run; pass --resume "
                                     f"{self.path} to continue it, or --overwrite to replace it")
            shutil.rmtree(self.path)
        for folder in (self.path, self.checkpoints, self.folds):
            folder.mkdir(parents=True, exist_ok=True)

    # -- finished folds ---------------------------------------------------------
    def _fold_stem(self, index: int, name: str) -> str:
        return f"fold{index + 1:02d}-{safe_name(name)}"

    def checkpoint_path(self, index: int, name: str) -> Path:
        return self.checkpoints / f"{self._fold_stem(index, name)}.pt"

    def record_path(self, index: int, name: str) -> Path:
        return self.folds / f"{self._fold_stem(index, name)}.json"

    def save_fold(self, index: int, name: str, record: dict) -> None:
        """Mark fold ``index`` finished (its checkpoint must be written already)."""
        write_json(self.record_path(index, name), record)
        self.last.unlink(missing_ok=True)

    def finished_folds(self, names: list[str]) -> dict[int, dict]:
        """The records of the folds (of ``names``, by index) already finished."""
        done = {}
        for i, name in enumerate(names):
            path = self.record_path(i, name)
            if path.is_file():
                done[i] = read_json(path)
        return done
