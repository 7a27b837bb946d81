"""Reliability: bad inputs fail alone, kills resume, real clusters, determinism.

Everything here runs the real thing: ``ahdi convert`` as a subprocess that
is killed with SIGKILL or SIGINT, a ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 (one of them SIGKILLed mid-graph, one started in a
mount namespace where the data folder is hidden). Every process a test
starts is killed in a ``finally`` block. docs/reliability.md says what each
test guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ahdi.kernels import AhdiParams
from ahdi.pipeline import graph
from ahdi.pipeline.cli import EXIT_INTERRUPTED, EXIT_SOME_FAILED, main
from ahdi.pipeline.graph import ClusterError, convert
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.store import lock_path, open_store

from tests import fixtures as fx
from tests.fixtures import store_array_bytes, store_chunk_files

REPO = Path(__file__).resolve().parent.parent
PARAMS = AhdiParams(size=16, patch=3, crop="center", n_segments=3, min_len=2)
REPS = ("ahdi", "mdv")  # the CLI's default
SMALL = ["--size", "16", "--patch", "3", "--crop", "center", "--n-segments", "3",
         "--min-len", "2"]
N_MANY = 48


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def ahdi(*args) -> list[str]:
    """The command line of ``ahdi ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "ahdi.pipeline.cli", *map(str, args)]


@contextlib.contextmanager
def processes():
    """A list to append Popen objects to; every one is SIGKILLed and reaped at exit."""
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


