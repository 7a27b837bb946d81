"""Stopping a conversion: SIGTERM, a second Ctrl-C, worker processes that must not outlive us.

Each test runs ``ahdi convert`` as a subprocess, stops it the way a batch
scheduler or a user would, and checks what is left: the exit status and
message, no traceback, no process still running, and a store that the same
command finishes byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from ahdi.kernels import AhdiParams
from ahdi.pipeline.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from ahdi.pipeline.graph import convert
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.store import open_store
from tests import fixtures as fx
from tests.fixtures import store_chunk_files
from tests.test_reliability import ahdi, finish, finished_items, processes, start, wait_until

PARAMS = AhdiParams(size=16, patch=3, crop="center", n_segments=3, min_len=2)
SMALL = ["--size", "16", "--patch", "3", "--crop", "center", "--n-segments", "3",
         "--min-len", "2"]
N = 40


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """N videos of 60 frames: a run long enough to stop in the middle."""
    root = tmp_path_factory.mktemp("signals") / "videos"
    for i in range(N):
        fx.write_video(root / f"v{i:02d}.mp4", fx.blob_frames(60, w=64, h=48, seed=i))
    return root


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory):
    path = tmp_path_factory.mktemp("signals_ref") / "s.zarr"
    items = resolve_source(str(videos))[1]
    assert convert(items, path, PARAMS, ("ahdi", "mdv"), workers=2).done == N
    return path


def resumes_to_reference(out, videos, reference) -> None:
    """The lock is free, the same command finishes the store, and it equals the reference."""
    items = resolve_source(str(videos))[1]
    report = convert(items, out, PARAMS, ("ahdi", "mdv"), workers=2)
    assert open_store(out).counts() == {"done": N, "failed": 0, "pending": 0}
    assert report.skipped >= 1
    assert store_chunk_files(out) == store_chunk_files(reference)


def no_children_left(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_sigterm_is_handled_like_sigint(videos, reference, tmp_path):
    out = tmp_path / "s.zarr"
    with processes() as procs:
        proc = start(procs, ahdi("convert", videos, "-o", out, *SMALL, "--workers", "1"))
        wait_until(lambda: finished_items(out) >= 2, 120, "2 finished items", proc)
        proc.send_signal(signal.SIGTERM)
        status, output = finish(proc, timeout=60)
    assert status == EXIT_TERMINATED, output
    assert (f"terminated (SIGTERM): finished items are kept in {out}; run the same command "
            f"again to resume") in output
    assert "Traceback" not in output
    resumes_to_reference(out, videos, reference)


@pytest.mark.slow
def test_a_second_ctrl_c_exits_at_once_without_a_traceback(videos, reference, tmp_path):
    out = tmp_path / "s.zarr"
    with processes() as procs:
        proc = start(procs, ahdi("convert", videos, "-o", out, *SMALL, "--workers", "2"))
        wait_until(lambda: finished_items(out) >= 2, 120, "2 finished items", proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        status, output = finish(proc, timeout=60)
        took = time.monotonic() - began
    # 130 from our handler; or, when the second signal lands in the last
    # moments of interpreter shutdown (Python has restored the default
    # handlers by then), death by SIGINT, which a shell also reports as 130.
    assert status in (EXIT_INTERRUPTED, -signal.SIGINT), output
    assert took < 10, f"took {took:.1f} s to exit"
    assert "Traceback" not in output and "terminate called" not in output, output
    resumes_to_reference(out, videos, reference)


def _pool_children(proc) -> list[int]:
    """The worker processes of ``proc``'s pool (not the multiprocessing resource tracker)."""
    children = psutil.Process(proc.pid).children(recursive=True)
    return [c.pid for c in children if "resource_tracker" not in " ".join(c.cmdline())]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_worker_processes_never_outlive_the_parent(videos, reference, tmp_path, how):
    out = tmp_path / "s.zarr"
    with processes() as procs:
        proc = start(procs, ahdi("convert", videos, "-o", out, *SMALL, "--workers", "2",
                                 "--scheduler", "processes"))
        wait_until(lambda: finished_items(out) >= 2, 120, "2 finished items", proc)
        workers = _pool_children(proc)
        assert workers, "no worker process found"
        proc.send_signal(getattr(signal, how))
        status, output = finish(proc, timeout=60)
        gone = no_children_left(workers, timeout=15)
        for pid in workers:   # whatever happened, leave nothing behind
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()
    assert gone, f"worker processes {workers} still running after the parent ({how}) ended"
    if how == "SIGINT":
        assert status == EXIT_INTERRUPTED, output
        assert "Traceback" not in output, output
    resumes_to_reference(out, videos, reference)
