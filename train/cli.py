"""``ahdi train`` and ``ahdi evaluate``: thin click commands over ahdi.train.engine.

This module must not import torch at import time (converting videos never
needs it): the engine is imported inside the command bodies.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

TASKS = ("regression", "binary")
REPRESENTATIONS = ("ahdi", "sdi", "mean", "flow", "mdv")
MODELS = ("single", "mdv:avg", "mdv:max", "mdv:rank", "mdv:lstm", "mdv:attention")
ARCHS = ("resnet18", "resnet34", "resnet50")


def _fail(exc: Exception) -> click.ClickException:
    msg = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        msg = str(exc.args[0])
    return click.ClickException(msg)


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
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto",
              show_default=True)
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--max-folds", type=click.IntRange(min=1), default=None,
              help="Run only the first N folds (a quick look).")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Resize the model input to SIZE x SIZE (default: the store's size).")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--in-memory", type=click.Choice(("auto", "always", "never")), default="auto",
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
    from .models import WeightsNotFoundError
    if representation is None:
        representation = "mdv" if model.startswith("mdv:") else "ahdi"
    cfg = TrainConfig(store=store, label=label, task=task, positive=positive, protocol=protocol,
                      representation=representation, model=model, arch=arch, weights=weights,
                      epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      seed=seed, device=device, compile=compile_, max_folds=max_folds, out=out,
                      size=size, augment=not no_augment, in_memory=in_memory,
                      progress=not quiet)
    try:
        result = run_training(cfg)
    except (ValueError, KeyError, FileNotFoundError, WeightsNotFoundError, AssertionError) as exc:
        raise _fail(exc) from None
    except Exception as exc:
        if type(exc).__name__ == "StoreError":
            raise _fail(exc) from None
        raise
    click.echo(_format_metrics(result))
    click.echo(f"run folder: {out}")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Folder for metrics.json, predictions.csv and plots.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto",
              show_default=True)
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
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    except Exception as exc:
        if type(exc).__name__ == "StoreError":
            raise _fail(exc) from None
        raise
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(_format_metrics(result) or f"{result['n_predictions']} predictions written")
        if "note" in result:
            click.echo(f"note: {result['note']}")
    click.echo(f"predictions: {out}/predictions.csv")


@click.command("ablate")
@click.argument("source")
@click.option("--grid", "grid", type=click.Path(exists=True, dir_okay=False), required=True,
              help="YAML grid file: the axes to sweep and the shared settings.")
@click.option("--task", type=click.Choice(TASKS), required=True)
@click.option("--label", required=True, help="Label column to predict.")
@click.option("--positive", default=None, help="binary: the label value that counts as 1.")
@click.option("--protocol", default="loso", show_default=True, help="loso | kfold:K | split:COLUMN")
@click.option("--labels", type=click.Path(), help="Labels CSV for a folder of videos.")
@click.option("--root", type=click.Path(), help="Root folder of a dataset named in datasets.yaml.")
@click.option("--scheduler", default=None, help="Conversions' Dask scheduler (tcp://HOST:PORT).")
@click.option("--workers", type=click.IntRange(min=1), help="Local conversion workers.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Folder for the stores, the cells' runs and the tables.")
def ablate_command(source, grid, task, label, positive, protocol, labels, root, scheduler,
                   workers, out):
    """Run the paper's comparisons on SOURCE: one cell per combination of the grid's axes.

    Each distinct conversion parameter set is converted once (reused when its
    store exists), every cell is trained with the same folds and seeds, and
    OUT gets results.csv (cell x fold), table.md (mean ± std, best in bold)
    and one PNG per swept axis. Re-running resumes; a grown grid computes
    only its new cells.

    Example: ahdi ablate ~/clinic --labels clinic.csv --task regression
    --label vas --grid docs/grids/table3_patch.yaml --out ablations/patch
    """
    from ahdi.pipeline.datasets import DatasetError
    from ahdi.pipeline.graph import ClusterError
    from ahdi.pipeline.store import StoreError
    from ahdi.train.ablate import GridError, run_ablation

    try:
        summary = run_ablation(source, grid, out, task=task, label=label, protocol=protocol,
                               positive=positive, labels_csv=labels, root=root,
                               scheduler=scheduler, workers=workers,
                               log=lambda line: click.echo(line, err=True))
    except (GridError, DatasetError, StoreError, ClusterError, ValueError) as exc:
        raise _fail(exc)
    click.echo(f"{summary['cells']} cells: {len(summary['converted'])} conversions, "
               f"{len(summary['trained'])} trainings ({len(summary['reused_stores'])} stores "
               f"and {len(summary['reused_cells'])} cells reused)")
    click.echo(f"table: {Path(out) / 'table.md'}")
