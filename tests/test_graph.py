"""The conversion graph: schedulers agree byte for byte, failures stay per item, resume."""

from __future__ import annotations

import os

import pytest
import zarr

from ahdi.kernels import AhdiParams
from ahdi.pipeline.graph import convert
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.store import open_store

from tests import fixtures as fx
from tests.fixtures import store_array_bytes, store_chunk_files

PARAMS = AhdiParams(size=16, patch=3, crop="center", n_segments=3, min_len=2)
REPS = ("ahdi", "mdv", "sdi", "mean", "flow")


@pytest.fixture(scope="module")
def items(folder_tree):
    return resolve_source(str(folder_tree["root"]))[1]


@pytest.fixture(scope="module")
def threaded_store(items, tmp_path_factory):
    path = tmp_path_factory.mktemp("threads") / "s.zarr"
    report = convert(items, path, PARAMS, REPS, scheduler="threads", workers=2)
    assert report.done == len(items) and not report.failed
    return path


def test_every_item_done_with_images(threaded_store, items):
    store = open_store(threaded_store)
    assert store.counts() == {"done": len(items), "failed": 0, "pending": 0}
    for i in range(len(items)):
        assert store.image("ahdi", i).shape == (16, 16, 3)
        assert store.image("ahdi", i).max() == 255  # moving blob: a real, stretched image
        assert len(store.motion(i)) == store.n_frames(i)


@pytest.mark.parametrize("scheduler,workers", [("sync", None), ("processes", 2)])
def test_local_schedulers_byte_identical(threaded_store, items, tmp_path, scheduler, workers):
    path = tmp_path / "s.zarr"
    convert(items, path, PARAMS, REPS, scheduler=scheduler, workers=workers)
    assert store_chunk_files(path) == store_chunk_files(threaded_store)


def test_distributed_cluster_byte_identical(threaded_store, items, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:
        path = tmp_path / "s.zarr"
        report = convert(items, path, PARAMS, REPS, scheduler=cluster.scheduler_address)
    assert report.done == len(items)
    assert store_chunk_files(path) == store_chunk_files(threaded_store)
    assert store_array_bytes(path) == store_array_bytes(threaded_store)


def test_bad_items_fail_alone(tmp_path):
    root = tmp_path / "mixed"
    fx.write_video(root / "good.mp4", fx.blob_frames(8))
    (root / "text.mp4").write_text("this is not a video\n")
    (root / "empty.mp4").write_bytes(b"")
    fx.write_video(root / "one.mp4", fx.blob_frames(1))
    _, items = resolve_source(str(root))
    report = convert(items, tmp_path / "s.zarr", PARAMS, REPS)
    status = {o.video_id: o for o in report.outcomes}
    assert status["good"].status == "done"
    for bad in ("text", "empty", "one"):
        assert status[bad].status == "failed"
        assert f"{bad}.mp4" in status[bad].error, status[bad].error
    assert "at least 2 frames" in status["one"].error
    store = open_store(tmp_path / "s.zarr")
    errors = dict(zip(store.video_ids(), store.errors()))
    assert errors["text"] == status["text"].error


def test_a_failure_staged_by_a_killed_run_is_retried_like_a_recorded_one(tmp_path):
    # A run killed between an item's stage and its shard's merge leaves the
    # staged failure behind; the rerun computes that item again (as it does a
    # recorded failure) and reports it, instead of merging the old message.
    from ahdi.pipeline.shards import stage_failure, staged_items

    root = tmp_path / "mixed"
    fx.write_video(root / "good.mp4", fx.blob_frames(8))
    (root / "text.mp4").write_text("this is not a video\n")
    _, items = resolve_source(str(root))
    path = tmp_path / "s.zarr"
    convert(items, path, PARAMS, REPS)
    store = open_store(path)
    bad = list(store.video_ids()).index("text")
    stage_failure(str(path), bad, store.items_per_shard, "an earlier run's message")
    seen = []
    report = convert(items, path, PARAMS, REPS, on_outcome=seen.append)
    assert [(o.index, o.status) for o in seen] == [(bad, "failed")]
    assert report.skipped == 1
    assert "text.mp4" in open_store(path).errors()[bad]
    assert staged_items(str(path)) == {}


def test_resume_redoes_only_missing_items(threaded_store, items, tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    shutil.copytree(threaded_store, path)
    # Simulate a crash after item 1's images but before its status: pending again,
    # with one of its chunks gone.
    store = open_store(path, "r+")
    zarr.open_group(str(path), mode="r+")["status"][1] = "pending"
    for chunk in (path / "ahdi" / "c").glob("1/*"):
        shutil.rmtree(chunk) if chunk.is_dir() else chunk.unlink()
    seen = []
    report = convert(items, path, PARAMS, REPS, on_outcome=seen.append)
    assert report.skipped == len(items) - 1
    assert [o.index for o in seen] == [1]
    assert store_chunk_files(path) == store_chunk_files(threaded_store)
    assert store.counts()["done"] == len(items)


def test_other_parameters_refused_then_overwritten(threaded_store, items, tmp_path):
    import shutil

    from ahdi.pipeline.errors import StoreError

    path = tmp_path / "s.zarr"
    shutil.copytree(threaded_store, path)
    with pytest.raises(StoreError, match="made with patch=3, you asked patch=5"):
        convert(items, path, PARAMS.replace(patch=5), REPS)
    report = convert(items, path, PARAMS.replace(patch=5), REPS, overwrite=True)
    assert report.done == len(items)
    assert open_store(path).params.patch == 5


def test_spill_to_disk_gives_same_store(threaded_store, items, tmp_path):
    spill = tmp_path / "spill"
    spill.mkdir()
    path = tmp_path / "s.zarr"
    convert(items, path, PARAMS, REPS, memory_budget=2000, tmp_dir=str(spill))
    assert store_chunk_files(path) == store_chunk_files(threaded_store)
    assert os.listdir(spill) == []
