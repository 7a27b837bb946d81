"""ahdi.pipeline.store, .layout and .lock: layout, writes, resume, readers, plain-Zarr
readability, lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import zarr

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline.errors import DamagedChunkError, StoreError
from ahdi.pipeline.layout import create_store
from ahdi.pipeline.lock import hold_lock
from ahdi.pipeline.schema import ITEMS_PER_SHARD, array_specs, segments_width
from ahdi.pipeline.store import Store, lock_path, open_store

S = 16
PARAMS = AhdiParams(size=S, patch=3, n_segments=4)   # mdv capacity 3
REPS = ("ahdi", "mdv", "sdi", "mean", "flow")


class FakeSource:
    def __init__(self, where: str) -> None:
        self.where = where

    def describe(self) -> str:
        return f"file:{self.where}"


def make_items(n: int = 4) -> list:
    items = []
    for i in range(n):
        labels = {"pain": float(i), "sex": "f" if i % 2 else "m"}
        if i == 2:
            labels = {"sex": "m"}          # missing numeric label -> NaN
        items.append(types.SimpleNamespace(video_id=f"v{i:02d}", subject=f"s{i // 2}",
                                           labels=labels, source=FakeSource(f"/v/{i}.mp4")))
    return items


def make_result(seed: int = 0, t: int = 50, m: int = 3, s: int = S):
    rng = np.random.default_rng(seed)

    def img():
        return rng.integers(0, 256, (s, s, 3), dtype=np.uint8)

    bounds = np.linspace(0, t, PARAMS.n_segments + 1).astype(np.int64)
    starts = np.arange(m) * (t // (m + 1))
    windows = np.stack([starts, starts + 2 * (t // (m + 1))], axis=1)
    return types.SimpleNamespace(
        ahdi=img(), sdi=img(), mean=img(), flow=img(),
        mdv=rng.integers(0, 256, (m, s, s, 3), dtype=np.uint8),
        motion=rng.random(t), eps=0.25, bounds=bounds, windows=windows, n_frames=t)


def new_store(tmp_path: Path, reps=REPS, n: int = 4, name: str = "out.zarr") -> Store:
    return create_store(tmp_path / name, make_items(n), PARAMS, reps,
                        dataset="fake", source="unit test")


def _write_in_child(store: Store, index: int, seed: int) -> None:
    store.write_item(index, make_result(seed), fps=25.0, warnings=["from child"])


def _chunk_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json"}


def inner_chunk(store_path, name: str, position) -> tuple[Path, int, int]:
    """The object file holding array ``name``'s chunk at element ``position``, and
    the chunk's offset and size in it (read from the shard index; the whole file
    for an array without shards)."""
    from ahdi.pipeline.chunks import inner_grid, object_key

    arr = zarr.open_group(str(store_path), mode="r")[name]
    coords = tuple(p // c for p, c in zip(position, arr.chunks))
    file = Path(store_path, name, *object_key(arr, coords).split("/"))
    grid = inner_grid(arr)
    if grid is None:
        return file, 0, file.stat().st_size
    n = int(np.prod(grid))
    raw = file.read_bytes()
    index = np.frombuffer(raw[-(n * 16 + 4):-4], dtype="<u8").reshape(n, 2)
    inner = tuple(c % g for c, g in zip(coords, grid))
    offset, nbytes = index[int(np.ravel_multi_index(inner, grid))]
    return file, int(offset), int(nbytes)


def flip_chunk(store_path, name: str, position, *, how: str = "flip") -> None:
    """Damage one (inner) chunk in place: one bit in its middle, or random bytes."""
    file, offset, nbytes = inner_chunk(store_path, name, position)
    data = bytearray(file.read_bytes())
    if how == "flip":
        data[offset + nbytes // 2] ^= 0x10
    else:
        data[offset:offset + nbytes] = np.random.default_rng(0).bytes(nbytes)
    file.write_bytes(bytes(data))


# ----------------------------------------------------------------------------
def test_layout_before_compute(tmp_path):
    st = new_store(tmp_path)
    assert st.n_items == 4 and st.size == S and st.mode == "r+"
    assert st.representations == list(REPS)
    assert list(st.statuses()) == ["pending"] * 4
    assert st.counts() == {"done": 0, "failed": 0, "pending": 4}
    assert st.pending_indices() == [0, 1, 2, 3]
    assert list(st.video_ids()) == ["v00", "v01", "v02", "v03"]
    assert list(st.subjects()) == ["s0", "s0", "s1", "s1"]
    assert list(st.sources()) == [f"file:/v/{i}.mp4" for i in range(4)]
    assert st.params == PARAMS
    assert st.label_names == ["pain", "sex"]
    assert st.label_kinds == {"pain": "number", "sex": "text"}
    labels = st.labels()
    np.testing.assert_array_equal(labels["pain"], [0.0, 1.0, np.nan, 3.0])
    assert list(labels["sex"]) == ["m", "f", "m", "f"]
    attrs = st.attrs
    assert attrs["ahdi_store_version"] == 3
    assert attrs["items_per_shard"] == ITEMS_PER_SHARD == 64
    assert attrs["coordinates"] == "video_id subject source"
    assert attrs["param_hash"] == PARAMS.param_hash()
    assert attrs["params"] == PARAMS.to_dict()
    assert set(attrs["versions"]) == {"ahdi", "numpy", "opencv", "numba", "zarr", "dask"}
    assert attrs["dataset"] == "fake" and attrs["source"] == "unit test"
    assert "created" in attrs

    g = zarr.open_group(st.path, mode="r")
    cap = PARAMS.mdv_capacity
    # G items per stored object: a shard of one-item inner chunks for images,
    # one plain chunk of G rows for per-item values
    assert g["ahdi"].shape == (4, S, S, 3) and g["ahdi"].chunks == (1, S, S, 3)
    assert g["ahdi"].shards == (64, S, S, 3)
    assert g["mdv"].shape == (4, cap, S, S, 3) and g["mdv"].chunks == (1, 1, S, S, 3)
    assert g["mdv"].shards == (64, cap, S, S, 3)
    assert g["motion"].shape == (4, 2 ** 22) and g["motion"].chunks == (64, 4096)
    assert g["motion"].shards == (64, 2 ** 22)
    assert g["segments"].shape == (4, segments_width(PARAMS)) == (4, PARAMS.n_segments + 1)
    assert g["windows"].shape == (4, cap, 2) and g["windows"].chunks == (64, cap, 2)
    for name in ("status", "error", "warning", "n_frames", "fps", "eps", "mdv_count"):
        assert g[name].chunks == (64,) and g[name].shards is None, name
    for name in g.array_keys():
        assert g[name].metadata.dimension_names[0] == "item", name
    # nothing per item was written yet: only metadata and the layout-time columns
    assert not (Path(st.path) / "status" / "c").exists()
    assert not (Path(st.path) / "ahdi" / "c").exists()


def test_only_requested_representations(tmp_path):
    st = new_store(tmp_path, reps=["sdi", "ahdi"])
    assert st.representations == ["ahdi", "sdi"]
    names = set(zarr.open_group(st.path, mode="r").array_keys())
    assert {"ahdi", "sdi"} <= names and not names & {"mdv", "mdv_count", "mean", "flow"}
    with pytest.raises(StoreError, match="holds no 'mdv'"):
        st.mdv(0)
    with pytest.raises(ValueError, match="unknown representation"):
        new_store(tmp_path, reps=["ahdi", "rgb"], name="bad.zarr")


def test_write_item_round_trip(tmp_path):
    st = new_store(tmp_path)
    res = make_result(1, t=5000, m=2)          # motion spans two chunks
    st.write_item(1, res, fps=30.0, warnings=["fps guessed", "dropped 2 frames"])
    assert list(st.statuses()) == ["pending", "done", "pending", "pending"]
    for rep in ("ahdi", "sdi", "mean", "flow"):
        np.testing.assert_array_equal(st.image(rep, 1), getattr(res, rep))
        assert st.image(rep, 0).sum() == 0
    np.testing.assert_array_equal(st.images("ahdi", [1, 0])[0], res.ahdi)
    assert st.images("sdi").shape == (4, S, S, 3)
    np.testing.assert_array_equal(st.mdv(1), res.mdv)
    assert st.mdv(0).shape == (0, S, S, 3)
    np.testing.assert_allclose(st.motion(1), res.motion.astype(np.float32))
    assert st.motion(1).dtype == np.float32 and st.motion(0).shape == (0,)
    np.testing.assert_array_equal(st.windows(1), res.windows)
    np.testing.assert_array_equal(st.segments(1), res.bounds)
    assert st.n_frames(1) == 5000
    table = st.item_table()
    row = table[1]
    assert row["index"] == 1 and row["video_id"] == "v01" and row["status"] == "done"
    assert row["n_frames"] == 5000 and row["fps"] == 30.0 and row["error"] == ""
    assert row["warning"] == "fps guessed\ndropped 2 frames"
    assert row["pain"] == 1.0 and row["sex"] == "f"
    assert table[0]["status"] == "pending" and np.isnan(table[0]["fps"])
    # plain zarr: motion is NaN after n_frames
    m = zarr.open_array(os.path.join(st.path, "motion"), mode="r")
    assert np.isnan(m[1, 5000:8192]).all() and not np.isnan(m[1, :5000]).any()


def test_fixed_mode_without_bounds(tmp_path):
    params = AhdiParams(size=S, patch=3, segmentation="fixed", max_windows=6)
    st = create_store(tmp_path / "f.zarr", make_items(2), params, ["ahdi", "mdv"],
                      dataset="d", source="s")
    assert segments_width(params) == 7
    res = make_result(2, m=3)
    res.bounds = None
    st.write_item(0, res, fps=25)
    assert st.segments(0).shape == (0,)
    np.testing.assert_array_equal(st.mdv(0), res.mdv)


def test_write_failure_and_retry(tmp_path):
    st = new_store(tmp_path)
    st.write_failure(2, "VideoError: cannot decode /v/2.mp4")
    assert st.statuses()[2] == "failed"
    assert st.errors()[2] == "VideoError: cannot decode /v/2.mp4"
    assert st.counts() == {"done": 0, "failed": 1, "pending": 3}
    assert 2 in st.pending_indices()             # failed items are retried
    st.write_item(2, make_result(3), fps=25.0)
    assert st.statuses()[2] == "done" and st.errors()[2] == ""
    assert st.pending_indices() == [0, 1, 3]


def test_bad_results_refused_before_writing(tmp_path):
    st = new_store(tmp_path)
    too_many = make_result(0, m=PARAMS.mdv_capacity + 1)
    with pytest.raises(StoreError, match="4 level-1 windows, but the store holds at most 3"):
        st.write_item(0, too_many, fps=25)
    wrong = make_result(0)
    wrong.sdi = np.zeros((S + 1, S, 3), np.uint8)
    with pytest.raises(StoreError, match=r"sdi is uint8 \(17, 16, 3\), expected uint8"):
        st.write_item(0, wrong, fps=25)
    missing = make_result(0)
    missing.flow = None
    with pytest.raises(StoreError, match="no 'flow'"):
        st.write_item(0, missing, fps=25)
    floaty = make_result(0)
    floaty.ahdi = floaty.ahdi.astype(np.float64)
    with pytest.raises(StoreError, match="ahdi is float64"):
        st.write_item(0, floaty, fps=25)
    assert not (Path(st.path) / "motion" / "c").exists()   # nothing was written
    with pytest.raises(IndexError, match="out of range"):
        st.write_item(9, make_result(0), fps=25)


def test_status_is_written_last(tmp_path, monkeypatch):
    from ahdi.pipeline import shards

    st = new_store(tmp_path)
    real = shards._writer

    def failing(group, name, empty=True):
        if name == "warning":
            raise OSError("disk full")
        return real(group, name, empty)

    monkeypatch.setattr(shards, "_writer", failing)
    with pytest.raises(OSError, match="disk full"):
        st.write_item(0, make_result(0), fps=25)
    monkeypatch.undo()
    assert open_store(st.path).statuses()[0] == "pending"
    assert open_store(st.path).n_frames(0) == 50          # earlier arrays were written


def test_writes_are_deterministic(tmp_path):
    a = new_store(tmp_path, name="a.zarr")
    b = new_store(tmp_path, name="b.zarr")
    for st in (a, b):
        st.write_item(0, make_result(7), fps=25.0, warnings=["w"])
        st.write_failure(1, "boom")
    before = _chunk_bytes(Path(a.path))
    assert before == _chunk_bytes(Path(b.path))
    a.write_item(0, make_result(7), fps=25.0, warnings=["w"])   # rewrite in place
    assert _chunk_bytes(Path(a.path)) == before


def test_resume_returns_same_store(tmp_path):
    st = new_store(tmp_path)
    st.write_item(0, make_result(0), fps=25)
    st.write_failure(1, "boom")
    again = create_store(tmp_path / "out.zarr", make_items(4), PARAMS, list(reversed(REPS)),
                         dataset="fake", source="unit test")
    assert again.path == st.path
    assert list(again.statuses()) == ["done", "failed", "pending", "pending"]
    assert again.pending_indices() == [1, 2, 3]


def test_mismatch_refused_with_message(tmp_path):
    st = new_store(tmp_path)
    path = st.path
    with pytest.raises(StoreError) as info:
        create_store(path, make_items(4), PARAMS.replace(patch=5), REPS,
                     dataset="fake", source="unit test")
    assert str(info.value) == (f"store {path} was made with patch=3, you asked patch=5; "
                               f"use --overwrite to replace it, or another output path")
    with pytest.raises(StoreError, match="holds representations ahdi, mdv, sdi, mean, flow, "
                                         "you asked ahdi; use --overwrite"):
        create_store(path, make_items(4), PARAMS, ["ahdi"], dataset="d", source="s")
    with pytest.raises(StoreError, match="holds 4 items, you asked 3"):
        create_store(path, make_items(3), PARAMS, REPS, dataset="d", source="s")
    other = make_items(4)
    other[2].video_id = "zz"
    with pytest.raises(StoreError, match="item 2 is 'v02' there, you asked 'zz'"):
        create_store(path, other, PARAMS, REPS, dataset="d", source="s")


def test_overwrite_replaces_store(tmp_path):
    st = new_store(tmp_path)
    st.write_item(0, make_result(0), fps=25)
    new = create_store(st.path, make_items(2), PARAMS.replace(patch=5), ["ahdi"],
                       dataset="d", source="s", overwrite=True)
    assert new.n_items == 2 and new.params.patch == 5
    assert list(new.statuses()) == ["pending", "pending"]
    assert not (Path(st.path) / "mdv").exists()


def test_overwrite_refused_while_locked(tmp_path):
    st = new_store(tmp_path)
    with st.lock():
        with pytest.raises(StoreError, match="is locked by pid"):
            create_store(st.path, make_items(2), PARAMS, REPS, dataset="d", source="s",
                         overwrite=True)


def test_non_store_paths_refused(tmp_path):
    file = tmp_path / "a.txt"
    file.write_text("keep me")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "x.jpg").write_bytes(b"x")
    for path in (file, folder):
        for overwrite in (False, True):
            with pytest.raises(StoreError, match="exists and is not an ahdi store"):
                create_store(path, make_items(2), PARAMS, REPS, dataset="d", source="s",
                             overwrite=overwrite)
        with pytest.raises(StoreError, match="exists and is not an ahdi store"):
            open_store(path)
    assert file.read_text() == "keep me" and (folder / "x.jpg").exists()
    plain = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(StoreError, match="is not an ahdi store"):
        open_store(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert create_store(empty, make_items(2), PARAMS, REPS, dataset="d", source="s").n_items == 2


def test_read_only_store_refuses_writes(tmp_path):
    new_store(tmp_path)
    st = open_store(tmp_path / "out.zarr")
    with pytest.raises(StoreError, match="open it with mode='r\\+'"):
        st.write_failure(0, "x")


def test_pickle_and_write_from_child_process(tmp_path):
    # One writer per shard: the two children write items of different shards.
    st = new_store(tmp_path, n=70)
    st.statuses()                                  # open the group in the parent
    blob = pickle.dumps(st)
    assert len(blob) < 300
    clone = pickle.loads(blob)
    assert clone.path == st.path and clone.mode == "r+" and clone._group_obj is None
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_in_child, args=(st, i, i)) for i in (0, 67)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert [i for i, s in enumerate(st.statuses()) if s != "pending"] == [0, 67]
    np.testing.assert_array_equal(st.image("ahdi", 67), make_result(67).ahdi)
    assert st.warnings()[0] == "from child"


def test_threads_write_their_own_items(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    st = new_store(tmp_path, n=8)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: st.write_item(i, make_result(i), fps=None), range(8)))
    assert st.counts() == {"done": 8, "failed": 0, "pending": 0}
    for i in range(8):
        np.testing.assert_array_equal(st.image("flow", i), make_result(i).flow)
    assert np.isnan(st.item_table()[0]["fps"])


def test_readable_without_our_code(tmp_path):
    from ahdi.pipeline.resume import fit_frame_width

    st = new_store(tmp_path)
    res = make_result(5)
    st.write_item(1, res, fps=25)
    st.write_failure(2, "boom")
    fit_frame_width(st.path)                         # what a conversion does at its end

    g = zarr.open_group(st.path, mode="r")
    assert g.attrs["ahdi_store_version"] == 3
    np.testing.assert_array_equal(g["ahdi"][1], res.ahdi)
    assert list(g["status"][:]) == ["pending", "done", "failed", "pending"]
    assert g["motion"].shape == (4, 50)              # as wide as the longest curve

    xr = pytest.importorskip("xarray")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # consolidated: opens without a warning
        ds = xr.open_zarr(st.path)
    for name in ("ahdi", "mdv", "sdi", "mean", "flow", "status", "error",
                 "label_pain", "label_sex", "motion", "segments", "windows", "n_frames"):
        assert name in ds.data_vars, name
    # the item listing: coordinates of the item axis
    assert {"video_id", "subject", "source"} <= set(ds.coords)
    assert ds["ahdi"].dims == ("item", "y", "x", "channel")
    assert ds["ahdi"].dtype == np.uint8
    np.testing.assert_array_equal(ds["ahdi"][1].values, res.ahdi)
    np.testing.assert_array_equal(ds.sel(item=1)["ahdi"].values, res.ahdi)
    np.testing.assert_array_equal(ds.sel(video_id="v01")["ahdi"].values, res.ahdi)
    assert str(ds.sel(video_id="v02")["error"].values) == "boom"
    assert list(ds["status"].values) == ["pending", "done", "failed", "pending"]
    assert ds.attrs["param_hash"] == PARAMS.param_hash()
    t = int(ds["n_frames"][1])
    np.testing.assert_allclose(ds["motion"][1, :t].values, res.motion.astype(np.float32))
    assert ds["motion"].data.npartitions == 1        # (G, 4096) frames per dask chunk
    assert float(ds["motion"].max().compute()) == pytest.approx(res.motion.max(), rel=1e-6)

    da = pytest.importorskip("dask.array")
    arr = da.from_zarr(st.path, component="sdi")
    assert arr.chunks[0] == (1, 1, 1, 1)           # the inner chunk: one item
    np.testing.assert_array_equal(arr[1].compute(), res.sdi)


# ----------------------------------------------------------------------------
def test_lock_refuses_second_holder(tmp_path):
    st = new_store(tmp_path)
    lock_file = Path(lock_path(st.path))
    with st.lock() as held:
        assert held.note is None and held.pid == os.getpid()
        info = json.loads(lock_file.read_text())
        assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
        with pytest.raises(StoreError) as err:
            with pickle.loads(pickle.dumps(st)).lock():
                pass
        msg = str(err.value)
        assert f"is locked by pid {os.getpid()} on host {socket.gethostname()}" in msg
        assert f"remove {lock_file}" in msg
        assert lock_file.exists()
    assert not lock_file.exists()


def test_stale_lock_of_dead_process_taken_over(tmp_path):
    st = new_store(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file = Path(lock_path(st.path))
    lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                     "started": "2024-01-01T00:00:00+00:00"}))
    with st.lock() as held:
        assert held.note and f"process {dead.pid}" in held.note
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    assert not lock_file.exists()


def test_lock_of_other_host_goes_stale(tmp_path):
    st = new_store(tmp_path)
    lock_file = Path(lock_path(st.path))
    lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1,
                                     "started": "2024-01-01T00:00:00+00:00"}))
    with pytest.raises(StoreError, match="locked by pid 1 on host elsewhere"):
        with st.lock(stale_after=600):
            pass
    old = time.time() - 3600
    os.utime(lock_file, (old, old))
    with st.lock(stale_after=600) as held:
        assert "has not refreshed it" in held.note


def test_lock_heartbeat_refreshes(tmp_path):
    st = new_store(tmp_path)
    lock_file = Path(lock_path(st.path))
    with st.lock(stale_after=0.4):
        old = time.time() - 3600
        os.utime(lock_file, (old, old))
        time.sleep(0.3)
        assert time.time() - lock_file.stat().st_mtime < 5


def _listing(pain, subjects, extra=None):
    items = []
    for i, (p, sub) in enumerate(zip(pain, subjects)):
        labels = {"pain": p, "group": "a", **(extra or {})}
        items.append(types.SimpleNamespace(
            video_id=f"v{i}", subject=sub, labels=labels,
            source=types.SimpleNamespace(describe=lambda i=i: f"/data/v{i}.mp4")))
    return items


def test_resume_takes_edited_labels_and_subjects(tmp_path):
    params = AhdiParams(size=16, patch=3)
    create_store(tmp_path / "s.zarr", _listing([0, 1, 2], ["s0", "s0", "s1"]), params,
                 ["ahdi"], dataset="d", source="x")
    store = create_store(tmp_path / "s.zarr", _listing([10, 11, None], ["p0", "p1", "p1"]),
                         params, ["ahdi"], dataset="d", source="x")
    assert list(store.subjects()) == ["p0", "p1", "p1"]
    np.testing.assert_array_equal(store.labels()["pain"], [10.0, 11.0, np.nan])


def test_resume_replaces_labels_that_change_kind_without_touching_images(tmp_path):
    params = AhdiParams(size=16, patch=3)
    path = tmp_path / "s.zarr"
    st = create_store(path, _listing([0, 1, 2], ["s0", "s0", "s1"]), params, ["ahdi"],
                      dataset="d", source="x")
    st.write_item(1, make_result(1, s=16), fps=25.0)
    images = {k: v for k, v in _chunk_bytes(path).items() if not k.startswith("label_")}
    # pain turns into text, group vanishes, a new column appears
    items = _listing(["low", "high", "low"], ["s0", "s0", "s1"], extra={"side": 2.5})
    for item in items:
        del item.labels["group"]
    store = create_store(path, items, params, ["ahdi"], dataset="d", source="x")
    assert store.label_names == ["pain", "side"]
    assert store.label_kinds == {"pain": "text", "side": "number"}
    assert list(store.labels()["pain"]) == ["low", "high", "low"]
    np.testing.assert_array_equal(store.labels()["side"], [2.5, 2.5, 2.5])
    assert list(store.statuses()) == ["pending", "done", "pending"]
    after = {k: v for k, v in _chunk_bytes(path).items() if not k.startswith("label_")}
    assert after == images                           # nothing computed was touched
    assert not (path / "label_group").exists()
    g = zarr.open_group(str(path), mode="r")          # consolidated metadata is up to date
    assert sorted(n for n in g.array_keys() if n.startswith("label_")) == \
        ["label_pain", "label_side"]
    assert "relabel_in_progress" not in g.attrs


def test_interrupted_relabel_is_refused_by_readers_and_finished_by_a_rerun(tmp_path,
                                                                          monkeypatch):
    from ahdi.pipeline import layout

    params = AhdiParams(size=16, patch=3)
    path = tmp_path / "s.zarr"
    create_store(path, _listing([0, 1, 2], ["s0", "s0", "s1"]), params, ["ahdi"],
                 dataset="d", source="x")
    text = _listing(["low", "high", "low"], ["s0", "s0", "s1"])
    real = layout._create_array

    def dies(group, spec):
        raise KeyboardInterrupt   # stands for a kill between two arrays

    monkeypatch.setattr(layout, "_create_array", dies)
    with pytest.raises(KeyboardInterrupt):
        create_store(path, text, params, ["ahdi"], dataset="d", source="x")
    monkeypatch.setattr(layout, "_create_array", real)
    with pytest.raises(StoreError) as err:
        open_store(path)
    assert str(err.value) == (f"store {path} had its labels being replaced when that was "
                              f"interrupted; run the same ahdi convert command again to finish")
    store = create_store(path, text, params, ["ahdi"], dataset="d", source="x")
    assert list(open_store(path).labels()["pain"]) == ["low", "high", "low"]
    assert store.label_kinds == {"pain": "text", "group": "text"}


# ----------------------------------------------------------------------------
def test_array_specs_match_the_layout(tmp_path):
    st = new_store(tmp_path)
    specs = array_specs(make_items(4), PARAMS, list(REPS))
    g = zarr.open_group(st.path, mode="r")
    assert sorted(s.name for s in specs) == sorted(g.array_keys())
    for spec in specs:
        arr = g[spec.name]
        assert arr.shape == spec.shape and arr.chunks == spec.chunks, spec.name
        assert arr.shards == spec.shards, spec.name
        assert tuple(arr.metadata.dimension_names) == spec.dims, spec.name
        assert arr.attrs["description"] == spec.description, spec.name
    # the listing columns are whole-column chunks; every other array holds G items
    # per stored object (one item per inner chunk of a shard, or G rows per chunk)
    written = {s.name for s in specs if s.values is not None}
    assert written == {"video_id", "subject", "source", "label_pain", "label_sex"}
    assert all((s.shards or s.chunks)[0] == 64 for s in specs if s.name not in written)
    face_frames = {"face_boxes", "face_transforms", "face_found", "face_status"}
    assert {s.name for s in specs if s.per_frame} == {"motion"} | face_frames
    assert {s.name for s in specs if s.shards} == {"ahdi", "mdv", "sdi", "mean", "flow",
                                                   "motion"} | face_frames
    assert array_specs(make_items(4), PARAMS, list(REPS), items_per_shard=8)[0].shards[0] == 8


def test_representations_validated_by_kernels_vocabulary(tmp_path):
    st = new_store(tmp_path, reps=["flow", "ahdi", "flow"])
    assert st.representations == ["ahdi", "flow"]         # canonical order, no repeats
    assert new_store(tmp_path, reps="sdi", name="one.zarr").representations == ["sdi"]
    with pytest.raises(ValueError, match="no representation requested"):
        new_store(tmp_path, reps=[], name="none.zarr")
    with pytest.raises(ValueError, match=r"unknown representation\(s\) rgb; choose from ahdi"):
        new_store(tmp_path, reps=["rgb"], name="bad.zarr")


def test_mdv_counts_reads_counts_only(tmp_path):
    st = new_store(tmp_path)
    st.write_item(1, make_result(1, m=2), fps=25)
    st.write_item(3, make_result(3, m=3), fps=25)
    np.testing.assert_array_equal(st.mdv_counts(), [0, 2, 0, 3])
    np.testing.assert_array_equal(st.mdv_counts([3, 1]), [3, 2])
    assert st.mdv_counts([]).shape == (0,)
    with pytest.raises(IndexError, match="out of range"):
        st.mdv_counts([4])
    with pytest.raises(StoreError, match="holds no 'mdv'"):
        new_store(tmp_path, reps=["ahdi"], name="no_mdv.zarr").mdv_counts()


def test_rewrite_column_only_listing_columns(tmp_path):
    st = new_store(tmp_path)
    assert st.rewrite_column("subject", ["s0", "s0", "s1", "s1"]) is False   # unchanged
    assert st.rewrite_column("subject", ["a", "b", "c", "d"]) is True
    assert list(open_store(st.path).subjects()) == ["a", "b", "c", "d"]
    assert st.rewrite_column("label_pain", np.array([0.0, 1.0, np.nan, 3.0])) is False
    with pytest.raises(ValueError, match="'status' is not a column of the item listing"):
        st.rewrite_column("status", ["done"] * 4)
    with pytest.raises(ValueError, match="3 values for the 4 items"):
        st.rewrite_column("source", ["x", "y", "z"])
    with pytest.raises(StoreError, match="open it with mode='r\\+'"):
        open_store(st.path).rewrite_column("subject", ["a"] * 4)


def test_lock_functions_work_on_any_lock_file(tmp_path):
    lock_path = str(tmp_path / "some.lock")
    with hold_lock(lock_path, what="s3://bucket/x.zarr") as held:
        assert held.path == lock_path and held.note is None
        with pytest.raises(StoreError, match="store s3://bucket/x.zarr is locked by pid"):
            with hold_lock(lock_path, what="s3://bucket/x.zarr"):
                pass
        with pytest.raises(StoreError, match=f"store {tmp_path} is locked by pid"):
            with hold_lock(lock_path):
                pass
    assert not os.path.exists(lock_path)


# ----------------------------------------------------------------------------
# damage: every chunk of a done item, checksums, readers, verify
# ----------------------------------------------------------------------------
def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))


def test_array_names_match_the_schema():
    from ahdi.pipeline.schema import array_names

    from ahdi.pipeline.schema import FACE_ARRAYS

    specs = array_specs(make_items(4), PARAMS, list(REPS))
    # the face track is not part of a complete layout (a store laid out before it
    # is complete, and refused for writing by name: tests/test_face_track.py)
    assert sorted(array_names(REPS, ["pain", "sex"]) + list(FACE_ARRAYS)) == sorted(
        s.name for s in specs)


def test_every_chunk_of_a_done_item_is_written(tmp_path):
    from ahdi.pipeline.chunks import Presence

    st = new_store(tmp_path)
    res = make_result(0, m=2)
    res.ahdi = np.zeros((S, S, 3), np.uint8)          # a flat video: legitimately black
    st.write_item(0, res, fps=None)
    present = Presence(zarr.open_group(st.path, mode="r"))
    for name, position in (("ahdi", (0, 0, 0, 0)), ("mdv", (0, 0, 0, 0, 0)),
                           ("mdv", (0, 1, 0, 0, 0)), ("error", (0,)), ("warning", (0,)),
                           ("fps", (0,)), ("mdv_count", (0,)), ("status", (0,)),
                           ("motion", (0, 0))):
        assert present.missing(name, position) is None, (name, position)
    root = Path(st.path)
    assert (root / "ahdi" / "c" / "0" / "0" / "0" / "0").is_file()   # the shard of items 0-63
    assert sorted(p.name for p in (root / "ahdi" / "c").rglob("*") if p.is_file()) == ["0"]
    # the shard is written whole: empty mdv slots and the shard's pending items hold
    # zeros (a few bytes each); frames beyond the longest curve are not stored
    assert present.missing("mdv", (0, 2, 0, 0, 0)) is None
    assert present.missing("motion", (0, 4096)) == "shard motion/c/0/0 holds no chunk 0/1"
    np.testing.assert_array_equal(st.image("ahdi", 0), 0)


def test_readers_name_a_damaged_chunk_and_how_to_repair_it(tmp_path):
    st = new_store(tmp_path)
    for i in range(3):
        st.write_item(i, make_result(i), fps=25)
    root = Path(st.path)
    flip_chunk(st.path, "sdi", (1, 0, 0, 0))       # item 1's chunk inside the shard
    hint = f"run ahdi verify {st.path} --repair, then the same ahdi convert command to redo the item"
    with pytest.raises(DamagedChunkError) as info:
        st.image("sdi", 1)
    assert str(info.value) == (f"store {st.path}: item v01: array sdi: damaged chunk (Zstd "
                               f"decompression error: Restored data doesn't match checksum); "
                               f"{hint}")
    err = info.value
    assert (err.array, err.index, err.video_id, err.kind) == ("sdi", 1, "v01", "damaged")
    with pytest.raises(DamagedChunkError, match="item v01: array sdi: damaged chunk"):
        st.images("sdi", [0, 1, 2])
    np.testing.assert_array_equal(st.images("sdi", [0, 2])[1], make_result(2).sdi)
    # a shard's index carries a CRC32C: damage there is every item of the shard's
    data = bytearray((root / "flow" / "c" / "0" / "0" / "0" / "0").read_bytes())
    data[-8] ^= 0x01
    (root / "flow" / "c" / "0" / "0" / "0" / "0").write_bytes(bytes(data))
    for i, vid in enumerate(["v00", "v01", "v02", "v03"]):   # v03 is pending: unreadable too
        with pytest.raises(DamagedChunkError) as info:
            st.image("flow", i)
        assert str(info.value).startswith(
            f"store {st.path}: item {vid}: array flow: damaged chunk (the index of shard "
            f"flow/c/0/0/0/0 fails its checksum); run ahdi verify")
    flip_chunk(st.path, "motion", (0, 0))       # one chunk holds 4096 frames of G items
    with pytest.raises(DamagedChunkError, match="item v00: array motion: damaged chunk"):
        st.motion(0)
    (root / "mdv" / "c" / "0" / "0" / "0" / "0" / "0").unlink()
    with pytest.raises(DamagedChunkError) as info:
        st.mdv(1)
    assert "item v01: array mdv: missing chunk (no object mdv/c/0/0/0/0/0); run ahdi verify" \
        in str(info.value)
    assert st.mdv(3).shape == (0, S, S, 3)
    assert pickle.loads(pickle.dumps(info.value)).args == info.value.args
    (root / "status" / "c" / "0").write_bytes(b"")     # the statuses of items 0-63
    with pytest.raises(DamagedChunkError, match="item v00: array status: damaged chunk"):
        st.statuses()
    assert list(st.statuses(unreadable="?")) == ["?"] * 4
    assert st.pending_indices() == [0, 1, 2, 3]            # a resume redoes them
    assert st.counts() == {"done": 0, "failed": 0, "pending": 4}


def test_a_damaged_listing_column_is_rewritten_by_a_resume(tmp_path):
    st = new_store(tmp_path)
    st.write_item(0, make_result(0), fps=25)
    _flip(Path(st.path) / "subject" / "c" / "0")
    with pytest.raises(DamagedChunkError) as info:
        st.subjects()
    assert str(info.value).endswith("array subject: damaged chunk (Zstd decompression error: "
                                    "Restored data doesn't match checksum); run the same ahdi "
                                    "convert command again: it rewrites this column")
    again = new_store(tmp_path)
    assert list(again.subjects()) == ["s0", "s0", "s1", "s1"]
    assert list(again.statuses()) == ["done", "pending", "pending", "pending"]
    _flip(Path(st.path) / "video_id" / "c" / "0")
    with pytest.raises(StoreError, match="array video_id: damaged chunk .*; the store's list "
                                         "of items is lost; convert again with --overwrite"):
        new_store(tmp_path)
    replaced = create_store(st.path, make_items(4), PARAMS, REPS, dataset="fake",
                            source="unit test", overwrite=True)
    assert list(replaced.statuses()) == ["pending"] * 4


def _old_store(tmp_path: Path, version: int = 2) -> Path:
    """A store of layout version ``version`` (1 or 2): items 0, 1 done, 2 failed."""
    from tests.v2store import make_v2_store, write_v2_failure, write_v2_item

    path = tmp_path / f"v{version}.zarr"
    group = make_v2_store(path, make_items(4), PARAMS, REPS)
    for i in (0, 1):
        write_v2_item(group, i, make_result(i), fps=25.0, warnings=["w"] if i else ())
    write_v2_failure(group, 2, "boom")
    if version == 1:
        group.attrs["ahdi_store_version"] = 1
        (path / "error" / "c" / "0").unlink()    # version 1 never wrote fill-only chunks
    return path


def test_a_version_1_store_is_read_verified_and_refused_for_writing(tmp_path):
    from ahdi.pipeline.verify import format_report, verify_store

    path = _old_store(tmp_path, version=1)
    old = open_store(path)
    assert old.version == 1 and old.item_table()[0]["error"] == ""
    np.testing.assert_array_equal(old.image("ahdi", 1), make_result(1).ahdi)
    np.testing.assert_allclose(old.motion(0), make_result(0).motion.astype(np.float32))
    report = verify_store(path)
    assert report.ok and "store version 1: its chunks carry no checksum" in format_report(report)
    with pytest.raises(StoreError) as caught:
        create_store(path, make_items(4), PARAMS, REPS, dataset="fake", source="unit test")
    assert str(caught.value) == (
        f"store {path} has layout version 1, which this ahdi reads but does not write: "
        f"run ahdi upgrade {path} NEW.zarr to copy it into version 3 (nothing is "
        f"recomputed) and convert into that, or use --overwrite to replace it, or another "
        f"output path")
    with pytest.raises(StoreError, match="has layout version 1, which this ahdi reads but "
                                         "does not write; run ahdi upgrade"):
        open_store(path, mode="r+").write_failure(3, "x")
    zarr.open_group(str(path), mode="r+").attrs["ahdi_store_version"] = 7
    with pytest.raises(StoreError, match="has layout version 7; this ahdi reads versions 1, 2"):
        open_store(path)


@pytest.mark.parametrize("version", [1, 2])
def test_upgrade_copies_an_old_store_byte_for_byte_as_a_conversion_writes_it(tmp_path,
                                                                              version):
    from ahdi.pipeline.resume import fit_frame_width
    from ahdi.pipeline.upgrade import upgrade_store

    old = _old_store(tmp_path, version)
    new = tmp_path / "new.zarr"
    report = upgrade_store(old, new)
    assert report.old_version == version and report.damaged == []
    assert report.counts == {"done": 2, "failed": 1, "pending": 1}
    want = new_store(tmp_path, name="want.zarr")
    want.write_item(0, make_result(0), fps=25.0)
    want.write_item(1, make_result(1), fps=25.0, warnings=["w"])
    want.write_failure(2, "boom")
    fit_frame_width(want.path)
    assert _chunk_bytes(new) == _chunk_bytes(Path(want.path))
    up = open_store(new)
    assert up.version == 3 and up.attrs["dataset"] == "d"
    assert list(up.video_ids()) == ["v00", "v01", "v02", "v03"]
    assert list(open_store(old).statuses()) == ["done", "done", "failed", "pending"]  # kept
    again = upgrade_store(old, new)             # resumed: done items are not copied again
    assert again.skipped == 2 and _chunk_bytes(new) == _chunk_bytes(Path(want.path))
    with pytest.raises(StoreError, match="already has layout version 3; there is nothing"):
        upgrade_store(new, tmp_path / "x.zarr")


def test_verify_reports_each_bad_chunk_and_repair_marks_its_item_pending(tmp_path):
    from ahdi.pipeline.verify import format_report, verify_store

    st = new_store(tmp_path)
    for i in range(3):
        st.write_item(i, make_result(i), fps=25)
    st.write_failure(3, "boom")
    root = Path(st.path)
    clean = verify_store(st.path)
    assert clean.ok and clean.chunks > 4 * 10
    assert format_report(clean) == (f"store {st.path}: 4 items (3 done, 1 failed, 0 pending); "
                                    f"{clean.chunks} chunks checked; all readable")
    flip_chunk(st.path, "flow", (0, 0, 0, 0))          # item 0's chunk inside the shard
    flip_chunk(st.path, "mdv", (2, 1, 0, 0, 0), how="random")   # item 2's second window
    (root / "error" / "c" / "0").write_bytes(b"junk")  # the errors of items 0-63: all four
    (root / "ahdi" / "c" / "0" / "0" / "0" / "0.5f2a.partial").write_bytes(b"")
    report = verify_store(st.path)
    assert not report.ok and report.bad_items == [0, 1, 2, 3]
    lines = format_report(report).splitlines()
    junk = "damaged chunk (Zstd decompression error: invalid input data)"
    assert lines[:6] == [
        f"item v00: array error: {junk}",
        "item v00: array flow: damaged chunk (Zstd decompression error: Restored data "
        "doesn't match checksum)",
        f"item v01: array error: {junk}", f"item v02: array error: {junk}",
        f"item v02: array mdv: {junk}", f"item v03: array error: {junk}"]
    assert lines[6] == (f"store {st.path}: 4 items (3 done, 1 failed, 0 pending); "
                        f"{report.chunks} chunks checked; 6 bad chunks in 4 items")
    assert lines[7:] == ["1 temporary files of writes cut short (harmless; --repair removes "
                         "them)", f"run ahdi verify {st.path} --repair, then the same ahdi "
                         f"convert command, to redo 4 items"]
    repaired = verify_store(st.path, repair=True)
    assert repaired.repaired == [0, 1, 2, 3]
    assert "marked 4 items pending: run the same ahdi convert command to redo them" in \
        format_report(repaired)
    assert list(open_store(st.path).statuses()) == ["pending"] * 4
    assert not list(root.rglob("*.partial"))
    assert verify_store(st.path).ok
    with st.lock():
        with pytest.raises(StoreError, match="is locked by pid"):
            verify_store(st.path, repair=True)


def test_the_upgrade_command_says_what_it_copied(tmp_path):
    from click.testing import CliRunner

    from ahdi.pipeline.cli import main

    old, new = _old_store(tmp_path), tmp_path / "new.zarr"
    result = CliRunner().invoke(main, ["upgrade", str(old), str(new)])
    assert result.exit_code == 0, result.output
    assert result.output == (f"{new}: version 2 store copied (2 done, 1 failed, 1 pending); "
                             f"{old} is unchanged\n")
    result = CliRunner().invoke(main, ["upgrade", str(new), str(tmp_path / "x.zarr")])
    assert result.exit_code == 1
    assert result.output == (f"Error: store {new} already has layout version 3; there is "
                             f"nothing to upgrade\n")
