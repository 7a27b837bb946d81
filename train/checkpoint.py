"""Checkpoints: a fold's final weights, and the ``last`` state a run resumes from.

Two kinds of file, both written atomically (a temporary file in the same
folder, then renamed over the real name), so a killed run never leaves a
truncated checkpoint under a real name:

* ``checkpoints/foldNN-NAME.pt``: what a finished fold keeps. Weights and
  plain values only (the model's state_dict, the configuration, the
  store's param hash, the target scaling, the input size, the fold's test
  subjects and training items), so it loads with
  ``torch.load(weights_only=True)`` and is about the size of the model's
  parameters.
* ``last.pt`` in the run folder: everything needed to continue the fold
  that was running after its last finished epoch: model, optimizer,
  scheduler, random number generator states, epoch, history so far and the
  best epoch's weights. Removed once the fold is finished.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ahdi.pipeline.errors import AhdiError

#: What every final checkpoint holds (a file without them is not one of ours).
CHECKPOINT_KEYS = ("config", "model")


class CheckpointError(AhdiError, ValueError):
    """A file or run folder given as a checkpoint is not one (the message says why)."""


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic: a process killed at any moment leaves the old
    file or the new one, never a part. (No fsync: it guards against a power
    cut, at the price of writing the resume state to disk every epoch.)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files an interrupted :func:`atomic_save` left in ``folder``."""
    for tmp in Path(folder).glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def weights_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's state_dict (the live one changes as it trains)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def save_final(path: str | os.PathLike, weights: dict[str, torch.Tensor], *, config: dict,
               fold: str, epoch: int, target_mean: float, target_std: float, input_size: int,
               param_hash: str | None, test_subjects: list[str],
               train_items: list[str]) -> Path:
    """Write a fold's final checkpoint: weights and plain values only.

    Parameters
    ----------
    path : path
        ``checkpoints/foldNN-NAME.pt`` of the run folder.
    weights : dict
        The state_dict to keep (the chosen epoch's).
    config : dict
        The run's settings (``TrainConfig`` as a dict).
    fold, epoch : str, int
        The fold's name and the (1-based) epoch the weights come from.
    target_mean, target_std : float
        The regression target scaling the model's output is undone with.
    input_size : int
        The side of the images the model saw.
    param_hash : str or None
        The training store's conversion parameter hash.
    test_subjects, train_items : list of str
        The fold's held-out subjects and its training video ids (evaluate
        warns when it is given items a model trained on).

    Returns
    -------
    Path
        The file written.
    """
    return atomic_save({
        "model": {k: v.detach().cpu() for k, v in weights.items()}, "config": config,
        "fold": fold, "epoch": int(epoch), "target_mean": float(target_mean),
        "target_std": float(target_std), "input_size": int(input_size),
        "store_param_hash": param_hash, "test_subjects": list(test_subjects),
        "train_items": list(train_items)}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a final checkpoint, or say clearly why the file is not one.

    Raises
    ------
    CheckpointError
        torch cannot read the file, or it lacks the model or the config.
    """
    try:
        # weights_only: a checkpoint file from elsewhere must not run code.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(f"{path} is not an ahdi checkpoint: torch cannot read it "
                              f"({type(exc).__name__}: {exc})") from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not an ahdi checkpoint: it has no "
                              f"{', '.join(missing)} (a checkpoint is what `ahdi train` writes "
                              f"under RUN_DIR/checkpoints)")
    return ckpt


# ----------------------------------------------------------------------------
# the resume state
def rng_states(transform_generator: torch.Generator) -> dict[str, Any]:
    """Every random number generator state a fold's next epoch depends on."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda),
            "transform": transform_generator.get_state()}


def restore_rng_states(states: dict[str, Any], transform_generator: torch.Generator) -> None:
    """Put back what :func:`rng_states` recorded."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    transform_generator.set_state(states["transform"])


def save_last(path: str | os.PathLike, *, fold_index: int, fold: str, epoch: int,
              model: torch.nn.Module, optimizer, scheduler, transform_generator,
              history: list[dict], best: dict, stale_epochs: int) -> Path:
    """Write the state after ``epoch`` (1-based, finished) of fold ``fold_index``.

    ``best`` is ``{'epoch', 'score', 'weights'}`` of the best validation
    epoch so far (``weights`` None without a validation split).
    """
    return atomic_save({
        "fold_index": int(fold_index), "fold": fold, "epoch": int(epoch),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_states(transform_generator),
        "history": history, "best": best, "stale_epochs": int(stale_epochs)}, path)


def load_last(path: str | os.PathLike) -> dict | None:
    """The state :func:`save_last` wrote, or None when there is none.

    Raises
    ------
    CheckpointError
        The file exists but cannot be read (the message says how to go on).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors have many types
        raise CheckpointError(f"{path} cannot be read ({type(exc).__name__}: {exc}); delete "
                              f"it to restart the unfinished fold from its first epoch") from exc
