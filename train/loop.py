"""One epoch of training, one pass of evaluation, and what they run on.

Plain PyTorch: ``train_one_epoch`` and ``evaluate`` take a model, an
iterable of ``(x, mask, positions)`` uint8 batches and a ``BatchTransform``.
On CUDA the forward pass and the loss run under bf16 autocast (one
optimizer step per batch, no gradient scaler: bf16 has float32's range)
and inputs go channels_last; on CPU everything is float32 and, with
deterministic algorithms on, a fixed seed gives identical runs.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
import torch.nn as nn

from ahdi.pipeline.errors import SettingError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when torch sees it, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (NVIDIA H100 80GB HBM3)``: what config.json records."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def loss_function(task: str) -> nn.Module:
    """MSE on standardised targets (regression), BCE with logits (binary)."""
    return nn.MSELoss() if task == "regression" else nn.BCEWithLogitsLoss()


def _forward(model, x, mask):
    return model(x) if mask is None else model(x, mask)


def _prepare(x, transform, channels_last):
    inp = transform(x)
    if channels_last and inp.dim() == 4:
        inp = inp.contiguous(memory_format=torch.channels_last)
    return inp


def train_one_epoch(model, batches, transform, optimizer, scheduler, loss_fn,
                    targets: torch.Tensor, *, amp: bool = False, channels_last: bool = False,
                    progress=None) -> float:
    """One pass over ``batches``; returns the mean training loss per sample.

    A batch of one sample is skipped (BatchNorm cannot train on it). The
    loss is summed on the device and read once at the end, so the GPU is
    never made to wait per step; a non-finite result means the fold
    diverged and the caller stops it.
    """
    model.train()
    dev_type = targets.device.type
    total = torch.zeros((), device=targets.device, dtype=torch.float64)
    n = 0
    for step, (x, mask, pos) in enumerate(batches, 1):
        if pos.numel() < 2:
            continue
        inp = _prepare(x, transform, channels_last)
        y = targets[pos]
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=amp):
            out = _forward(model, inp, mask)
            loss = loss_fn(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach().double() * pos.numel()
        n += pos.numel()
        if progress is not None:
            progress.update(step)
    return float(total.item() / n) if n else float("nan")


@torch.no_grad()
def evaluate(model, batches, transform, loss_fn=None, targets: torch.Tensor | None = None,
             *, amp: bool = False,
             channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw model outputs over ``batches``: (positions, outputs, mean loss or nan)."""
    model.eval()
    outs, poss = [], []
    total, n = 0.0, 0
    for x, mask, pos in batches:
        inp = _prepare(x, transform, channels_last)
        with torch.autocast(inp.device.type, dtype=torch.bfloat16, enabled=amp):
            out = _forward(model, inp, mask).float()
        if loss_fn is not None and targets is not None:
            total += float(loss_fn(out, targets[pos]).item()) * pos.numel()
            n += pos.numel()
        outs.append(out.cpu().numpy())
        poss.append(pos.cpu().numpy())
    pos = np.concatenate(poss) if poss else np.zeros(0, np.int64)
    out = np.concatenate(outs) if outs else np.zeros(0, np.float32)
    return pos, out.astype(np.float64), (total / n if n else float("nan"))


def outputs_to_predictions(task: str, out: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Regression: undo the target standardisation; binary: sigmoid probability."""
    if task == "regression":
        return out * std + mean
    with np.errstate(over="ignore"):        # exp overflow is a probability of 0, not an error
        return 1.0 / (1.0 + np.exp(-out))


@contextlib.contextmanager
def determinism(enabled: bool):
    """Deterministic algorithms (CPU runs) or cuDNN autotuning (CUDA), restored after."""
    old = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
