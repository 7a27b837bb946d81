"""What a training run depends on: ``TrainConfig``, and the YAML file that sets it.

Torch-free on purpose: the command line and ``ahdi ablate`` build and check
a configuration before anything heavy is imported.

``ahdi train --config train.yaml`` reads a mapping of these settings (flat,
or under ``train:``); the options typed on the command line override it.
Every setting of :class:`TrainConfig` can be given there, with its field
name (``batch_size`` or ``batch-size``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any


from ahdi.pipeline.errors import SettingError
from ahdi.pipeline.files import read_yaml

from .vocab import DEVICES, IN_MEMORY, TASKS, check_choice, parse_model


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on (written to config.json)."""
    store: str
    label: str
    task: str = "regression"                 # regression | binary
    positive: str | None = None              # binary: which label value is 1
    protocol: str = "loso"                   # loso | kfold:K | split:COLUMN
    representation: str = "ahdi"             # ahdi | sdi | mean | flow | mdv
    model: str = "single"                    # single | mdv:avg|max|rank|lstm|attention
    arch: str = "resnet18"
    weights: str = "none"                    # none | imagenet | PATH
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"                     # auto | cpu | cuda
    compile: bool = False
    max_folds: int | None = None
    val_subjects: float = 0.0                # inner validation: N subjects, or a fraction < 1
    patience: int | None = None              # early stopping on the validation metric
    items: list[str] | None = None           # only these video ids (ahdi ablate's common items)
    out: str = "run"
    size: int | None = None                  # resize model input; None = store size
    augment: bool = True
    in_memory: str = "auto"                  # auto | always | never
    num_workers: int | None = None           # streaming only; None = cores - 1
    channels_last: bool = True               # CUDA only
    amp: bool = True                         # bf16 autocast, CUDA only
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first setting out of range."""
        check_choice("task", self.task, TASKS)
        kind, _ = parse_model(self.model)
        if (kind == "mdv") != (self.representation == "mdv"):
            raise SettingError(f"model {self.model!r} needs representation "
                               f"{'mdv' if kind == 'mdv' else 'ahdi, sdi, mean or flow'}, "
                               f"got {self.representation!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be >= 1")
        if not self.lr > 0:
            raise SettingError(f"lr must be > 0, got {self.lr}")
        for name in ("max_folds", "patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingError(f"{name} must be >= 1, got {value}")
        v = self.val_subjects
        if not (v >= 0 and math.isfinite(v)) or (v >= 1 and v != int(v)):
            raise SettingError(f"val_subjects must be a whole number of subjects or a "
                               f"fraction below 1, got {v}")
        if self.patience is not None and v == 0 and not self.protocol.startswith("split:"):
            raise SettingError("patience (early stopping) needs a validation split: "
                               "give val_subjects (--val-subjects N or a fraction)")
        check_choice("device", self.device, DEVICES)
        check_choice("in_memory setting", self.in_memory, IN_MEMORY)


FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
#: Settings that do not change what a run computes: a resumed run may differ in them.
RESUME_FREE = frozenset({"store", "out", "progress", "in_memory", "num_workers"})
_INTS = {"epochs", "batch_size", "seed", "max_folds", "patience", "size", "num_workers"}
_FLOATS = {"lr", "weight_decay", "val_subjects"}
_BOOLS = {"compile", "augment", "channels_last", "amp", "progress"}


def _coerce(where: str, name: str, value: Any) -> Any:
    """A YAML value as the field's type (YAML 1.1 reads ``3e-4`` as text)."""
    if value is None or name not in _INTS | _FLOATS | _BOOLS | {"items"}:
        return None if value is None else (str(value) if not isinstance(value, str) else value)
    try:
        if name in _BOOLS:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if name == "items":
            if not isinstance(value, list):
                raise ValueError
            return [str(v) for v in value]
        if name in _INTS:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        return float(value)
    except (TypeError, ValueError):
        kind = ("true or false" if name in _BOOLS else "a list of video ids" if name == "items"
                else "a whole number" if name in _INTS else "a number")
        raise SettingError(f"{where}: {name} must be {kind}, got {value!r}") from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a training YAML file, checked by name and type.

    Parameters
    ----------
    path : str or PathLike
        A YAML mapping of :class:`TrainConfig` settings, flat or under ``train:``.

    Returns
    -------
    dict
        Field name -> value, only the settings the file gives.

    Raises
    ------
    SettingError
        The file cannot be read, is not YAML, or names an unknown setting or
        a value of the wrong type (the message names the file and the setting).
    """
    where = os.fspath(path)
    loaded = read_yaml(where, "config file", SettingError) or {}
    section = loaded.get("train", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(section, dict):
        raise SettingError(f"{where}: expected a mapping of setting: value")
    settings = {}
    for key, value in section.items():
        name = str(key).replace("-", "_")
        if name not in FIELDS:
            raise SettingError(f"{where}: unknown setting {key!r}; the settings are "
                               f"{', '.join(FIELDS)}")
        settings[name] = _coerce(where, name, value)
    return settings
