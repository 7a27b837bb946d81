"""The trainer's vocabularies, each defined once.

Torch-free on purpose: the command line builds its choices from these
names without importing torch, and every validator checks against them.
The image representations are the kernels' own (``ahdi.kernels.REPRESENTATIONS``).
"""

from __future__ import annotations

from ahdi.kernels.compute import REPRESENTATIONS
from ahdi.pipeline.errors import SettingError

__all__ = ["REPRESENTATIONS", "TASKS", "ARCHS", "POOLINGS", "MODELS", "DEVICES", "IN_MEMORY",
           "default_representation", "check_choice"]

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


def default_representation(model: str) -> str:
    """The image kind a model trains on unless told: window images for MDV models."""
    return "mdv" if model.startswith("mdv:") else "ahdi"


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`SettingError` naming ``what`` when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise SettingError(f"unknown {what} {value!r}; expected one of {', '.join(choices)}")
