"""Object storage: inputs, stores and the writer lock on a real S3 protocol server.

moto's standalone S3 server (:mod:`tests.s3server`) is started on localhost
by a session fixture and stopped at its end; everything reaches it through
``AWS_ENDPOINT_URL``, as a user's S3-compatible server is reached, so
``ahdi`` subprocesses and dask workers started here use it too.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline import remote
from ahdi.pipeline.errors import DatasetError, LockLostError, StoreError, VideoError
from ahdi.pipeline.lock import hold_lock
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.video import open_video
from tests import fixtures as fx

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

BUCKET = "ahdi-test"
P = AhdiParams(size=16, patch=3, crop="center", n_segments=3, min_len=2)


@pytest.fixture(scope="session")
def s3():
    """moto's S3 server on localhost with one bucket; yields an s3fs filesystem."""
    from tests.s3server import moto_s3

    with moto_s3():
        import s3fs

        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs


def upload(fs, local: Path, url: str) -> str:
    """Copy a local file or folder to ``url`` (s3://BUCKET/...); returns the URL."""
    key = url.split("://", 1)[1]
    if local.is_dir():
        for p in sorted(local.rglob("*")):
            if p.is_file():
                fs.put_file(str(p), f"{key}/{p.relative_to(local).as_posix()}")
    else:
        fs.put_file(str(local), key)
    return url


def frames_of(source, tmp_dir=None) -> list[np.ndarray]:
    with open_video(source, P, tmp_dir) as reader:
        return list(reader)


# ----------------------------------------------------------------------------
# inputs on object storage
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(s3, folder_tree):
    """The folder tree of tests/fixtures.py, on S3 as s3://BUCKET/clips (and its CSV)."""
    url = upload(s3, folder_tree["root"], f"s3://{BUCKET}/clips")
    csv = upload(s3, folder_tree["csv"], f"s3://{BUCKET}/clips_labels.csv")
    return url, csv


def test_a_folder_on_s3_lists_as_the_same_folder_on_disk(clips, folder_tree):
    url, _ = clips
    name, items = resolve_source(url + "/")
    local_name, local = resolve_source(str(folder_tree["root"]))
    assert name == local_name == "clips"
    assert [it.video_id for it in items] == [it.video_id for it in local]
    assert [it.subject for it in items] == [it.subject for it in local]
    root = str(folder_tree["root"])
    assert [it.source.path for it in items] == [url + it.source.path[len(root):]
                                                for it in local]
    seq = next(it for it in items if it.video_id == "subjB/seq")
    assert seq.source.frames[0] == f"{url}/subjB/seq/frame1.png"


def test_a_labels_csv_on_s3_labels_a_folder_on_s3(clips, folder_tree):
    url, csv = clips
    _, items = resolve_source(url, labels_csv=csv)
    assert [it.video_id for it in items] == folder_tree["csv_ids"]
    assert items[0].labels["score"] == 3.0


