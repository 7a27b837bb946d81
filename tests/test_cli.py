"""The `ahdi` command line, driven through click's CliRunner: output and errors word for word."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ahdi.pipeline.cli import EXIT_SOME_FAILED, main
from ahdi.pipeline.store import open_store

from tests import fixtures as fx

SMALL = ["--size", "16", "--patch", "3", "--crop", "center", "--n-segments", "3",
         "--min-len", "2", "-q"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def converted(folder_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "clips.zarr"
    result = run("convert", folder_tree["root"], "-o", out, *SMALL,
                 "--representations", "ahdi,mdv,sdi,mean,flow")
    assert result.exit_code == 0, result.output
    return out


def test_convert_writes_every_item(converted, folder_tree):
    store = open_store(converted)
    assert list(store.video_ids()) == folder_tree["ids"]
    assert store.counts()["done"] == len(folder_tree["ids"])
    assert store.representations == ["ahdi", "mdv", "sdi", "mean", "flow"]


def test_rerun_resumes(converted, folder_tree):
    result = run("convert", folder_tree["root"], "-o", converted, *SMALL[:-1],
                 "--representations", "ahdi,mdv,sdi,mean,flow")
    assert result.exit_code == 0
    assert "converting 0 videos (5 already done)" in result.output
    assert "0 converted, 0 failed, 5 already done" in result.output


def test_other_parameters_refused(converted, folder_tree):
    result = run("convert", folder_tree["root"], "-o", converted, *SMALL[:2], "--patch", "5",
                 *SMALL[4:], "--representations", "ahdi,mdv,sdi,mean,flow")
    assert result.exit_code == 1
    assert (f"Error: store {converted} was made with patch=3, you asked patch=5; use "
            f"--overwrite to replace it, or another output path") in result.output


@pytest.mark.parametrize("args,message", [
    (["--patch", "4"], "Error: bad parameter: patch must be an odd integer >= 1, got 4"),
    (["--patch", "0"], "Error: bad parameter: patch must be an odd integer >= 1, got 0"),
    (["--n-segments", "1"], "Error: bad parameter: n_segments must be >= 2, got 1"),
    (["--size", "5", "--patch", "9"], "Error: bad parameter: size (5) must be >= patch (9)"),
    (["--eps", "fast"], "Error: bad parameter: eps must be 'auto' or a number >= 0, got 'fast'"),
])
def test_bad_parameters(folder_tree, tmp_path, args, message):
    result = run("convert", folder_tree["root"], "-o", tmp_path / "s.zarr", *args)
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "s.zarr").exists()  # refused before any work


def test_unknown_dataset_and_missing_source(tmp_path):
    result = run("convert", "nosuchdataset", "-o", tmp_path / "s.zarr")
    assert result.exit_code == 1
    assert "Error: 'nosuchdataset' is neither an existing file or folder nor a dataset name; " \
           "known datasets:" in result.output
    result = run("convert", tmp_path / "missing" / "videos", "-o", tmp_path / "s.zarr")
    assert result.exit_code == 1
    assert "missing/videos" in result.output and "Traceback" not in result.output


def test_output_that_is_not_a_store(folder_tree, tmp_path):
    (tmp_path / "notes.txt").write_text("mine\n")
    result = run("convert", folder_tree["root"], "-o", tmp_path / "notes.txt", *SMALL)
    assert result.exit_code == 1
    assert "exists and is not an ahdi store" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


def test_unwritable_output_folder(folder_tree, tmp_path):
    result = run("convert", folder_tree["root"], "-o", tmp_path / "no" / "such" / "s.zarr", *SMALL)
    assert result.exit_code == 1
    assert "does not exist" in result.output


def test_failed_items_listed_with_exit_status(folder_tree, tmp_path):
    out = tmp_path / "s.zarr"
    result = CliRunner().invoke(main, ["convert", str(folder_tree["root"]), "-o", str(out),
                                       "--labels", str(folder_tree["csv"]), *SMALL[:-1]])
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    assert "3 converted, 1 failed" in result.output
    assert "failed subjB/missing:" in result.output and "missing.mp4" in result.output
    inspected = run("inspect", out, "--json")
    summary = json.loads(inspected.output)
    assert summary["counts"] == {"done": 3, "failed": 1, "pending": 0}
    assert [f["video_id"] for f in summary["failures"]] == ["subjB/missing"]
    text = run("inspect", out).output
    assert "subjB/missing" in text and "missing.mp4" in text


def test_config_file_and_option_precedence(folder_tree, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("size: 16\npatch: 5\ncrop: center\nn_segments: 3\nmin_len: 2\n")
    out = tmp_path / "s.zarr"
    result = run("convert", folder_tree["root"], "-o", out, "--config", config, "--patch", "3", "-q")
    assert result.exit_code == 0, result.output
    params = open_store(out).params
    assert (params.size, params.patch) == (16, 3)
    config.write_text("size: [16\n")
    result = run("convert", folder_tree["root"], "-o", out, "--config", config)
    assert result.exit_code == 1 and f"Error: {config}:2: config is not valid YAML (" in result.output
    config.write_text("sise: 16\n")
    result = run("convert", folder_tree["root"], "-o", out, "--config", config)
    assert "Error: bad parameter: unknown parameter(s): sise" in result.output


def test_inspect_pictures(converted, tmp_path):
    import cv2

    result = run("inspect", converted, "--montage", tmp_path / "m.png", "--video", "subjA/clip1",
                 "--plot", tmp_path / "p.png", "--export", tmp_path / "png",
                 "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    for name in ("m.png", "p.png"):
        assert cv2.imread(str(tmp_path / name)) is not None
    assert (tmp_path / "png" / "ahdi" / "0_subjA_clip1.png").exists()   # index, safe id
    assert "subjA/clip1" in (tmp_path / "r.html").read_text()
    result = run("inspect", converted, "--video", "nope", "--plot", tmp_path / "x.png")
    assert result.exit_code == 1 and "nope" in result.output
    result = run("inspect", tmp_path / "nothing.zarr")
    assert result.exit_code == 1
    assert f"Error: no store at {tmp_path / 'nothing.zarr'}: the path does not exist" in result.output


def test_convert_never_imports_torch(folder_tree, tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from ahdi.pipeline.cli import main\n"
        f"r = CliRunner().invoke(main, ['convert', {str(folder_tree['root'])!r}, '-o', "
        f"{str(tmp_path / 's.zarr')!r}, '--size', '16', '--patch', '3', '--crop', 'center', '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'torch' not in sys.modules, 'converting imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo(tmp_path):
    result = run("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    store = open_store(tmp_path / "demo" / "samples.zarr")
    assert store.counts()["done"] == 3
    assert (tmp_path / "demo" / "montage.png").stat().st_size > 1000
    assert "data:image/png;base64," in (tmp_path / "demo" / "report.html").read_text()
    assert f"montage: {tmp_path / 'demo' / 'montage.png'}" in result.output


def test_bad_scheduler_and_config_section(folder_tree, tmp_path):
    result = run("convert", folder_tree["root"], "-o", tmp_path / "s.zarr", *SMALL,
                 "--scheduler", "bogus")
    assert result.exit_code == 1
    assert ("Error: scheduler must be one of threads, processes, sync or tcp://HOST:PORT, "
            "got 'bogus'") in result.output
    config = tmp_path / "p.yaml"
    config.write_text("params: null\n")
    result = run("convert", folder_tree["root"], "-o", tmp_path / "s.zarr", "--config", config)
    assert result.exit_code == 1
    assert f"Error: {config}: 'params' must be a mapping of parameter: value, got NoneType" \
        in result.output


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(converted, tmp_path):
    pytest.importorskip("torch")
    import torch

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    result = run("evaluate", tmp_path / "junk.pt", converted, "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert f"Error: {tmp_path / 'junk.pt'} is not an ahdi checkpoint: torch cannot read it" \
        in result.output
    torch.save({"w": 1}, tmp_path / "weights.pt")
    result = run("evaluate", tmp_path / "weights.pt", converted, "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert "is not an ahdi checkpoint: it has no config, model" in result.output


class _RunsCode:
    """A pickled object that, unpickled without weights_only, would run a command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def labelled(folder_tree, tmp_path_factory):
    """The folder tree converted with its labels CSV (items with a numeric 'score')."""
    out = tmp_path_factory.mktemp("cli") / "labelled.zarr"
    result = run("convert", folder_tree["root"], "-o", out, *SMALL, "--labels",
                 folder_tree["csv"], "-q")
    # The CSV names one video that does not exist: it fails alone (exit 3).
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    return out


