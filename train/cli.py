"""``ahdi train`` and ``ahdi evaluate``: thin click commands over ahdi.train.engine.

This module must not import torch at import time (converting videos never
needs it): the engine is imported inside the command bodies.
"""

from __future__ import annotations

import json

import click

from ahdi.pipeline.errors import AhdiError

from .vocab import (ARCHS, DEVICES, IN_MEMORY, MODELS, REPRESENTATIONS, TASKS,
                    default_representation)


def _format_metrics(result: dict) -> str:
    lines = []
    agg = result.get("aggregate")
    if agg:
        n = len(result.get("folds", []))
        lines.append(f"held-out metrics over {n} fold(s), mean +- std:")
        for name, v in agg.items():
            lines.append(f"  {name:<18} {v['mean']:.4f} +- {v['std']:.4f}")
    pooled = result.get("pooled") or result.get("metrics")
    if pooled:
        lines.append("all predictions pooled:" if agg else "metrics:")
        for name, v in pooled.items():
            lines.append(f"  {name:<18} {v:.4f}")
    return "\n".join(lines)


@click.command("train")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--task", type=click.Choice(TASKS), default="regression", show_default=True)
@click.option("--label", required=True, help="Label column to predict.")
@click.option("--positive", default=None,
              help="Binary task: the label value that counts as 1 (for text labels).")
@click.option("--protocol", default="loso", show_default=True,
              help="loso, kfold:K (grouped by subject) or split:COLUMN.")
@click.option("--representation", type=click.Choice(REPRESENTATIONS), default=None,
              help="Image kind to train on [default: mdv for mdv:* models, else ahdi].")
@click.option("--model", type=click.Choice(MODELS), default="single", show_default=True)
@click.option("--arch", type=click.Choice(ARCHS), default="resnet18", show_default=True)
@click.option("--weights", default="none", show_default=True,
              help="none (scratch), imagenet (local torch cache) or PATH to a state_dict.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to run; auto takes CUDA when torch sees it.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--max-folds", type=click.IntRange(min=1), default=None,
              help="Run only the first N folds (a quick look).")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Resize the model input to SIZE x SIZE (default: the store's size).")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--in-memory", type=click.Choice(IN_MEMORY), default="auto",
              show_default=True, help="Hold the images in (GPU) memory or stream them.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Run folder to write.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train_command(store, task, label, positive, protocol, representation, model, arch, weights,
                  epochs, batch_size, lr, weight_decay, seed, device, compile_, max_folds, size,
                  no_augment, in_memory, out, quiet):
    """Train a CNN on the images of STORE and report held-out metrics.

    One model per fold of the protocol; OUT gets config.json, metrics.json,
    predictions.csv, one checkpoint per fold and plots.

    \b
    Example:
        ahdi train unbc.zarr --task regression --label pspi_max \\
            --protocol loso --weights imagenet --epochs 20 --out runs/unbc
    """
    from .engine import TrainConfig, run_training

    if representation is None:
        representation = default_representation(model)
    cfg = TrainConfig(store=store, label=label, task=task, positive=positive, protocol=protocol,
                      representation=representation, model=model, arch=arch, weights=weights,
                      epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      seed=seed, device=device, compile=compile_, max_folds=max_folds, out=out,
                      size=size, augment=not no_augment, in_memory=in_memory,
                      progress=not quiet)
    try:
        result = run_training(cfg)
    except AhdiError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(_format_metrics(result))
    click.echo(f"run folder: {out}")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Folder for metrics.json, predictions.csv and plots.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to run; auto takes CUDA when torch sees it.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of a table.")
def evaluate_command(checkpoint, store, out, batch_size, device, as_json):
    """Apply a trained model (CHECKPOINT file, or a run folder: all fold models
    averaged) to the done items of STORE.

    Metrics are computed when STORE has the training label; predictions are
    always written.

    \b
    Example:
        ahdi evaluate runs/unbc new_videos.zarr --out runs/new
    """
    from .engine import evaluate_checkpoint
    try:
        result = evaluate_checkpoint(checkpoint, store, out, batch_size=batch_size,
                                     device=device)
    except AhdiError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(_format_metrics(result) or f"{result['n_predictions']} predictions written")
        if "note" in result:
            click.echo(f"note: {result['note']}")
    click.echo(f"predictions: {out}/predictions.csv")
