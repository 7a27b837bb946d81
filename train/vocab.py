"""The trainer's vocabularies, each defined once.

Torch-free on purpose: the command line builds its choices from these
names without importing torch, and every validator checks against them.
The image representations are the kernels' own (``ahdi.kernels.REPRESENTATIONS``).
"""

from __future__ import annotations

from ahdi.kernels.compute import REPRESENTATIONS
from ahdi.pipeline.errors import SettingError

__all__ = ["REPRESENTATIONS", "TASKS", "ARCHS", "POOLINGS", "MODELS", "DEVICES", "IN_MEMORY",
           "MAIN_METRIC", "LOWER_IS_BETTER", "FOLD_STATUSES", "default_representation",
           "parse_model", "check_choice"]

#: What a model predicts: a number (pain intensity) or one of two classes.
TASKS = ("regression", "binary")
#: torchvision backbones.
ARCHS = ("resnet18", "resnet34", "resnet50")
#: How an MDV model pools the features of an item's window images.
POOLINGS = ("avg", "max", "rank", "lstm", "attention")
#: ``single`` (one image per item) or ``mdv:<pooling>`` (the window images).
MODELS = ("single",) + tuple(f"mdv:{pooling}" for pooling in POOLINGS)
#: Where training runs; ``auto`` takes CUDA when it is there.
DEVICES = ("auto", "cpu", "cuda")
#: Whether the images are held in (GPU) memory or streamed from the store.
IN_MEMORY = ("auto", "always", "never")
#: The metric each task's epochs are chosen by and its tables lead with
#: (the paper reports MAE on UNBC-McMaster and accuracy on BioVid).
MAIN_METRIC = {"regression": "mae", "binary": "accuracy"}
#: Metrics where a smaller value is better; every other metric, larger is better.
LOWER_IS_BETTER = frozenset({"mae", "mse"})
#: How a fold ended: ``done`` (scored), ``diverged`` (non-finite loss or
#: predictions: every metric of the fold is undefined).
FOLD_STATUSES = ("done", "diverged")


def default_representation(model: str) -> str:
    """The image kind a model trains on unless told: window images for MDV models."""
    return "mdv" if model.startswith("mdv:") else "ahdi"


def parse_model(model: str) -> tuple[str, str | None]:
    """``'single'`` -> ('single', None); ``'mdv:rank'`` -> ('mdv', 'rank')."""
    check_choice("model", model, MODELS)
    kind, _, pool = model.partition(":")
    return kind, pool or None


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`SettingError` naming ``what`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise SettingError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