def test_checkpoints_and_weights_never_run_code(labelled, tmp_path):
    pytest.importorskip("torch")
    import torch

    marker = tmp_path / "pwned"
    torch.save({"config": {}, "model": _RunsCode(marker)}, tmp_path / "evil.pt")
    result = run("evaluate", tmp_path / "evil.pt", labelled, "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert f"Error: {tmp_path / 'evil.pt'} is not an ahdi checkpoint: torch cannot read it" \
        in result.output
    result = run("train", labelled, "--label", "score", "--weights", tmp_path / "evil.pt",
                 "--out", tmp_path / "run", "--epochs", "1", "--quiet")
    assert result.exit_code == 1
    assert f"Error: {tmp_path / 'evil.pt'} is not a weights file: torch cannot read it" \
        in result.output
    assert not marker.exists()


def test_weights_that_are_text_get_one_error_line(labelled, tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "w.txt").write_text("hello\n")
    result = run("train", labelled, "--label", "score", "--weights", tmp_path / "w.txt",
                 "--out", tmp_path / "run", "--epochs", "1", "--quiet")
    assert result.exit_code == 1, result.output
    assert f"Error: {tmp_path / 'w.txt'} is not a weights file: torch cannot read it" \
        in result.output
    assert "Traceback" not in result.output


def test_param_options_show_the_real_defaults_and_config_still_applies(folder_tree, tmp_path):
    text = run("convert", "--help").output
    assert "[default: 224]" in text and "[default: align]" in text
    config = tmp_path / "p.yaml"
    config.write_text("params: {size: 24, patch: 3, crop: center}\n")
    out = tmp_path / "c.zarr"
    result = run("convert", folder_tree["root"], "-o", out, "--config", config, "--patch", "5",
                 "-q")
    assert result.exit_code in (0, 3), result.output
    params = open_store(out).params
    # The config's size and crop hold (option defaults do not override them), --patch does.
    assert (params.size, params.crop, params.patch) == (24, "center", 5)


def test_ablate_takes_a_shipped_grid_by_name(tmp_path):
    from ahdi.pipeline.ablate import resolve_grid, shipped_grids

    assert resolve_grid("table3_patch") == shipped_grids()["table3_patch"]
    assert resolve_grid("table3_patch.yaml") == shipped_grids()["table3_patch"]
    own = tmp_path / "table3_patch.yaml"
    own.write_text("patch: [3]\n")
    assert resolve_grid(own) == own
    result = run("ablate", "x", "--grid", "tabel3", "--task", "binary", "--label", "y",
                 "--out", tmp_path / "a")
    assert result.exit_code == 1
    assert "Error: tabel3: no such grid file, and not the name of a shipped grid " \
           "(example_samples, level2, table1_2_representations, table3_patch" in result.output