def start(procs: list, cmd: list[str], log: Path | None = None, **kwargs) -> subprocess.Popen:
    """Start ``cmd`` in the repository; output piped, or appended to ``log`` (servers,
    whose output nobody reads while they run, must not fill a pipe and block)."""
    if log is None:
        out = err = subprocess.PIPE
    else:
        out, err = open(log, "a"), subprocess.STDOUT
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err, text=True, **kwargs)
    finally:
        if log is not None:
            out.close()
    procs.append(proc)
    return proc


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Wait for a process; returns (exit status, stdout + stderr)."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def finished_items(store_path: Path) -> int:
    """Items computed (done or failed), read from the files: staged ones waiting for
    their shard's merge (docs/store.md), and merged ones (their status written)."""
    staged = len(list((store_path / ".staging").rglob("*.npz")))
    if not (store_path / "status" / "c").is_dir():
        return staged
    try:
        status = zarr.open_array(str(store_path / "status"), mode="r")[:]
    except Exception:   # being rewritten by a merge right now: ask again
        return staged
    return staged + int((status != "pending").sum())


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            said = proc.communicate()[1] if proc.stderr else ""
            raise AssertionError(f"process ended (status {proc.returncode}) before {what}: "
                                 f"{said[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """N_MANY small videos (40 frames, 64 x 48): a run long enough to interrupt."""
    root = tmp_path_factory.mktemp("many") / "videos"
    for i in range(N_MANY):
        fx.write_video(root / f"v{i:02d}.mp4", fx.blob_frames(40, w=64, h=48, seed=i))
    return root


@pytest.fixture(scope="module")
def many_items(many):
    return resolve_source(str(many))[1]


@pytest.fixture(scope="module")
def reference(many_items, tmp_path_factory) -> Path:
    """The uninterrupted run with the embedded default scheduler (threads, 2 workers)."""
    path = tmp_path_factory.mktemp("reference") / "s.zarr"
    report = convert(many_items, path, PARAMS, REPS, workers=2)
    assert report.done == N_MANY
    return path


def assert_same_store(path: Path, reference: Path) -> None:
    """Every item done, the chunk files and the decoded arrays equal the reference's."""
    assert open_store(path).counts() == {"done": N_MANY, "failed": 0, "pending": 0}
    assert store_chunk_files(path) == store_chunk_files(reference)
    assert store_array_bytes(path) == store_array_bytes(reference)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
def _unprivileged() -> list[str]:
    """A prefix that runs a command without the right to ignore file permissions.

    Root reads a chmod-000 file anyway, so as root the command runs with
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (like any user).
    """
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.slow
def test_bad_inputs_fail_alone_with_named_errors(tmp_path):
    root = tmp_path / "mixed"
    fx.write_video(root / "good1.mp4", fx.blob_frames(8, seed=1))
    fx.write_video(root / "good2.avi", fx.blob_frames(8, seed=2), fourcc="MJPG")
    fx.write_frames(root / "goodseq", fx.blob_frames(6, seed=3))
    full = fx.write_video(root / "full.mp4", fx.blob_frames(30, seed=4))
    data = full.read_bytes()
    (root / "cut.mp4").write_bytes(data[: len(data) // 2])  # MP4 cut in the middle
    full.unlink()
    fx.make_truncated_video(root / "cutavi.avi", n=30, keep=0.6)  # decodes partly
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    (root / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    fx.write_video(root / "one.mp4", fx.blob_frames(1))
    fx.write_frames(root / "mixedseq", fx.blob_frames(4, seed=5))
    fx.write_frames(root / "mixedseq", fx.blob_frames(2, w=40, h=30, seed=6), start=5)
    (root / "emptyseq").mkdir()
    fx.write_frames(root / "badseq", fx.blob_frames(6, seed=7))
    (root / "badseq" / "frame3.png").write_bytes(b"not a png")
    fx.write_video(root / "noperm.mp4", fx.blob_frames(8, seed=8))
    (root / "noperm.mp4").chmod(0)
    expected = {  # video id -> what its error must say (besides the file's name)
        "cut": ("cut.mp4", "not a decodable video"),
        "empty": ("empty.mp4", "empty file (0 bytes)"),
        "text": ("text.mp4", "not a decodable video"),
        "random": ("random.mp4", "not a decodable video"),
        "one": ("one.mp4", "needs at least 2 frames, got 1"),
        "mixedseq": ("mixedseq/frame5.png", "frames of mixed sizes"),
        "emptyseq": ("emptyseq", "empty frame folder"),
        "badseq": ("badseq/frame3.png", "frame image cannot be decoded"),
        "missing": ("missing.mp4", "file does not exist"),
        "noperm": ("noperm.mp4", "permission denied"),
    }
    good = ["good1", "good2", "goodseq", "cutavi"]
    rows = [f"{p}," for p in ("good1.mp4", "good2.avi", "goodseq", "cutavi.avi", "cut.mp4",
                              "empty.mp4", "text.mp4", "random.mp4", "one.mp4", "mixedseq",
                              "emptyseq", "badseq", "missing.mp4", "noperm.mp4")]
    csv = tmp_path / "labels.csv"
    csv.write_text("path,subject\n" + "\n".join(rows) + "\n")
    out = tmp_path / "s.zarr"

    with processes() as procs:
        proc = start(procs, _unprivileged() + ahdi("convert", root, "--labels", csv, "-o", out,
                                                   *SMALL, "--workers", "2"))
        status, output = finish(proc)
    assert status == EXIT_SOME_FAILED, output
    assert f"{len(good)} converted, {len(expected)} failed" in output
    assert "Traceback" not in output

    store = open_store(out)
    table = {row["video_id"]: row for row in store.item_table()}
    for vid in good:
        assert table[vid]["status"] == "done", table[vid]
    for vid, (name, problem) in expected.items():
        row = table[vid]
        assert row["status"] == "failed"
        assert name in row["error"] and problem in row["error"], row["error"]
        assert f"failed {vid}: {row['error']}" in output
    # The truncated AVI converts from the 15 frames that decode, says so, and is no blank.
    cut = table["cutavi"]
    assert cut["n_frames"] == 15
    assert "cutavi.avi: decoded 15 of 30 frames (truncated or damaged video)" in cut["warning"]
    image = store.image("ahdi", cut["index"])
    assert image.min() == 0 and image.max() == 255

    inspected = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    summary = json.loads(inspected.output)
    assert summary["counts"] == {"done": len(good), "failed": len(expected), "pending": 0}
    assert sorted(f["video_id"] for f in summary["failures"]) == sorted(expected)


@pytest.mark.parametrize("case", ["unknown dataset", "root missing", "malformed yaml",
                                  "patch even", "output folder not a store"])
def test_bad_configuration_refused_before_work(folder_tree, tmp_path, case):
    datasets = tmp_path / "datasets.yaml"
    out = tmp_path / "s.zarr"
    source, extra = str(folder_tree["root"]), []
    if case == "unknown dataset":
        datasets.write_text("datasets:\n  mine:\n    adapter: folder\n    root: /x\n")
        source, extra = "theirs", ["--datasets", datasets]
        message = "Error: 'theirs' is neither an existing file or folder nor a dataset name; " \
                  "known datasets: mine"
    elif case == "root missing":
        datasets.write_text(f"datasets:\n  mine:\n    adapter: folder\n"
                            f"    root: {tmp_path / 'gone'}\n")
        source, extra = "mine", ["--datasets", datasets]
        message = (f"Error: {tmp_path / 'gone'}: root folder of dataset 'mine' (from "
                   f"datasets.yaml) does not exist; set AHDI_MINE_ROOT or pass --root")
    elif case == "malformed yaml":
        datasets.write_text("datasets:\n  mine:\n    adapter: folder\n    root: [x\n")
        source, extra = "mine", ["--datasets", datasets]
        message = f"Error: {datasets}:5: datasets file is not valid YAML"
    elif case == "patch even":
        extra = ["--patch", "4"]
        message = "Error: bad parameter: patch must be an odd integer >= 1, got 4"
    else:
        out.mkdir()
        (out / "mine.txt").write_text("keep me\n")
        message = f"Error: {out} exists and is not an ahdi store"
    result = CliRunner().invoke(main, ["convert", source, "-o", str(out), *map(str, extra)])
    assert result.exit_code == 1
    assert message in result.output, result.output
    if case == "output folder not a store":
        assert os.listdir(out) == ["mine.txt"]
    else:
        assert not out.exists()  # refused before any work


# ----------------------------------------------------------------------------
# crashes and resume
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_then_rerun_finishes_only_missing_and_is_identical(many, reference, tmp_path):
    out = tmp_path / "s.zarr"
    cmd = ahdi("convert", many, "-o", out, *SMALL, "--workers", "1")
    with processes() as procs:
        proc = start(procs, cmd)
        wait_until(lambda: finished_items(out) >= 3, 120, "3 finished items", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed_at = finished_items(out)
        assert 3 <= killed_at < N_MANY, "the run ended before the kill"
        lock = json.loads(Path(lock_path(out)).read_text())  # left behind by the killed run
        assert (lock["host"], lock["pid"]) == (socket.gethostname(), proc.pid)

        status, output = finish(start(procs, cmd))
    assert status == 0, output
    done_before = open_store(out).counts()["done"]  # after the rerun: all
    assert done_before == N_MANY
    assert "took over the lock" in output and "is no longer running" in output
    skipped = int(output.split("videos (")[1].split(" already done")[0])
    assert killed_at - 1 <= skipped <= killed_at + 1  # one may finish as the kill lands
    assert f"{N_MANY - skipped} converted, 0 failed, {skipped} already done" in output
    assert not Path(lock_path(out)).exists()
    assert_same_store(out, reference)


@pytest.mark.slow
def test_sigint_stops_cleanly_and_says_how_to_resume(many, many_items, reference, tmp_path):
    out = tmp_path / "s.zarr"
    with processes() as procs:
        proc = start(procs, ahdi("convert", many, "-o", out, *SMALL, "--workers", "1"))
        wait_until(lambda: finished_items(out) >= 3, 120, "3 finished items", proc)
        proc.send_signal(signal.SIGINT)
        status, output = finish(proc, timeout=60)
    assert status == EXIT_INTERRUPTED, output
    assert (f"interrupted: finished items are kept in {out}; run the same command again "
            f"to resume") in output
    assert "Traceback" not in output
    assert not Path(lock_path(out)).exists()
    store = open_store(out)
    counts = store.counts()
    assert counts["failed"] == 0 and 3 <= counts["done"] < N_MANY
    report = convert(many_items, out, PARAMS, REPS)
    assert report.skipped == counts["done"]
    assert_same_store(out, reference)


@pytest.mark.slow
def test_second_process_on_the_same_store_is_refused(many, reference, tmp_path):
    out = tmp_path / "s.zarr"
    with processes() as procs:
        first = start(procs, ahdi("convert", many, "-o", out, *SMALL, "--workers", "1"))
        wait_until(lambda: finished_items(out) >= 1, 120, "the first run to start", first)
        lock = json.loads(Path(lock_path(out)).read_text())
        assert (lock["host"], lock["pid"]) == (socket.gethostname(), first.pid)
        # The second process (this one) runs the same command while the first writes.
        second = CliRunner().invoke(main, ["convert", str(many), "-o", str(out), *SMALL])
        assert first.poll() is None, "the first run ended too soon to test the lock"
        status, output = finish(first)
    assert second.exit_code == 1
    assert (f"Error: store {out} is locked by pid {first.pid} on host "
            f"{socket.gethostname()}") in second.output
    assert "another ahdi process is writing it" in second.output
    assert status == 0, output
    assert_same_store(out, reference)


# ----------------------------------------------------------------------------
# a real cluster
# ----------------------------------------------------------------------------
def worker_cmd(address: str, name: str, local_dir: Path) -> list[str]:
    # No nanny: SIGKILL on this pid loses the worker for good (a nanny would restart it).
    return [sys.executable, "-m", "distributed.cli.dask_worker", address, "--name", name,
            "--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1",
            "--death-timeout", "30", "--local-directory", str(local_dir)]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A real ``dask scheduler`` on 127.0.0.1 and a Client of this test process."""
    distributed = pytest.importorskip("distributed")
    folder = tmp_path_factory.mktemp("scheduler")
    info = folder / "scheduler.json"
    with processes() as procs:
        proc = start(procs, [sys.executable, "-m", "distributed.cli.dask_scheduler",
                             "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                             "--scheduler-file", str(info), "--idle-timeout", "900"],
                     log=folder / "scheduler.log")
        wait_until(info.exists, 60, "the scheduler file", proc)
        wait_until(lambda: "address" in info.read_text(), 10, "the scheduler address", proc)
        address = json.loads(info.read_text())["address"]
        with distributed.Client(address, timeout="30s") as client:
            yield address, client, folder


@contextlib.contextmanager
def workers(scheduler, names, hidden: Path | None = None):
    """Start named workers and wait for them; with ``hidden``, the last one runs in a
    mount namespace where that folder is an empty tmpfs (a node without the mount)."""
    address, client, folder = scheduler
    with processes() as procs:
        started = {}
        for k, name in enumerate(names):
            cmd = worker_cmd(address, name, folder)
            if hidden is not None and k == len(names) - 1:
                cmd = _hide(hidden) + cmd
            started[name] = start(procs, cmd, log=folder / f"{name}.log")

        def joined():
            seen = {w["name"] for w in client.scheduler_info()["workers"].values()}
            return set(names) <= seen
        wait_until(joined, 60, f"workers {names} to join")
        yield started
    wait_until(lambda: not client.scheduler_info()["workers"], 30, "the workers to leave")


def _hide(folder: Path) -> list[str]:
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *user, "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs tmpfs "$0" && exec "$@"', str(folder)]


def _can_hide(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(_hide(folder) + ["true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.slow
def test_no_workers_gives_a_clear_error(scheduler, many_items, tmp_path, monkeypatch):
    address, client, _ = scheduler
    assert not client.scheduler_info()["workers"]
    monkeypatch.setattr(graph, "WORKER_WAIT_S", 1.0)
    with pytest.raises(ClusterError, match=f"no dask worker joined the scheduler at "
                                           f"{address} within 1 s"):
        convert(many_items, tmp_path / "s.zarr", PARAMS, REPS, scheduler=address)


@pytest.mark.slow
def test_real_cluster_equals_embedded_default(scheduler, many, reference, tmp_path):
    address = scheduler[0]
    out = tmp_path / "s.zarr"
    with workers(scheduler, ["w1", "w2"]), processes() as procs:
        status, output = finish(start(procs, ahdi("convert", many, "-o", out, *SMALL,
                                                  "--scheduler", address)))
    assert status == 0, output
    assert_same_store(out, reference)


@pytest.mark.slow
def test_lost_worker_is_rescheduled_on_the_survivor(scheduler, many, reference, tmp_path):
    address, _, folder = scheduler
    out = tmp_path / "s.zarr"
    with workers(scheduler, ["keep", "lose"]) as started, processes() as procs:
        run = start(procs, ahdi("convert", many, "-o", out, *SMALL, "--scheduler", address))
        wait_until(lambda: finished_items(out) >= 4, 120, "4 finished items", run)
        started["lose"].send_signal(signal.SIGKILL)
        started["lose"].wait(timeout=30)
        assert finished_items(out) < N_MANY, "the run ended before the worker was killed"
        status, output = finish(run)
    assert status == 0, output
    log = (folder / "scheduler.log").read_text()
    assert "Remove worker" in log and "name: lose" in log  # the scheduler saw it go
    assert_same_store(out, reference)


@pytest.mark.slow
def test_worker_that_cannot_see_the_data_gives_one_clear_error(scheduler, folder_tree,
                                                              tmp_path):
    """Simulated: the second worker runs in a mount namespace where the folder holding
    the source and the store is an empty tmpfs, like a node without that mount."""
    data = tmp_path / "data"
    shutil.copytree(folder_tree["root"], data / "clips")
    if not _can_hide(data):
        pytest.skip("cannot make a mount namespace here (unshare)")
    address = scheduler[0]
    out = data / "s.zarr"
    with workers(scheduler, ["sees", "blind"], hidden=data), processes() as procs:
        started = time.monotonic()
        status, output = finish(start(procs, ahdi("convert", data / "clips", "-o", out,
                                                  *SMALL, "--scheduler", address)),
                                timeout=90)
        seconds = time.monotonic() - started
    assert status == 1, output
    host = socket.gethostname()
    assert (f"Error: worker on {host} cannot see the store folder {out} (put the source and "
            f"the store on a filesystem every worker mounts at the same path)") in output
    assert output.count("cannot see") == 1 and "Traceback" not in output
    assert seconds < 60
    assert open_store(out).counts()["done"] == 0  # nothing ran


# ----------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_one_worker_equals_two(many_items, reference, tmp_path):
    convert(many_items, tmp_path / "s.zarr", PARAMS, REPS, workers=1)
    assert_same_store(tmp_path / "s.zarr", reference)


@pytest.mark.slow
def test_thread_settings_do_not_change_bytes(many, reference, tmp_path):
    """Another process with Numba, OpenMP and OpenCV told to use other thread counts,
    on the process scheduler, gives the same bytes as the threaded reference."""
    out = tmp_path / "s.zarr"
    code = ("import cv2, sys; cv2.setNumThreads(8); from ahdi.pipeline.cli import main; "
            "main(sys.argv[1:])")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               OPENCV_FOR_THREADS_NUM="2")
    with processes() as procs:
        status, output = finish(start(procs, [sys.executable, "-c", code, "convert", str(many),
                                              "-o", str(out), *SMALL, "--scheduler",
                                              "processes", "--workers", "2"], env=env))
    assert status == 0, output
    assert_same_store(out, reference)
