"""``ahdi train`` and ``ahdi evaluate``: thin click commands over the trainer.

This module must not import torch at import time (converting videos never
needs it): the engine is imported inside the command bodies.

Settings come from the defaults, then ``--config FILE`` (or, with
``--resume RUN_DIR``, the run's own config.json), then the options typed
on the command line. Ctrl-C or SIGTERM stops a run between two saved
states and exits 130 (143 for SIGTERM) with the command that resumes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import signal
import sys

import click
from click.core import ParameterSource

from ahdi.pipeline.errors import AhdiError

from .config import TrainConfig
from .vocab import ARCHS, DEVICES, IN_MEMORY, MODELS, REPRESENTATIONS, TASKS, \
    default_representation

#: The defaults --help shows are TrainConfig's own.
_DEFAULT = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

#: Command-line parameter -> (TrainConfig field, how the value maps onto it).
_FIELD_OF = {"no_augment": ("augment", lambda v: not v),
             "quiet": ("progress", lambda v: not v), "compile_": ("compile", None)}
_NOT_SETTINGS = {"config", "resume", "overwrite"}


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would raise KeyboardInterrupt."""

    signum = signal.SIGTERM


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM stops the run the way Ctrl-C does."""
    def handler(signum, frame):
        raise _Terminated

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:                    # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _given_settings(ctx: click.Context, values: dict) -> dict:
    """The settings typed on the command line, as TrainConfig fields."""
    given = {}
    for name, value in values.items():
        if name in _NOT_SETTINGS or ctx.get_parameter_source(name) is not \
                ParameterSource.COMMANDLINE:
            continue
        field, convert = _FIELD_OF.get(name, (name, None))
        given[field] = convert(value) if convert else value
    return given


def _settings(ctx: click.Context, values: dict) -> dict:
    """Defaults < --config file (or the resumed run's settings) < the command line."""
    from .config import read_config_file
    from .engine import read_run_settings

    resume, config = values["resume"], values["config"]
    if resume and config:
        raise click.UsageError("--resume takes the run's own settings; drop --config")
    base = read_run_settings(resume) if resume else read_config_file(config) if config else {}
    settings = {**base, **_given_settings(ctx, values)}
    if resume:
        if values["out"] is not None and values["out"] != resume:
            raise click.UsageError("--resume RUN_DIR is the run folder; drop --out")
        settings["out"] = resume
    for field, what in (("store", "STORE"), ("label", "'--label'"), ("out", "'--out'")):
        if settings.get(field) is None:
            raise click.UsageError(f"Missing {what} (on the command line or in --config).")
    settings.setdefault("representation", default_representation(settings.get("model",
                                                                               "single")))
    return settings


@click.command("train")
@click.argument("store", required=False)   # a path or URL; open_store checks it
@click.option("--config", type=click.Path(dir_okay=False),
              help="YAML file of training settings; options typed here override it.")
@click.option("--task", type=click.Choice(TASKS), default=_DEFAULT["task"],
              show_default=True)
@click.option("--label", help="Label column to predict.")
@click.option("--positive", default=None,
              help="Binary task: the label value that counts as 1 (for text labels).")
@click.option("--protocol", default=_DEFAULT["protocol"], show_default=True,
              help="loso, kfold:K (grouped by subject) or split:COLUMN.")
@click.option("--representation", type=click.Choice(REPRESENTATIONS), default=None,
              help="Image kind to train on [default: mdv for mdv:* models, else ahdi].")
@click.option("--model", type=click.Choice(MODELS), default=_DEFAULT["model"],
              show_default=True)
@click.option("--arch", type=click.Choice(ARCHS), default=_DEFAULT["arch"],
              show_default=True)
@click.option("--weights", default=_DEFAULT["weights"], show_default=True,
              help="none (scratch), imagenet (local torch cache) or PATH to a state_dict.")
@click.option("--epochs", type=click.IntRange(min=1), default=_DEFAULT["epochs"],
              show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=_DEFAULT["batch_size"],
              show_default=True)
@click.option("--lr", type=float, default=_DEFAULT["lr"], show_default=True)
@click.option("--weight-decay", type=float, default=_DEFAULT["weight_decay"],
              show_default=True)
@click.option("--seed", type=int, default=_DEFAULT["seed"], show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default=_DEFAULT["device"],
              show_default=True,
              help="Where to run; auto takes CUDA when torch sees it.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--max-folds", type=click.IntRange(min=1), default=None,
              help="Run only the first N folds (a quick look).")
@click.option("--val-subjects", type=click.FloatRange(min=0), default=_DEFAULT["val_subjects"],
              show_default=True,
              help="Hold out N of each fold's training subjects (or a fraction < 1 of them) "
                   "to choose the best epoch; 0 keeps the last epoch.")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop a fold after N epochs without a better validation metric.")
@click.option("--size", type=click.IntRange(min=8), default=None,
              help="Resize the model input to SIZE x SIZE (default: the store's size).")
@click.option("--no-augment", is_flag=True, help="Train without augmentation.")
@click.option("--in-memory", type=click.Choice(IN_MEMORY), default=_DEFAULT["in_memory"],
              show_default=True, help="Hold the images in (GPU) memory or stream them.")
@click.option("--out", "out", type=click.Path(file_okay=False),
              help="Run folder to write (must not hold a run, unless --overwrite).")
@click.option("--resume", type=click.Path(file_okay=False),
              help="Continue the interrupted run in this folder, with its settings.")
@click.option("--overwrite", is_flag=True, help="Clear the run already in --out first.")
@click.option("--quiet", is_flag=True, help="No progress lines (warnings still show).")
@click.pass_context
def train_command(ctx, **values):
    """Train a CNN on the images of STORE and report held-out metrics.

    One model per fold of the protocol. OUT gets config.json, history.csv
    (a row per epoch, as it trains), TensorBoard event files, one
    weights-only checkpoint per fold, folds.csv, predictions.csv,
    metrics.json and plots. An interrupted run continues with --resume OUT.

    \b
    Example:
        ahdi train unbc.zarr --task regression --label pspi_max \\
            --protocol loso --weights imagenet --epochs 20 --val-subjects 3 \\
            --out runs/unbc
    """
    from .engine import TrainingInterrupted, run_training
    from .outputs import format_aggregate, format_fold_table

    with _sigterm_as_interrupt():
        try:
            cfg = TrainConfig(**_settings(ctx, values))
            result = run_training(cfg, resume=bool(values["resume"]),
                                  overwrite=values["overwrite"])
        except AhdiError as exc:
            raise click.ClickException(str(exc)) from None
        except TrainingInterrupted as exc:
            click.echo(f"\n{exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo("\ninterrupted before the first fold started", err=True)
            sys.exit(128 + getattr(exc, "signum", signal.SIGINT))
    click.echo(format_fold_table(result["folds"], cfg.task))
    click.echo(format_aggregate(result))
    click.echo(f"run folder: {cfg.out}")
    if result["diverged"]:
        first = result["diverged"][0]["error"]
        raise click.ClickException(
            f"{len(result['diverged'])} of {len(result['folds'])} folds diverged ({first}); "
            f"their metrics are undefined and left out of the means")


@click.command("evaluate")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("store")   # a path or URL; open_store checks it
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Folder for metrics.json, predictions.csv and plots (not the run folder).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where to run; auto takes CUDA when torch sees it.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of a table.")
def evaluate_command(checkpoint, store, out, batch_size, device, as_json):
    """Apply a trained model (CHECKPOINT file, or a finished run folder: all
    fold models averaged) to the done items of STORE.

    Metrics are computed when STORE has the training label; predictions are
    always written. A warning names how many items a fold model trained on.

    \b
    Example:
        ahdi evaluate runs/unbc new_videos.zarr --out runs/new
    """
    from .evaluation import evaluate_checkpoint
    try:
        result = evaluate_checkpoint(checkpoint, store, out, batch_size=batch_size,
                                     device=device)
    except AhdiError as exc:
        raise click.ClickException(str(exc)) from None
    for text in result["warnings"]:
        click.echo(f"warning: {text}", err=True)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    elif "metrics" in result:
        click.echo(f"metrics over {result['n_predictions']} items:")
        for name, v in result["metrics"].items():
            click.echo(f"  {name:<18} {v:.4f}")
    else:
        click.echo(f"{result['n_predictions']} predictions written")
    click.echo(f"predictions: {out}/predictions.csv")
