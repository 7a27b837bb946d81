"""`ahdi ablate`: the paper's comparison tables on any labelled dataset.

A grid file names the axes to sweep; every combination is a *cell*. Each
distinct conversion parameter set is converted once (through the same Dask
graph as ``ahdi convert``) into ``DIR/stores/<param_hash>.zarr``, reused
whenever it already exists, and every cell is trained and evaluated with
the same folds and seeds into ``DIR/cells/<key>/``. A cell whose run folder
holds a finished ``metrics.json`` is not redone, an unfinished one resumes
from its last epoch, and a grown grid costs only its new cells.

Every cell is trained and scored on the same items: those done in every
store of the grid (a parameter set can fail videos another one converts,
e.g. ``fixed:5`` windows beyond ``max_windows``); the counts are printed.
A cell with a diverged fold is shown but never ranked.

Grid file (YAML)::

    representation: [mean, flow, sdi, ahdi]     # axes: any of these keys
    patch: [3, 5, 9]                             # ... or any AhdiParams field
    segmentation: [fixed:5, fixed:10, adaptive]
    level2: [weighted, arp]
    model: [single, mdv:avg, mdv:attention]
    params: {size: 112, crop: face}              # conversion settings of every cell
    train: {epochs: 10, arch: resnet18, batch_size: 32}   # training settings of every cell
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ahdi.kernels import REPRESENTATIONS, AhdiParams

from ahdi.train.vocab import MODELS, default_representation

from .ablation_tables import write_outputs
from .errors import GridError
from .files import read_yaml

#: The paper's grids, shipped with the package (``--grid table3_patch``).
GRIDS_DIR = Path(__file__).parent / "grids"
TRAIN_AXES = ("representation", "model")
PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(AhdiParams))
# What each baseline image depends on: cells that differ only in other
# parameters (patch, segmentation, ...) share one trained baseline result.
BASELINE_FIELDS = {
    "sdi": ("size", "crop", "normalize"),
    "mean": ("size", "crop"),
    "flow": ("size", "crop", "flow_side", "farneback"),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One combination of axis values."""

    values: tuple[tuple[str, Any], ...]      # (axis, value) in the grid's axis order
    params: AhdiParams
    representation: str
    model: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values) or "base"

    def train_key(self) -> str:
        """Cells with equal keys train the same model on the same images."""
        if self.representation in BASELINE_FIELDS:
            relevant = {k: self.params.to_dict()[k] for k in BASELINE_FIELDS[self.representation]}
        else:
            relevant = self.params.to_dict()
        blob = json.dumps([relevant, self.representation, self.model], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _axis_value_params(axis: str, value: Any, where: str) -> dict[str, Any]:
    if axis == "segmentation":
        text = str(value)
        if text == "adaptive":
            return {"segmentation": "adaptive"}
        if text.startswith("fixed:"):
            try:
                return {"segmentation": "fixed", "segment_len": int(text.split(":", 1)[1])}
            except ValueError:
                pass
        raise GridError(f"{where}: segmentation values are 'adaptive' or 'fixed:N', got {value!r}")
    return {axis: value}


def load_grid(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a grid file; returns {'axes': {...}, 'params': {...}, 'train': {...}}."""
    path = str(path)
    raw = read_yaml(path, "grid file", GridError) or {}
    if not isinstance(raw, dict):
        raise GridError(f"{path}: expected a mapping of axis: [values]")
    axes = dict(raw.pop("axes", {}) or {})
    base = dict(raw.pop("params", {}) or {})
    train = dict(raw.pop("train", {}) or {})
    for key, values in raw.items():
        if key not in TRAIN_AXES and key not in PARAM_FIELDS:
            raise GridError(f"{path}: unknown axis {key!r}; axes are {', '.join(TRAIN_AXES)} "
                            f"or a conversion parameter ({', '.join(PARAM_FIELDS)}), and "
                            f"'params'/'train' hold shared settings")
        axes[key] = values
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{path}: axis {key!r} needs a non-empty list of values")
        if len(set(map(str, values))) != len(values):
            raise GridError(f"{path}: axis {key!r} repeats a value")
    unknown = sorted(set(base) - set(PARAM_FIELDS))
    if unknown:
        raise GridError(f"{path}: unknown conversion parameter(s) in params: {', '.join(unknown)}")
    return {"axes": axes, "params": base, "train": train, "path": path}


def expand_cells(grid: dict[str, Any]) -> list[Cell]:
    """Every combination of axis values, validated."""
    axes = grid["axes"]
    names = list(axes)
    cells = []
    for combo in itertools.product(*(axes[n] for n in names)):
        values = tuple(zip(names, combo))
        params = dict(grid["params"])
        representation, model = "ahdi", "single"
        for axis, value in values:
            if axis == "representation":
                representation = str(value)
            elif axis == "model":
                model = str(value)
            else:
                params.update(_axis_value_params(axis, value, grid["path"]))
        if representation not in REPRESENTATIONS:
            raise GridError(f"{grid['path']}: representation {representation!r} is not one of "
                            f"{', '.join(REPRESENTATIONS)}")
        if model not in MODELS:
            raise GridError(f"{grid['path']}: model {model!r} is not one of {', '.join(MODELS)}")
        if model != "single":
            representation = default_representation(model)
        try:
            cell_params = AhdiParams.from_dict(params)
        except (TypeError, ValueError) as exc:
            raise GridError(f"{grid['path']}: cell {dict(values)}: {exc}") from exc
        cells.append(Cell(values, cell_params, representation, model))
    return cells


def store_fingerprint(store_path: Path, label: str) -> str:
    """What a trained cell saw of its store: the done items, their subjects and labels.

    A rerun may convert items that failed before, or take an edited labels
    CSV; a cell trained on the old content must not be reused then.
    """
    from ahdi.pipeline.store import open_store

    store = open_store(store_path)
    done = store.statuses() == "done"
    labels = store.labels()
    column = labels[label][done] if label in labels else np.array([])
    blob = json.dumps([[str(v) for v in store.video_ids()[done]],
                       [str(v) for v in store.subjects()[done]], [str(v) for v in column]])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finished_metrics(run_dir: Path, cell_file: Path, expected: dict) -> dict | None:
    """The cell's metrics.json when it finished with exactly these settings."""
    metrics = run_dir / "metrics.json"
    if not (metrics.exists() and _same_cell(cell_file, expected)):
        return None
    try:
        return json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None


def _same_cell(cell_file: Path, expected: dict) -> bool:
    try:
        return json.loads(cell_file.read_text()) == expected
    except (OSError, ValueError):
        return False


def shipped_grids() -> dict[str, Path]:
    """The paper's grids shipped with ahdi: name (file stem) -> path."""
    return {p.stem: p for p in sorted(GRIDS_DIR.glob("*.yaml"))}


def resolve_grid(name_or_path: str | os.PathLike) -> Path:
    """A grid file given as a path, or the name of a shipped grid (``table3_patch``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_grids()
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if str(path.parent) in ("", ".") and stem in shipped:
        return shipped[stem]
    raise GridError(f"{name_or_path}: no such grid file, and not the name of a shipped grid "
                    f"({', '.join(shipped)})")


@dataclasses.dataclass(frozen=True)
class Target:
    """What every cell learns and how it is scored."""

    task: str
    label: str
    protocol: str = "loso"
    positive: str | None = None


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Where the videos come from and how they are converted."""

    source: str
    labels_csv: str | None = None
    root: str | None = None
    scheduler: str | None = None
    workers: int | None = None


def run_ablation(grid_path: str | os.PathLike, out: str | os.PathLike, target: Target,
                 inputs: Inputs, *, train_overrides: dict | None = None,
                 log: Callable[[str], None] = print) -> dict:
    """Convert every distinct parameter set once, train every cell, write the tables.

    Parameters
    ----------
    grid_path : path or str
        A grid file, or the name of a shipped grid (see :func:`shipped_grids`).
    out : path
        Folder for ``stores/``, ``cells/``, results.csv, table.md and the plots.
    target : Target
        Task, label, protocol and positive class shared by every cell.
    inputs : Inputs
        The source and how to convert it.
    train_overrides : dict, optional
        Training settings that override the grid's ``train:`` section.
    log : callable
        Receives one line per conversion and per trained cell.

    Returns
    -------
    dict
        ``{'cells': n, 'converted': [...], 'reused_stores': [...], 'trained': [...],
        'reused_cells': [...], 'table': {...}}``.
    """
    grid = load_grid(resolve_grid(grid_path))
    cells = expand_cells(grid)
    shared = {**grid["train"], **(train_overrides or {})}
    _check_training_settings(grid["path"], cells, shared, target)
    name, items = _labelled_items(inputs, target.label, log)
    out_dir = Path(out)
    (out_dir / "stores").mkdir(parents=True, exist_ok=True)
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)

    summary: dict[str, Any] = {"cells": len(cells), "converted": [], "reused_stores": [],
                               "trained": [], "reused_cells": []}
    stores = _convert_stores(cells, items, name, inputs, out_dir, summary, log)
    common = common_items(stores, log)
    results = _train_cells(cells, stores, common, shared, target, out_dir, summary, log)
    summary["table"] = write_outputs(out_dir, cells, results, target.task)
    return summary


#: Training settings the command line, the axes or the ablation set; a grid's train: may not.
_FIXED_SETTINGS = {"store", "out", "task", "label", "positive", "protocol", "representation",
                   "model", "items"}


def _check_training_settings(where: str, cells: list[Cell], shared: dict,
                             target: Target) -> None:
    # Everything that can be wrong with the training settings is found now,
    # not after hours of conversion.
    from ahdi.train.config import TrainConfig
    from ahdi.train.splits import parse_protocol

    clash = sorted(set(shared) & _FIXED_SETTINGS)
    if clash:
        raise GridError(f"{where}: train: {', '.join(clash)} is set by the command "
                        f"line or the axes, not in train:")
    try:
        for cell in cells:
            TrainConfig(store="", **_target_settings(target),
                        representation=cell.representation, model=cell.model,
                        **shared).validate()
        parse_protocol(target.protocol)
    except TypeError as exc:
        raise GridError(f"{where}: train: {exc}") from exc
    except ValueError as exc:
        raise GridError(f"{where}: {exc}") from exc


def _target_settings(target: Target) -> dict[str, Any]:
    return {"task": target.task, "label": target.label, "positive": target.positive,
            "protocol": target.protocol}


def _labelled_items(inputs: Inputs, label: str, log: Callable[[str], None]
                    ) -> tuple[str, list]:
    from .resolve import resolve_source

    name, items = resolve_source(inputs.source, labels_csv=inputs.labels_csv, root=inputs.root,
                                 on_skip=lambda message: log(f"left out: {message}"))
    if not items:
        raise GridError(f"{inputs.source}: no videos found")
    known = sorted({k for item in items for k in item.labels})
    if label not in known:
        raise GridError(f"{inputs.source}: no label {label!r}; the labels are "
                        f"{', '.join(known) or '(none: give --labels CSV)'}")
    return name, items


def _convert_stores(cells: list[Cell], items: list, name: str, inputs: Inputs, out_dir: Path,
                    summary: dict, log: Callable[[str], None]) -> dict[str, Path]:
    """Each distinct parameter set converted once (a finished store is reused)."""
    from .graph import convert

    stores: dict[str, Path] = {}
    for params in dict.fromkeys(c.params for c in cells):
        path = out_dir / "stores" / f"{params.param_hash()}.zarr"
        report = convert(items, path, params, REPRESENTATIONS, dataset=name,
                         source=str(inputs.source), scheduler=inputs.scheduler,
                         workers=inputs.workers)
        (summary["converted"] if report.outcomes else summary["reused_stores"]).append(str(path))
        if report.outcomes:
            log(f"converted {path.name}: {report.done} done, {len(report.failed)} failed")
        stores[params.param_hash()] = path
    return stores


def common_items(stores: dict[str, Path], log: Callable[[str], None] = print) -> list[str]:
    """The video ids done in every store: the items every cell is trained and scored on.

    Raises
    ------
    GridError
        No item is done in all the stores.
    """
    from ahdi.pipeline.store import open_store

    done = {}
    for h, path in stores.items():
        store = open_store(path)
        done[h] = set(np.asarray(store.video_ids())[np.asarray(store.statuses()) == "done"]
                      .astype(str).tolist())
    common = sorted(set.intersection(*done.values())) if done else []
    counts = ", ".join(f"{h}: {len(ids)}" for h, ids in done.items())
    if not common:
        raise GridError(f"no item is done in every store of the grid (done per store: {counts}); "
                        f"see the failures with `ahdi inspect STORE`")
    log(f"every cell is trained and scored on the {len(common)} items done in all "
        f"{len(done)} stores (done per store: {counts})")
    return common


def _train_cells(cells: list[Cell], stores: dict[str, Path], common: list[str], shared: dict,
                 target: Target, out_dir: Path, summary: dict,
                 log: Callable[[str], None]) -> dict[Cell, dict]:
    """Train every cell not trained before on the same items; resume or reuse the rest."""
    from ahdi.train.engine import TrainConfig, run_training
    from ahdi.train.runfolder import RunFolder
    from ahdi.train.tracking import Console

    fingerprints = {h: store_fingerprint(path, target.label) for h, path in stores.items()}
    items_sha = hashlib.sha256(json.dumps(common).encode()).hexdigest()[:16]
    results: dict[Cell, dict] = {}
    by_key: dict[str, dict] = {}
    for i, cell in enumerate(cells):
        key = cell.train_key()
        if key in by_key:
            results[cell] = by_key[key]
            continue
        run_dir, cell_file = out_dir / "cells" / key, out_dir / "cells" / f"{key}.json"
        config = {**shared, "store": str(stores[cell.params.param_hash()]),
                  **_target_settings(target), "representation": cell.representation,
                  "model": cell.model, "out": str(run_dir), "items": common}
        expected = {k: v for k, v in config.items() if k not in ("store", "out", "items")}
        expected.update(store_content=fingerprints[cell.params.param_hash()], items=items_sha)
        finished = _finished_metrics(run_dir, cell_file, expected)
        if finished is None:
            folder = RunFolder(run_dir)
            resume = _same_cell(cell_file, expected) and folder.is_run() \
                and not folder.is_finished()
            log(f"cell {i + 1}/{len(cells)}: {cell.label}" + (" (resumed)" if resume else ""))
            # Written first, so an interrupted cell is known and resumed next time.
            cell_file.write_text(json.dumps(expected, sort_keys=True))
            console = Console(sink=log, prefix=f"cell {i + 1}/{len(cells)} ")
            finished = run_training(TrainConfig(**config), resume=resume, overwrite=not resume,
                                    console=console)
            summary["trained"].append(key)
        else:
            summary["reused_cells"].append(key)
        results[cell] = by_key[key] = finished
    return results
