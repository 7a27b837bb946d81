"""Stopping a conversion: SIGTERM, a second Ctrl-C, worker processes that must not outlive us,
a lock taken over by another writer.

Each test runs ``ahdi convert`` as a subprocess, stops it the way a batch
scheduler or a user would, and checks what is left: the exit status and
message, no traceback, no process still running, and a store that the same
command finishes byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from zarr.storage import LocalStore

from ahdi.kernels import AhdiParams
from ahdi.pipeline import lock, stopping
from ahdi.pipeline.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
from ahdi.pipeline.errors import LockLostError
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


# ----------------------------------------------------------------------------
# a lock taken over while the run writes
# ----------------------------------------------------------------------------
#: What another host writes into the lock when it judges this run stale.
THIEF = {"host": "elsewhere", "pid": 4242, "started": "2026-01-01T00:00:00+00:00"}


def lost_lock_message(store: str, lock_at: str) -> str:
    return (f"store {store}: this run lost its lock {lock_at}: pid 4242 on host elsewhere "
            f"(since 2026-01-01T00:00:00+00:00) took it over; it stopped writing (finished "
            f"items are kept). Two writers must not share a store: let the other one "
            f"finish, then run the same command again to resume")


@pytest.fixture(autouse=True)
def no_stop_left(monkeypatch):
    """A run stopped in this process leaves its stop flag set: not for the next test."""
    monkeypatch.setattr(stopping, "_STOP", False)


@pytest.fixture
def writes(monkeypatch):
    """Every Zarr write or delete into a local store from now on, as (time, key),
    and the moment the run learns that its lock is lost."""
    seen: dict = {"writes": [], "lost": None}
    for name in ("set", "delete"):
        original = getattr(LocalStore, name)

        async def recording(self, key, *args, _original=original):
            seen["writes"].append((time.monotonic(), key))
            return await _original(self, key, *args)
        monkeypatch.setattr(LocalStore, name, recording)
    stop = stopping.stop_from_thread

    def noting() -> bool:
        seen["lost"] = seen["lost"] or time.monotonic()
        return stop()
    monkeypatch.setattr(stopping, "stop_from_thread", noting)
    return seen


def test_a_run_whose_lock_is_taken_over_stops_writing_at_once(videos, reference, tmp_path,
                                                              monkeypatch, writes):
    monkeypatch.setattr(lock, "HEARTBEAT_MAX_S", 0.05)
    out = tmp_path / "s.zarr"
    lock_file = Path(f"{out}.lock")
    outcomes = []

    def take_over(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:   # another host judged this run stale and took its lock
            lock_file.write_text(json.dumps(THIEF))

    with pytest.raises(LockLostError) as caught:
        convert(resolve_source(str(videos))[1], out, PARAMS, ("ahdi", "mdv"), workers=1,
                on_outcome=take_over)
    assert str(caught.value) == lost_lock_message(str(out), str(lock_file))
    assert writes["lost"] is not None and len(outcomes) < N
    # A write that passed the fence just before the loss was seen may start a few
    # milliseconds after; none starts later (before: the run went on to the end).
    assert [key for when, key in writes["writes"] if when > writes["lost"] + 0.05] == []
    assert json.loads(lock_file.read_text()) == THIEF   # the new holder's lock is kept
    lock_file.unlink()                                  # ... until it finishes
    resumes_to_reference(out, videos, reference)


def test_a_removed_lock_stops_the_run_naming_it(videos, tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_MAX_S", 0.05)
    out = tmp_path / "s.zarr"
    lock_file = Path(f"{out}.lock")
    with pytest.raises(LockLostError) as caught:
        convert(resolve_source(str(videos))[1], out, PARAMS, ("ahdi", "mdv"), workers=1,
                on_outcome=lambda outcome: lock_file.unlink(missing_ok=True))
    assert str(caught.value) == (
        f"store {out}: this run lost its lock {lock_file}: {lock_file} was removed; it "
        f"stopped writing (finished items are kept). Two writers must not share a store: "
        f"let the other one finish, then run the same command again to resume")


def test_a_stalled_holder_confirms_its_lock_before_writing(tmp_path, monkeypatch):
    """A writer whose lock was last refreshed more than stale_after / 2 ago (the process
    stalled, and the heartbeat with it) asks the lock itself before it writes."""
    from ahdi.pipeline.store_files import put_object

    out = str(tmp_path / "s.zarr")
    clock = [1000.0]
    monkeypatch.setattr(lock, "_clock", lambda: clock[0])
    with pytest.raises(LockLostError) as caught:
        with lock.hold_lock(f"{out}.lock", stale_after=600, what=out):
            put_object(out, "a", b"1")               # fresh: no question asked
            Path(f"{out}.lock").write_text(json.dumps(THIEF))
            clock[0] += 301                          # stalled past stale_after / 2
            put_object(out, "b", b"2")
    assert str(caught.value) == lost_lock_message(out, f"{out}.lock")
    assert sorted(p.name for p in Path(out).iterdir()) == ["a"]


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_the_cli_stops_with_one_error_line_when_its_lock_is_taken_over(videos, reference,
                                                                       tmp_path, scheduler):
    out = tmp_path / "s.zarr"
    lock_file = Path(f"{out}.lock")
    # the CLI, with the heartbeat every 0.1 s instead of every minute
    cmd = [sys.executable, "-c", "import ahdi.pipeline.lock as lock; lock.HEARTBEAT_MAX_S = "
           "0.1; from ahdi.pipeline.cli import main; main()", "convert", str(videos), "-o",
           str(out), *SMALL, "--workers", "1", "--scheduler", scheduler]
    with processes() as procs:
        proc = start(procs, cmd)
        wait_until(lambda: finished_items(out) >= 2, 120, "2 finished items", proc)
        lock_file.write_text(json.dumps(THIEF))
        status, output = finish(proc, timeout=60)
    assert status == LockLostError.exit_code == 4, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: {lost_lock_message(str(out), str(lock_file))}"], output
    assert "Traceback" not in output and "terminated" not in output
    left = store_chunk_files(out)
    time.sleep(1.0)
    assert store_chunk_files(out) == left         # no worker writes on after the exit
    assert json.loads(lock_file.read_text()) == THIEF
    lock_file.unlink()
    resumes_to_reference(out, videos, reference)
