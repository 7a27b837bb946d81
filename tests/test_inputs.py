"""The inputs' accidents of issue 14: each one repeated, and what it gets now.

A FIFO named like a video, an unreadable subfolder, a text file that is
not UTF-8 (labels CSV, --config, datasets registry), one video written
three ways in a labels CSV, a --size that cannot fit in memory, a missing
--tmp-dir, a clip whose frames never change, duplicate or mostly-numeric
label columns, thumbnails beside videos, a linked subject folder, FFmpeg's
and OpenCV's own log lines, and the exit status of every kind of error.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline.cli import main
from ahdi.pipeline.errors import DatasetError, SettingError, VideoError
from ahdi.pipeline.graph import compute_task
from ahdi.pipeline.items import Item
from ahdi.pipeline.registry import load_datasets_yaml
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.resources import check_memory, check_tmp_dir
from ahdi.pipeline.sources import VideoSource, frame_folder_source
from ahdi.pipeline.store import open_store
from ahdi.pipeline.video import open_video
from tests import fixtures as fx

P = AhdiParams(size=16, crop="center")
SMALL = ["--size", "16", "--patch", "3", "--crop", "center", "--n-segments", "3",
         "--min-len", "2"]
AHDI = [sys.executable, "-m", "ahdi.pipeline.cli"]
LATIN1 = "caf\xe9".encode("latin-1")


def run(*args) -> "CliRunner.invoke":
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    """The one ``Error:`` line of a refused command; no traceback."""
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def listed(source, **kw) -> tuple[list[str], list[str]]:
    """(video ids, left-out messages) of a listing."""
    left_out: list[str] = []
    _, items = resolve_source(source, on_skip=left_out.append, **kw)
    return [it.video_id for it in items], left_out


@pytest.fixture
def clips(tmp_path) -> Path:
    """clips/s1/{a,b}.mp4 and clips/s2/c.mp4, 8 moving frames each."""
    root = tmp_path / "clips"
    for rel, seed in (("s1/a.mp4", 1), ("s1/b.mp4", 2), ("s2/c.mp4", 3)):
        fx.write_video(root / rel, fx.blob_frames(8, seed=seed))
    return root


# ----------------------------------------------------------------------
# only regular files are opened
# ----------------------------------------------------------------------
def _unblock(fifo: Path) -> None:
    # A reader stuck in open() on a FIFO returns once a writer opens it.
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def video_error_beside(fifo: Path, read) -> str:
    """The VideoError message of ``read()``, run in a thread that a FIFO must not hang."""
    outcome: list = []

    def target():
        try:
            read()
        except VideoError as exc:
            outcome.append(str(exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(20)
    hung = thread.is_alive()
    for _ in range(3):  # a hung reader may open the FIFO more than once
        _unblock(fifo)
        thread.join(1)
    assert not hung, f"reading waited for a writer on the FIFO {fifo}"
    assert len(outcome) == 1, outcome
    return outcome[0]


def test_a_fifo_named_like_a_video_is_left_out_of_the_listing(clips):
    os.mkfifo(clips / "s1" / "pipe.mp4")
    ids, left_out = listed(clips)
    assert ids == ["s1/a", "s1/b", "s2/c"]
    assert left_out == [f"{clips / 's1' / 'pipe.mp4'}: is a FIFO (named pipe), not a "
                        "regular file"]


def test_reading_a_fifo_is_refused_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    message = video_error_beside(fifo, lambda: open_video(VideoSource("file", str(fifo)), P))
    assert message == f"{fifo}: is a FIFO (named pipe), not a regular file"


def test_a_fifo_as_source_or_labels_is_one_error_line(clips, tmp_path):
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError, match=rf"^{fifo}: is a FIFO \(named pipe\), not a video "
                                           r"file, folder or archive$"):
        resolve_source(fifo)
    labels = tmp_path / "labels.csv"
    os.mkfifo(labels)
    with pytest.raises(DatasetError, match=rf"^{labels}: labels CSV is a FIFO \(named pipe\), "
                                           r"not a regular file$"):
        resolve_source(clips, labels_csv=labels)


def test_a_frame_folder_image_that_is_a_fifo_fails_its_item(tmp_path):
    fx.write_frames(tmp_path / "seq", fx.blob_frames(3))
    fifo = tmp_path / "seq" / "frame4.png"
    os.mkfifo(fifo)

    def read():
        with open_video(frame_folder_source(tmp_path / "seq"), P) as reader:
            list(reader)

    assert video_error_beside(fifo, read) == f"{fifo}: is a FIFO (named pipe), not a regular file"


# ----------------------------------------------------------------------
# an unreadable folder is an error that names it
# ----------------------------------------------------------------------
def test_an_unreadable_subfolder_is_an_error_naming_it(clips, monkeypatch):
    locked = str(clips / "s2")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DatasetError, match=rf"^{locked}: cannot list the folder \(Permission "
                                           r"denied\)$"):
        resolve_source(clips)


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists every folder")
def test_an_unreadable_subfolder_for_real(clips):
    (clips / "s2").chmod(0)
    try:
        with pytest.raises(DatasetError, match="s2: cannot list the folder"):
            resolve_source(clips)
    finally:
        (clips / "s2").chmod(0o755)


# ----------------------------------------------------------------------
# text files that are not UTF-8: one Error: line naming file and line
# ----------------------------------------------------------------------
def test_a_latin1_labels_csv_names_file_line_and_byte(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"path,group\ns1/a.mp4,x\ns1/b.mp4," + LATIN1 + b"\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(clips, labels_csv=labels)
    assert str(err.value) == (f"{labels}:3: labels CSV is not UTF-8 text (byte 0xe9 at column "
                              "13); save it as UTF-8")
    line = one_error_line(run("convert", clips, "-o", tmp_path / "s.zarr", "--labels", labels))
    assert line == f"Error: {err.value}"
    assert not (tmp_path / "s.zarr").exists()


def test_a_latin1_labels_csv_inside_an_archive(clips, tmp_path):
    (clips / "labels.csv").write_bytes(b"path\n" + LATIN1 + b".mp4\n")
    arc = fx.make_archive(clips, tmp_path / "clips.zip")
    registry = tmp_path / "datasets.yaml"
    registry.write_text(f"datasets:\n  mine:\n    adapter: folder\n    root: {arc}\n"
                        "    labels: labels.csv\n")
    with pytest.raises(DatasetError, match=r"^clips/labels\.csv:2: labels CSV is not UTF-8 "
                                           r"text \(byte 0xe9 at column 4\)"):
        resolve_source("mine", datasets_yaml=registry)


def test_a_latin1_biovid_samples_csv_names_file_and_line(tmp_path):
    root = fx.make_biovid_tree(tmp_path / "PartA")["root"]
    samples = root / "samples.csv"
    lines = samples.read_bytes().splitlines(keepends=True)
    samples.write_bytes(b"".join(lines[:2]) + lines[2].replace(b"\t", b"\t" + LATIN1, 1)
                        + b"".join(lines[3:]))
    with pytest.raises(DatasetError, match=rf"^{samples}:3: BioVid samples\.csv is not UTF-8 "
                                           r"text \(byte 0xe9 at column \d+\); save it as "
                                           r"UTF-8$"):
        resolve_source(root)


def test_a_utf8_labels_csv_with_a_byte_order_mark_reads(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes("\ufeffpath,group\ns1/a.mp4,café\n".encode())
    _, items = resolve_source(clips, labels_csv=labels)
    assert [(it.video_id, it.labels) for it in items] == [("s1/a", {"group": "café"})]


def test_a_latin1_config_is_one_error_line(clips, tmp_path):
    config = tmp_path / "params.yaml"
    config.write_bytes(b"size: 16\n# " + LATIN1 + b"\n")
    line = one_error_line(run("convert", clips, "-o", tmp_path / "s.zarr", "--config", config))
    assert line == (f"Error: {config}:2: config is not UTF-8 text (byte 0xe9 at column 6); "
                    "save it as UTF-8")


def test_a_latin1_datasets_registry_is_one_error_line(tmp_path):
    registry = tmp_path / "datasets.yaml"
    registry.write_bytes(b"datasets:\n  mine:\n    adapter: folder\n    description: "
                         + LATIN1 + b"\n")
    message = (f"{registry}:4: datasets file is not UTF-8 text (byte 0xe9 at column 21); "
               "save it as UTF-8")
    with pytest.raises(DatasetError, match=f"^{re.escape(message)}$"):
        load_datasets_yaml(registry)
    line = one_error_line(run("convert", "mine", "-o", tmp_path / "s.zarr",
                              "--datasets", registry))
    assert line == f"Error: {message}"


def test_a_missing_or_folder_config_is_one_error_line(clips, tmp_path):
    for config, problem in ((tmp_path / "nope.yaml", "config does not exist"),
                            (tmp_path, "config is a folder, not a file")):
        line = one_error_line(run("convert", clips, "-o", tmp_path / "s.zarr",
                                  "--config", config))
        assert line == f"Error: {config}: {problem}"


# ----------------------------------------------------------------------
# labels CSV: paths normalised, duplicate columns, numbers with typos
# ----------------------------------------------------------------------
def test_one_video_written_three_ways_is_refused_naming_the_lines(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,subject\ns1/a.mp4,p1\ns1//a.mp4,p2\ns1/./a.mp4,p3\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(clips, labels_csv=labels)
    assert str(err.value) == (f"{labels}:3: path 's1//a.mp4' names the same video as line 2 "
                              "(s1/a.mp4)")


def test_csv_paths_are_normalised_into_the_folders_ids(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path\n./s1//a.mp4\ns1/./b.mp4\ns2\\c.mp4\n")
    ids, _ = listed(clips, labels_csv=labels)
    assert ids == ["s1/a", "s1/b", "s2/c"]


def test_duplicate_column_names_are_refused(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,score,group,score\ns1/a.mp4,1,x,2\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(clips, labels_csv=labels)
    assert str(err.value) == (f"{labels}:1: column 'score' appears twice in the header "
                              "(columns 2 and 4)")


def test_a_numeric_column_with_a_few_words_is_refused_naming_the_rows(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,vas\ns1/a.mp4,3\ns1/b.mp4,NA\ns2/c.mp4,4.5\n"
                      "s2/d.mp4,7\ns2/e.mp4,seven\n")
    with pytest.raises(DatasetError) as err:
        resolve_source(clips, labels_csv=labels)
    assert str(err.value) == (f"{labels}: column 'vas' holds numbers except on line 3 ('NA'), "
                              "line 6 ('seven'); fix those cells, or leave a missing value "
                              "empty")


def test_a_text_column_with_some_numbers_stays_text(clips, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,visit,vas\ns1/a.mp4,baseline,3\ns1/b.mp4,2,\ns2/c.mp4,followup,nan\n")
    _, items = resolve_source(clips, labels_csv=labels)
    assert [it.labels["visit"] for it in items] == ["baseline", "2", "followup"]
    assert items[0].labels["vas"] == 3.0 and np.isnan(items[1].labels["vas"])


# ----------------------------------------------------------------------
# a folder of videos is read as videos
# ----------------------------------------------------------------------
def test_thumbnails_beside_videos_are_left_out(clips):
    fx.write_frames(clips / "s1", fx.blob_frames(2), pattern="thumb{i}.jpg")
    fx.write_frames(clips / "s3" / "seq", fx.blob_frames(4))  # a real frame folder
    ids, left_out = listed(clips)
    assert ids == ["s1/a", "s1/b", "s2/c", "s3/seq"]
    assert left_out == [f"{clips / 's1'}: 2 image(s) beside its videos (thumb1.jpg, "
                        "thumb2.jpg); a folder that holds videos is not a frame folder"]


def test_a_linked_subject_folder_is_followed(clips, tmp_path):
    fx.write_video(tmp_path / "elsewhere" / "s9" / "d.mp4", fx.blob_frames(8, seed=9))
    (clips / "s9").symlink_to(tmp_path / "elsewhere" / "s9")
    _, items = resolve_source(clips)
    assert {it.video_id: it.subject for it in items} == {
        "s1/a": "s1", "s1/b": "s1", "s2/c": "s2", "s9/d": "s9"}


def test_a_link_loop_or_a_second_link_is_listed_once(clips):
    (clips / "s2" / "loop").symlink_to(clips)
    (clips / "again").symlink_to(clips / "s1")
    ids, left_out = listed(clips)
    assert ids == ["s1/a", "s1/b", "s2/c"]
    assert left_out == [f"{clips / 'again'}: a link to {clips / 's1'}, a folder listed already",
                        f"{clips / 's2' / 'loop'}: a link to {clips}, a folder listed already"]


# ----------------------------------------------------------------------
# sizes and the temporary folder, checked before any work
# ----------------------------------------------------------------------
def test_a_size_that_cannot_fit_in_memory_is_refused_with_the_arithmetic(clips, tmp_path):
    with pytest.raises(SettingError) as err:
        check_memory(AhdiParams(size=100000), available=64 * 10**9)
    assert str(err.value) == ("size 100000: one video needs at least 100000 x 100000 x 3 x "
                              "(8 + 1) bytes = 270.0 GB (one float64 image and one uint8 frame "
                              "of that side), more than the 64.0 GB of memory here; choose a "
                              "smaller size")
    check_memory(AhdiParams(size=224), available=64 * 10**9)
    line = one_error_line(run("convert", clips, "-o", tmp_path / "s.zarr", "--size", "100000"))
    assert line.startswith("Error: size 100000: one video needs at least 100000 x 100000 x 3")
    assert not (tmp_path / "s.zarr").exists()


def test_a_missing_tmp_dir_is_refused_before_any_work(clips, tmp_path):
    missing = tmp_path / "no-such-folder"
    line = one_error_line(run("convert", clips, "-o", tmp_path / "s.zarr", *SMALL,
                              "--tmp-dir", missing))
    assert line == f"Error: {missing}: temporary folder (--tmp-dir) does not exist"
    assert not (tmp_path / "s.zarr").exists()


def test_an_unwritable_tmp_dir_is_refused(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(SettingError, match=rf"^{tmp_path}: cannot write in the temporary "
                                           r"folder \(--tmp-dir\) \(Read-only file system\)$"):
        check_tmp_dir(tmp_path)
    with pytest.raises(SettingError, match=r"temporary folder \(--tmp-dir\) is not a folder$"):
        check_tmp_dir(fx.write_video(tmp_path / "v.mp4", fx.blob_frames(2)))


# ----------------------------------------------------------------------
# a clip whose frames never change gets a warning
# ----------------------------------------------------------------------
@pytest.mark.parametrize("value,black", [(0, " (all black)"), (128, "")])
def test_a_clip_whose_frames_never_change_warns(tmp_path, value, black):
    path = fx.make_blank_video(tmp_path / "still.mp4", n=8, value=value)
    item = Item("still", VideoSource("file", str(path)), "s")
    result, _fps, warnings, _s, _face = compute_task(item, P, ("ahdi",), 2**24, None)
    assert not result.ahdi.any()  # why the warning matters: a blank image
    assert warnings == (f"{path}: its 8 frames never change{black}; its dynamic images are "
                        "blank",)


def test_a_moving_clip_does_not_warn(tmp_path):
    path = fx.write_video(tmp_path / "moving.mp4", fx.blob_frames(8, black_first=3))
    item = Item("moving", VideoSource("file", str(path)), "s")
    assert compute_task(item, P, ("ahdi",), 2**24, None)[2] == ()


# ----------------------------------------------------------------------
# FFmpeg's and OpenCV's own log lines stay out of our output
# ----------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_with_every_input_accident_prints_only_our_lines(clips, tmp_path):
    s1 = clips / "s1"
    data = (s1 / "a.mp4").read_bytes()
    (s1 / "cut.mp4").write_bytes(data[: len(data) * 3 // 10])   # cut inside mdat: no moov
    os.mkfifo(s1 / "pipe.mp4")
    fx.write_frames(s1, fx.blob_frames(1), pattern="thumb{i}.jpg")
    fx.make_blank_video(clips / "s2" / "black.mp4", value=0)
    store = tmp_path / "s.zarr"
    try:
        done = subprocess.run([*AHDI, "convert", str(clips), "-o", str(store), *SMALL],
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
    finally:
        _unblock(s1 / "pipe.mp4")
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    failure = (f"{s1 / 'cut.mp4'}: not a decodable video (OpenCV/FFmpeg cannot open it; "
               "FFmpeg: moov atom not found)")
    lines = [line.rstrip() for line in done.stderr.splitlines()]
    assert lines[:2] == [
        f"left out: {s1 / 'pipe.mp4'}: is a FIFO (named pipe), not a regular file",
        f"left out: {s1}: 1 image(s) beside its videos (thumb1.jpg); a folder that holds "
        "videos is not a frame folder"]
    assert f"failed: {failure}" in lines, "\n".join(lines)
    assert f"  failed s1/cut: {failure}" in lines
    # nothing of FFmpeg's ([mov,mp4,...@ 0x...]) or OpenCV's ([ WARN:0@...]) own
    assert not [line for line in lines if line.startswith("[") and "#" not in line]
    warnings = open_store(store).warnings()
    assert f"{clips / 's2' / 'black.mp4'}: its 6 frames never change (all black); its " \
           "dynamic images are blank" in warnings


# ----------------------------------------------------------------------
# exit statuses: the documented ones, click's usage errors included
# ----------------------------------------------------------------------
EXIT_CASES = [
    # (arguments, status): 0 fine, 1 ahdi refused (an Error: line), 2 click refused
    (["--version"], 0),
    (["convert", "--help"], 0),
    ([], 2),
    (["nope"], 2),
    (["convert"], 2),
    (["convert", "x"], 2),
    (["convert", "x", "-o", "y", "--size", "abc"], 2),
    (["convert", "x", "-o", "y", "--crop", "sideways"], 2),
    (["convert", "x", "-o", "y", "--bogus"], 2),
    (["inspect", "s.zarr", "--bogus"], 2),
    (["train", "s.zarr", "--task", "nope"], 2),
    (["convert", "no-such-dataset", "-o", "y"], 1),
    (["convert", "x", "-o", "y", "--size", "0"], 1),
    (["convert", "x", "-o", "y", "--size", "100000"], 1),
    (["inspect", "/no/such/store.zarr"], 1),
]


def _documented_statuses() -> dict[int, str]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "usage.md").read_text()
    return {int(code): what for code, what in re.findall(r"^\| (\d+) \| (.+) \|$", text, re.M)}


@pytest.mark.parametrize("args,status", EXIT_CASES)
def test_exit_status_is_the_documented_one(args, status, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    if status:
        assert isinstance(result.exception, SystemExit)
        assert [line for line in result.output.splitlines() if line.startswith("Error:")] \
            or args == []
    documented = _documented_statuses()
    assert status in documented
    if status == 2:
        assert "usage" in documented[2].lower()


def test_the_documented_statuses_match_the_cli_reference():
    documented = _documented_statuses()
    assert {0, 1, 2, 3, 130} <= set(documented)
    top = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    top = top.split("\n## ", 1)[0]
    assert set(int(code) for code in re.findall(r"\b(\d+) [a-z]", top)) == set(documented)