def test_videos_and_frame_folders_on_s3_read_as_on_disk(clips, folder_tree, tmp_path):
    _, items = resolve_source(clips[0])
    _, local = resolve_source(str(folder_tree["root"]))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for remote_item, local_item in zip(items, local):
        got = frames_of(remote_item.source, scratch)
        want = frames_of(local_item.source)
        assert len(got) == len(want) and all(np.array_equal(a, b) for a, b in zip(got, want))
    assert list(scratch.iterdir()) == []   # every fetched video removed after reading


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_an_archive_on_s3_is_listed_and_read_by_member(s3, folder_tree, tmp_path, suffix):
    archive = fx.make_archive(folder_tree["root"], tmp_path / f"clips{suffix}")
    url = upload(s3, archive, f"s3://{BUCKET}/archives/clips{suffix}")
    name, items = resolve_source(url)
    _, local = resolve_source(str(archive))
    assert name == "clips"
    assert [it.video_id for it in items] == [it.video_id for it in local]
    assert {it.source.archive for it in items} == {url}
    for remote_item, local_item in zip(items, local):
        got, want = frames_of(remote_item.source), frames_of(local_item.source)
        assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_a_zip_member_on_s3_is_read_without_fetching_the_archive(s3, tmp_path, monkeypatch):
    import s3fs

    with zipfile.ZipFile(tmp_path / "many.zip", "w", zipfile.ZIP_STORED) as zf:
        for k in range(40):
            zf.writestr(f"v{k:02d}.bin", np.random.default_rng(k).bytes(50_000))
    url = upload(s3, tmp_path / "many.zip", f"s3://{BUCKET}/archives/many.zip")
    fetched = []
    original = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        fetched.append(end - start)
        return original(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    from ahdi.pipeline.archives import Archive

    with Archive(url) as archive:
        data = archive.read("v07.bin")
    assert data == np.random.default_rng(7).bytes(50_000)
    assert sum(fetched) < (tmp_path / "many.zip").stat().st_size / 4


def test_a_missing_url_is_one_error_naming_it(s3):
    with pytest.raises(DatasetError, match=r"^'s3://ahdi-test/nothing-here' is neither an "
                                           r"existing file or folder nor a dataset name"):
        resolve_source(f"s3://{BUCKET}/nothing-here")


def test_a_missing_video_on_s3_fails_naming_it(s3):
    from ahdi.pipeline.sources import VideoSource

    url = f"s3://{BUCKET}/clips/gone.mp4"
    with pytest.raises(VideoError, match=f"^{url}: does not exist$"):
        open_video(VideoSource("file", url), P)


def test_a_video_larger_than_the_free_space_is_refused_before_fetching(clips, tmp_path,
                                                                          monkeypatch):
    import shutil
    from collections import namedtuple

    from ahdi.pipeline.sources import VideoSource

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    url = f"{clips[0]}/top.mp4"
    with pytest.raises(VideoError) as caught:
        open_video(VideoSource("file", url), P, tmp_path)
    size = remote.filesystem(url, VideoError)[0].size(url)
    assert str(caught.value) == (f"{url}: {size} bytes do not fit in the 100 bytes free in "
                                 f"{tmp_path}; point --tmp-dir at a larger local disk")
    assert list(tmp_path.iterdir()) == []


def test_a_task_stopped_while_reading_removes_its_fetched_video(clips, tmp_path):
    from ahdi.pipeline import stopping
    from ahdi.pipeline.sources import VideoSource

    source = VideoSource("file", f"{clips[0]}/subjA/clip1.mp4")
    stopping.request_stop()
    try:
        with pytest.raises(stopping.ConversionCancelled):
            with open_video(source, P, tmp_path) as reader:
                assert len(list(tmp_path.iterdir())) == 1   # the fetched copy
                list(stopping.frames_until_stopped(reader))
    finally:
        stopping.reset_stop()
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# the writer lock on object storage
# ----------------------------------------------------------------------------
def lock_url(name: str) -> str:
    return f"s3://{BUCKET}/locks/{name}.zarr.lock"


def test_a_second_writer_is_refused_while_the_lock_object_is_held(s3):
    url = lock_url("two")
    with hold_lock(url, what="s3://x/two.zarr") as held:
        assert json.loads(s3.cat_file(url))["pid"] == os.getpid()
        with pytest.raises(StoreError) as caught:
            with hold_lock(url, what="s3://x/two.zarr"):
                pass
        assert str(caught.value) == (
            f"store s3://x/two.zarr is locked by pid {os.getpid()} on host "
            f"{socket.gethostname()} (since {held.started}): another ahdi process is writing "
            f"it. Wait for it to finish; if that process is gone, remove {url}")
    assert not s3.exists(url)


def test_the_heartbeat_changes_the_lock_object(s3):
    url = lock_url("beat")
    with hold_lock(url, stale_after=0.4):
        first = s3.info(url)["ETag"]
        import time
        time.sleep(0.5)
        s3.invalidate_cache()
        assert s3.info(url)["ETag"] != first
        assert json.loads(s3.cat_file(url))["beat"] >= 1


def test_a_lock_object_of_a_dead_process_on_this_host_is_taken_over(s3):
    url = lock_url("dead")
    s3.pipe_file(url, json.dumps({"host": socket.gethostname(), "pid": 2**22 + 7,
                                  "started": "2020-01-01T00:00:00+00:00"}).encode())
    with hold_lock(url, what="s3://x/dead.zarr") as held:
        assert held.note == (f"took over the lock of store s3://x/dead.zarr: process "
                             f"{2**22 + 7} on {socket.gethostname()} (since "
                             f"2020-01-01T00:00:00+00:00) is no longer running")
        assert json.loads(s3.cat_file(url))["pid"] == os.getpid()


def test_a_lock_object_not_refreshed_by_the_server_s_clock_is_taken_over(s3):
    import time

    url = lock_url("stale")
    s3.pipe_file(url, json.dumps({"host": "elsewhere", "pid": 7,
                                  "started": "2020-01-01T00:00:00+00:00"}).encode())
    with pytest.raises(StoreError, match="is locked by pid 7 on host elsewhere"):
        with hold_lock(url, stale_after=60):
            pass
    time.sleep(2.1)   # LastModified has a resolution of one second
    with hold_lock(url, stale_after=1, what="s3://x/stale.zarr") as held:
        assert held.note.startswith("took over the lock of store s3://x/stale.zarr: process 7 "
                                    "on elsewhere (since 2020-01-01T00:00:00+00:00) has not "
                                    "refreshed it for ")


def test_a_holder_whose_lock_was_taken_over_learns_it_and_leaves_the_new_one(s3, monkeypatch):
    import time

    from ahdi.pipeline import stopping

    monkeypatch.setattr(stopping, "_STOP", False)
    url = lock_url("lost")
    with pytest.raises(LockLostError) as caught:
        with hold_lock(url, stale_after=0.4, what="s3://x/lost.zarr"):
            s3.pipe_file(url, b'{"host": "thief", "pid": 1, "started": "now"}')
            time.sleep(0.3)
    assert str(caught.value) == (
        f"store s3://x/lost.zarr: this run lost its lock {url}: pid 1 on host thief (since "
        f"now) took it over; it stopped writing (finished items are kept). Two writers must "
        f"not share a store: let the other one finish, then run the same command again to "
        f"resume")
    assert json.loads(s3.cat_file(url))["host"] == "thief"   # not removed on release


def test_a_refresh_whose_answer_was_lost_keeps_the_lock(s3, monkeypatch):
    import time

    from ahdi.pipeline import stopping

    monkeypatch.setattr(stopping, "_STOP", False)
    url = lock_url("echo")
    with hold_lock(url, stale_after=0.4, what="s3://x/echo.zarr") as held:
        # our own refresh reached the server, its answer (the new ETag) did not
        s3.pipe_file(url, json.dumps({"host": held.host, "pid": held.pid,
                                      "started": held.started, "beat": 99}).encode())
        time.sleep(0.3)
    assert not s3.exists(url) and not stopping.stop_requested()


def test_a_server_ignoring_conditional_writes_is_refused(s3, monkeypatch):
    obj_class = remote.ConditionalObject
    original = obj_class._put

    def ignore_conditions(self, key, data, **condition):
        return original(self, key, data)   # what a server that ignores the header does

    monkeypatch.setattr(obj_class, "_put", ignore_conditions)
    url = lock_url("weak")
    with pytest.raises(StoreError) as caught:
        with hold_lock(url, what="s3://x/weak.zarr"):
            pass
    assert str(caught.value) == (
        f"cannot lock store s3://x/weak.zarr: the object store ignores conditional writes (a "
        f"second create of a probe object beside {url} with If-None-Match: * succeeded), so "
        f"two writers could not be kept apart; use a server that checks them (AWS S3, MinIO, "
        f"Ceph) or write the store on a local path")
    assert not s3.exists(url)


@pytest.mark.parametrize("url", ["memory://stores/x.zarr.lock", "gs://bucket/x.zarr.lock"])
def test_a_protocol_without_conditional_writes_is_refused(url):
    scheme = url.split("://")[0]
    with pytest.raises(StoreError) as caught:
        with hold_lock(url, what=url[:-5]):
            pass
    assert str(caught.value) == (
        f"cannot lock store {url[:-5]}: ahdi keeps two writers of a store apart only on local "
        f"paths and on s3:// (whose server checks conditional writes), not on {scheme}://; "
        f"write the store on a local path or on s3://")


# ----------------------------------------------------------------------------
# stores on object storage
# ----------------------------------------------------------------------------
REPS = ("ahdi", "mdv")          # the CLI's default
SMALL = ["--size", "16", "--patch", "3", "--crop", "center", "--n-segments", "3",
         "--min-len", "2"]
REPO = Path(__file__).resolve().parents[1]


def store_objects(fs, url: str, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every object of the store at ``url`` but the metadata documents (``zarr.json``,
    with their timestamps), by key, as ``fixtures.store_chunk_files`` reads a folder."""
    root = url.split("://", 1)[1]
    fs.invalidate_cache()
    return {k[len(root) + 1:]: fs.cat_file(k) for k in sorted(fs.find(root))
            if not k.endswith("zarr.json") and not k[len(root) + 1:].startswith(skip)}


@pytest.fixture(scope="module")
def local_items(folder_tree):
    return resolve_source(str(folder_tree["root"]))[1]


@pytest.fixture(scope="module")
def local_store(local_items, tmp_path_factory):
    """The folder tree converted into a local folder: what every store on S3 must equal."""
    from ahdi.pipeline.graph import convert

    path = tmp_path_factory.mktemp("local") / "x.zarr"
    assert convert(local_items, path, P, REPS, workers=2).done == len(local_items)
    return path


@pytest.fixture(scope="module")
def s3_store(s3, local_items):
    """The same items converted into s3://BUCKET/stores/threads.zarr (threads)."""
    from ahdi.pipeline.graph import convert

    url = f"s3://{BUCKET}/stores/threads.zarr"
    report = convert(local_items, url, P, REPS, workers=2)
    assert report.done == len(local_items) and report.store_path == url
    return url


def test_a_store_on_s3_holds_the_bytes_of_a_local_conversion(s3, s3_store, local_store,
                                                             local_items):
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.store import open_store, lock_path
    from ahdi.pipeline.verify import format_report, verify_store

    assert store_objects(s3, s3_store) == fx.store_chunk_files(local_store)
    assert not s3.exists(lock_path(s3_store)) and not s3.exists(f"{s3_store}/.staging")
    store, local = open_store(s3_store), open_store(local_store)
    assert store.path == s3_store and store.counts() == local.counts()
    np.testing.assert_array_equal(store.images("ahdi"), local.images("ahdi"))
    np.testing.assert_array_equal(store.motion(0), local.motion(0))
    report = verify_store(s3_store)
    assert report.ok and format_report(report).startswith(f"store {s3_store}: 5 items (5 done")
    assert convert(local_items, s3_store, P, REPS).skipped == len(local_items)   # resumed


def test_a_store_on_s3_is_opened_with_plain_xarray(s3, s3_store, local_store):
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(s3_store)
    want = xr.open_zarr(local_store)
    assert {"video_id", "subject", "source"} <= set(ds.coords)
    np.testing.assert_array_equal(ds.sel(video_id="top")["ahdi"].values,
                                  want.sel(video_id="top")["ahdi"].values)
    assert float(ds["motion"].max().compute()) == float(want["motion"].max().compute())
    assert ds["motion"].shape == want["motion"].shape == (5, 12)   # the longest video


def test_the_cli_converts_inspects_and_verifies_a_store_on_s3(s3, clips):
    from click.testing import CliRunner

    from ahdi.pipeline.cli import main

    url = f"s3://{BUCKET}/stores/cli.zarr"
    runner = CliRunner()
    result = runner.invoke(main, ["convert", clips[0], "-o", url, *SMALL, "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["inspect", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"]["done"] == 5
    result = runner.invoke(main, ["verify", url])
    assert result.exit_code == 0 and "all readable" in result.output
    result = runner.invoke(main, ["convert", clips[0], "-o", f"s3://no-such-bucket-x/s.zarr",
                                  *SMALL])
    assert result.exit_code == 1
    assert ("Error: s3://no-such-bucket-x/s.zarr: the bucket s3://no-such-bucket-x does not "
            "exist (or these credentials cannot see it)") in result.output


def test_a_second_writer_of_a_store_on_s3_is_refused(s3, local_items):
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.store import lock_path

    url = f"s3://{BUCKET}/stores/two.zarr"
    with hold_lock(lock_path(url), what=url):
        with pytest.raises(StoreError, match=f"^store {url} is locked by pid {os.getpid()} "
                                             f"on host {socket.gethostname()}"):
            convert(local_items, url, P, REPS)
    assert not s3.exists(url)      # the refused run wrote nothing


def test_objects_per_item_of_a_store_on_s3(s3, s3_store):
    # 5 items share one object per array (besides the arrays' metadata documents)
    root = s3_store.split("://", 1)[1]
    chunks = [k[len(root) + 1:] for k in s3.find(root) if not k.endswith("zarr.json")]
    per_array = collections.Counter(k.split("/", 1)[0] for k in chunks)
    assert len(per_array) >= 15 and set(per_array.values()) == {1}, per_array


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """12 small videos (40 frames, 64 x 48), and their local conversion."""
    from ahdi.pipeline.graph import convert

    root = tmp_path_factory.mktemp("many") / "videos"
    for i in range(12):
        fx.write_video(root / f"v{i:02d}.mp4", fx.blob_frames(40, w=64, h=48, seed=i))
    reference = root.parent / "reference.zarr"
    convert(resolve_source(str(root))[1], reference, P, REPS, workers=2)
    return root, reference


def _run(cmd: list[str], **kwargs):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "ahdi.pipeline.cli", *cmd], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)


@pytest.mark.slow
def test_a_sigkilled_conversion_into_s3_resumes_and_ends_identical(s3, many):
    import signal
    import time

    from ahdi.pipeline.store import lock_path, open_store

    root, reference = many
    url = f"s3://{BUCKET}/stores/killed.zarr"
    cmd = ["convert", str(root), "-o", url, *SMALL, "--workers", "1"]
    proc = _run(cmd)
    try:
        deadline = time.monotonic() + 120
        while len(s3.find(f"{url.split('://')[1]}/.staging")) < 2:
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no item staged in time"
            time.sleep(0.05)
            s3.invalidate_cache()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert json.loads(s3.cat_file(lock_path(url)))["pid"] == proc.pid   # left behind
    assert open_store(url).counts()["done"] < 12                      # nothing merged yet
    rerun = _run(cmd)
    output = rerun.communicate(timeout=120)[0]
    assert rerun.returncode == 0, output
    assert "took over the lock" in output and "is no longer running" in output
    skipped = int(output.split("videos (")[1].split(" already done")[0])
    assert skipped >= 2                       # the staged items were merged, not computed
    assert store_objects(s3, url) == fx.store_chunk_files(reference)
    assert not s3.exists(lock_path(url))


def test_a_conversion_into_s3_whose_lock_is_replaced_stops_writing(s3, many, monkeypatch):
    """Another writer replaces the lock object (it judged this run stale): the run
    stops, writes no object after it learns it, and the new holder's run (here the
    same command once that lock is gone) ends identical to a clean conversion."""
    import time

    from zarr.storage import FsspecStore

    from ahdi.pipeline import lock, stopping
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.store import lock_path

    monkeypatch.setattr(lock, "HEARTBEAT_MAX_S", 0.05)
    monkeypatch.setattr(stopping, "_STOP", False)
    root, reference = many
    url = f"s3://{BUCKET}/stores/replaced.zarr"
    writes, lost = [], []
    for name in ("set", "delete"):
        original = getattr(FsspecStore, name)

        async def recording(self, key, *args, _original=original):
            writes.append(time.monotonic())
            return await _original(self, key, *args)
        monkeypatch.setattr(FsspecStore, name, recording)
    stop = stopping.stop_from_thread
    monkeypatch.setattr(stopping, "stop_from_thread",
                        lambda: lost.append(time.monotonic()) or stop())
    thief = {"host": "elsewhere", "pid": 4242, "started": "2026-01-01T00:00:00+00:00"}
    outcomes = []

    def take_over(outcome) -> None:
        outcomes.append(outcome)
        if len(outcomes) == 2:     # an unconditional PUT: the lock's ETag changes
            s3.pipe_file(lock_path(url), json.dumps(thief).encode())

    items = resolve_source(str(root))[1]
    with pytest.raises(LockLostError) as caught:
        convert(items, url, P, REPS, workers=1, on_outcome=take_over)
    assert str(caught.value) == (
        f"store {url}: this run lost its lock {lock_path(url)}: pid 4242 on host elsewhere "
        f"(since 2026-01-01T00:00:00+00:00) took it over; it stopped writing (finished items "
        f"are kept). Two writers must not share a store: let the other one finish, then run "
        f"the same command again to resume")
    assert lost and len(outcomes) < len(items)
    assert [w for w in writes if w > lost[0] + 0.05] == []
    assert json.loads(s3.cat_file(lock_path(url))) == thief
    s3.rm(lock_path(url))
    report = convert(items, url, P, REPS, workers=2)
    assert report.skipped >= 1 and len(report.outcomes) + report.skipped == len(items)
    assert store_objects(s3, url) == fx.store_chunk_files(reference)


@pytest.mark.slow
def test_sources_and_store_on_s3_with_a_dask_scheduler_and_workers(s3, many, tmp_path):
    import subprocess
    import sys
    import time

    from ahdi.pipeline.store import open_store

    root, reference = many
    sources = upload(s3, root, f"s3://{BUCKET}/many/videos")   # subjects: the same name
    url = f"s3://{BUCKET}/stores/cluster.zarr"
    info = tmp_path / "scheduler.json"
    logs = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                               "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                               "--scheduler-file", str(info)], stdout=logs,
                              stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 60
        while not (info.exists() and "address" in info.read_text()):
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        address = json.loads(info.read_text())["address"]
        for k in range(2):   # workers find the server through AWS_ENDPOINT_URL, as users' do
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                 "1", "--name", f"w{k}", "--no-dashboard", "--local-directory",
                 str(tmp_path / f"w{k}")], stdout=logs, stderr=subprocess.STDOUT))
        run = _run(["convert", sources, "-o", url, *SMALL, "--scheduler", address])
        output = run.communicate(timeout=180)[0]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=30)
        logs.close()
    assert run.returncode == 0, output
    assert open_store(url).counts() == {"pending": 0, "done": 12, "failed": 0}
    # the computed arrays hold the bytes of the local conversion; only the sources differ
    assert store_objects(s3, url, skip=("source/",)) == {
        k: v for k, v in fx.store_chunk_files(reference).items() if not k.startswith("source/")}
    assert list(open_store(url).sources())[0] == f"{sources}/v00.mp4"


def test_training_reads_a_store_on_s3_once_into_a_local_copy(s3, clips):
    torch = pytest.importorskip("torch")
    from ahdi.pipeline.graph import convert
    from ahdi.pipeline.store import open_store
    from ahdi.train.data import ImageSource, select_items

    url = f"s3://{BUCKET}/stores/labelled.zarr"
    _, items = resolve_source(clips[0], labels_csv=clips[1])
    convert(items, url, P, REPS, workers=2)
    store = open_store(url)
    selection = select_items(store, "score", "regression")
    assert list(selection.video_ids) == ["subjA/clip1", "subjB/seq", "top"]
    streamed = ImageSource(store, selection, "ahdi", torch.device("cpu"), in_memory="never",
                           num_workers=0)
    copy = streamed._dataset.file
    assert os.path.isfile(copy) and not remote.is_remote(copy)
    got = torch.cat([x for x, _mask, _pos in streamed.batches(np.arange(3), 2)])
    np.testing.assert_array_equal(got.numpy(), store.images("ahdi", selection.indices))
    del streamed
    import gc
    gc.collect()
    assert not os.path.exists(copy)          # the local copy goes with its reader
