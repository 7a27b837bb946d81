"""Fault injection: the store's accidents of a lab, repeated, each checked against one invariant.

The invariant, after every accident: rerunning the same ``ahdi convert``
command (plus ``ahdi verify --repair`` where a chunk was damaged) gives a
store whose chunk files are byte-identical to a clean run's, whose decoded
arrays (labels, subjects, sources included) are equal to it, with its lock
released and nothing else left beside it. The accidents: two conversions
started at once on a new path (different and equal parameters), SIGKILL at
random moments of the layout and of the run, a layout cut short at every
array (a kill, a full disk), a half-made store of an earlier ahdi, damaged,
zero-byte and deleted chunks. ``AHDI_FAULT_TRIALS`` (default 3) repeats the
randomised ones; ``AHDI_FAULT_SEED`` fixes their random moments.
docs/reliability.md has the table of accidents.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
import time
import types
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from ahdi.kernels import AhdiParams
from ahdi.pipeline import layout
from ahdi.pipeline.cli import main
from ahdi.pipeline.errors import DamagedChunkError, DatasetError, StoreError
from ahdi.pipeline.layout import create_store
from ahdi.pipeline.schema import array_specs
from ahdi.pipeline.store import lock_path, open_store
from tests import fixtures as fx
from tests.fixtures import store_array_bytes, store_chunk_files
from tests.test_reliability import ahdi, finish, processes, start, wait_until

TRIALS = int(os.environ.get("AHDI_FAULT_TRIALS", "3"))
SEED = int(os.environ.get("AHDI_FAULT_SEED", str(random.randrange(2**31))))
N = 6
SMALL = ["--crop", "center", "--patch", "3", "--n-segments", "3", "--min-len", "2",
         "--workers", "1"]


def convert_args(clips: dict, out: Path, size: str = "32") -> list[str]:
    """The arguments of the conversion every test repeats."""
    return ["convert", str(clips["root"]), "--labels", str(clips["csv"]), "-o", str(out),
            "--size", size, *SMALL]


def run(*args: str) -> tuple[int, str]:
    """``ahdi ARGS`` in this process: (exit status, output)."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


# ----------------------------------------------------------------------------
# data, clean runs, the invariant
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    """Six 16-frame 64 x 48 clips of two subjects, with a labels CSV."""
    root = tmp_path_factory.mktemp("faults") / "clips"
    rows = []
    for i in range(N):
        fx.write_video(root / f"s{i % 2}" / f"v{i}.mp4", fx.blob_frames(16, w=64, h=48, seed=i))
        rows.append(f"s{i % 2}/v{i}.mp4,{i * 0.5}")
    csv = root.parent / "labels.csv"
    csv.write_text("path,score\n" + "\n".join(rows) + "\n")
    return {"root": root, "csv": csv}


@pytest.fixture(scope="module")
def clean(clips, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs of the command (as a subprocess), by --size."""
    out = {}
    with processes() as procs:
        for size in ("32", "24"):
            path = tmp_path_factory.mktemp(f"clean{size}") / "s.zarr"
            status, output = finish(start(procs, ahdi(*convert_args(clips, path, size))))
            assert status == 0, output
            out[size] = path
    return out


def chunk_files(path: Path) -> dict[str, bytes]:
    """The store's chunk files, less temporary files of writes cut short (harmless,
    invisible to Zarr; ``ahdi verify --repair`` removes them)."""
    return {k: v for k, v in store_chunk_files(path).items() if not k.endswith(".partial")}


def assert_clean(out: Path, reference: Path) -> None:
    """The invariant: byte-identical to the clean run, nothing else lost or left."""
    store = open_store(out)
    assert store.counts() == {"done": N, "failed": 0, "pending": 0}
    assert chunk_files(out) == chunk_files(reference)
    assert store_array_bytes(out) == store_array_bytes(reference)
    assert store.attrs["params"] == open_store(reference).attrs["params"]
    assert not Path(lock_path(out)).exists()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name)) == \
        [out.name]


def copy_of(reference: Path, tmp_path: Path) -> Path:
    out = tmp_path / "s.zarr"
    shutil.copytree(reference, out)
    return out


def _items(n: int = 3) -> list:
    """Items for in-process layouts (a source that is only a description)."""
    return [types.SimpleNamespace(
        video_id=f"v{i}", subject=f"s{i % 2}", labels={"score": float(i), "side": "l"},
        source=types.SimpleNamespace(describe=lambda i=i: f"/v/{i}.mp4")) for i in range(n)]


PARAMS = AhdiParams(size=16, patch=3, n_segments=4)


# ----------------------------------------------------------------------------
# finding 1: a refused run writes nothing
# ----------------------------------------------------------------------------
def test_a_run_refused_by_the_lock_writes_nothing(clips, clean, tmp_path):
    out = copy_of(clean["32"], tmp_path)
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    edited = tmp_path / "edited.csv"
    edited.write_text("path,score\n" + "".join(f"s{i % 2}/v{i}.mp4,x{i}\n" for i in range(N)))
    args = convert_args(clips, out)
    args[args.index(str(clips["csv"]))] = str(edited)
    with open_store(out, mode="r+").lock():      # another writer holds it
        status, output = run(*args)
    assert status == 1, output
    assert f"Error: store {out} is locked by pid {os.getpid()}" in output
    after = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before                      # labels, subjects, sources untouched
    np.testing.assert_array_equal(open_store(out).labels()["score"],
                                  open_store(clean["32"]).labels()["score"])


def test_a_refused_mismatch_writes_nothing(clips, clean, tmp_path):
    out = copy_of(clean["32"], tmp_path)
    before = {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    status, output = run(*convert_args(clips, out, "24"))
    assert status == 1
    assert (f"Error: store {out} was made with size=32, you asked size=24; use --overwrite "
            f"to replace it, or another output path") in output
    assert {str(p): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ----------------------------------------------------------------------------
# finding 2: conversions started at once on a new path
# ----------------------------------------------------------------------------
def test_no_store_is_laid_out_while_another_process_holds_its_lock(tmp_path):
    # The race of two conversions on a new path, made certain: the other one
    # holds the lock (taken before its store exists) and has written nothing yet.
    from ahdi.pipeline.lock import hold_lock

    path = tmp_path / "s.zarr"
    with hold_lock(lock_path(path), what=str(path)):
        with pytest.raises(StoreError, match=f"store {path} is locked by pid {os.getpid()}"):
            create_store(path, _items(), PARAMS, ["ahdi"], dataset="d", source="s")
        assert not path.exists()


@pytest.mark.slow
@pytest.mark.parametrize("sizes", [("32", "24"), ("32", "32")], ids=["different", "equal"])
def test_conversions_started_at_once_on_a_new_path(clips, clean, tmp_path, sizes):
    for trial in range(TRIALS):
        out = tmp_path / f"t{trial}" / "s.zarr"
        out.parent.mkdir()
        with processes() as procs:
            both = [start(procs, ahdi(*convert_args(clips, out, size))) for size in sizes]
            results = [finish(proc) for proc in both]
        for status, output in results:
            assert "Traceback" not in output and "zarr" not in output.lower().replace(
                str(out).lower(), ""), output
            assert status in (0, 1), output
        winners = [k for k, (status, _) in enumerate(results) if status == 0]
        assert winners and (len(winners) == 1 or sizes[0] == sizes[1]), results
        refusals = (f"Error: store {out} is locked by pid",       # the other one holds it
                    f"Error: store {out} is being locked by another process right now",
                    f"Error: store {out} was made with size=")    # the other one finished
        for status, output in results:
            assert status == 0 or any(r in output for r in refusals), output
        size = sizes[winners[0]]
        assert open_store(out).size == int(size)
        assert_clean(out, clean[size])
        status, output = run(*convert_args(clips, out, size))   # the same command again
        assert status == 0 and f"0 converted, 0 failed, {N} already done" in output, output
        assert_clean(out, clean[size])


# ----------------------------------------------------------------------------
# finding 3: an interrupted layout
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["kill", "disk full"])
def test_a_layout_cut_short_at_every_step_is_rebuilt_by_the_same_call(tmp_path, monkeypatch,
                                                                      fault):
    items = _items()
    reference = create_store(tmp_path / "ref.zarr", items, PARAMS, ["ahdi", "mdv"],
                             dataset="d", source="s")
    steps = len(array_specs(items, PARAMS, ["ahdi", "mdv"])) + 1   # every array, then metadata
    exc = (KeyboardInterrupt() if fault == "kill" else
           OSError(errno.ENOSPC, "No space left on device"))
    for k in range(steps):
        path = tmp_path / f"k{k}.zarr"
        calls = {"n": 0}

        def step(real):
            def faulty(*args, **kwargs):
                if calls["n"] == k:
                    raise exc
                calls["n"] += 1
                return real(*args, **kwargs)
            return faulty

        monkeypatch.setattr(layout, "_create_array", step(layout._create_array))
        monkeypatch.setattr(layout, "_consolidate", step(layout._consolidate))
        with pytest.raises((KeyboardInterrupt, StoreError)) as info:
            create_store(path, items, PARAMS, ["ahdi", "mdv"], dataset="d", source="s")
        monkeypatch.undo()
        if fault == "disk full":
            assert str(info.value) == (
                f"cannot lay out store {path}: No space left on device; free the space or "
                f"fix the folder, then run the same command again (it rebuilds the "
                f"half-made store)")
        assert not Path(lock_path(path)).exists()
        if k < steps - 1:
            with pytest.raises(StoreError, match="was not completely laid out .*; run the "
                                                 "same ahdi convert command again"):
                open_store(path)
        create_store(path, items, PARAMS, ["ahdi", "mdv"], dataset="d", source="s")
        assert store_chunk_files(path) == store_chunk_files(reference.path), k
        assert store_array_bytes(path) == store_array_bytes(reference.path), k
        assert zarr.open_group(str(path), mode="r").metadata.consolidated_metadata, k


@pytest.mark.slow
def test_sigkill_at_random_moments_of_the_layout_and_the_run(clips, clean, tmp_path):
    rng = random.Random(SEED)
    for trial in range(TRIALS):
        out = tmp_path / f"t{trial}" / "s.zarr"
        out.parent.mkdir()
        delay = rng.uniform(0.0, 0.6)
        with processes() as procs:
            proc = start(procs, ahdi(*convert_args(clips, out)))
            wait_until(lambda: (out / "zarr.json").exists() or proc.poll() is not None, 60,
                       "the layout to begin")
            time.sleep(delay)
            proc.kill()
            proc.wait(timeout=30)
            status, output = run("inspect", out)   # whatever the moment: no traceback
            assert status in (0, 1) and "Traceback" not in output, (SEED, delay, output)
            status, output = finish(start(procs, ahdi(*convert_args(clips, out))))
        assert status == 0 and "Traceback" not in output, (SEED, delay, output)
        assert_clean(out, clean["32"])
        status, output = run("verify", out)
        assert status == 0, output


def test_a_half_made_store_of_an_earlier_ahdi_is_rebuilt(clips, clean, tmp_path):
    for overwrite in ([], ["--overwrite"]):
        out = tmp_path / f"h{len(overwrite)}" / "s.zarr"
        out.parent.mkdir()
        # what the previous layout left when killed: the root, two arrays, no columns
        attrs = dict(open_store(clean["32"]).attrs, ahdi_store_version=1)
        group = zarr.open_group(str(out), mode="w-", zarr_format=3, attributes=attrs)
        group.create_array("ahdi", shape=(N, 32, 32, 3), chunks=(1, 32, 32, 3), dtype="uint8")
        group.create_array("mdv", shape=(N, 2, 32, 32, 3), chunks=(1, 1, 32, 32, 3),
                           dtype="uint8")
        status, output = run("inspect", out)
        assert status == 1
        assert (f"Error: store {out} was not completely laid out (the command creating it "
                f"was interrupted); run the same ahdi convert command again to rebuild it"
                ) in output
        status, output = run(*convert_args(clips, out), *overwrite)
        assert status == 0, output
        assert open_store(out).version == 3
        assert_clean(out, clean["32"])


def test_a_label_name_that_is_no_array_name_is_refused_before_anything(tmp_path):
    items = _items()
    items[1].labels = {"../../evil": 1.0}
    path = tmp_path / "s.zarr"
    with pytest.raises(DatasetError) as info:
        create_store(path, items, PARAMS, ["ahdi"], dataset="d", source="s")
    assert str(info.value) == (f"label column '../../evil' holds a path separator; it cannot "
                               f"name an array of store {path} (rename the column)")
    assert os.listdir(tmp_path) == []            # no store, no lock file
    items[1].labels = {"score": "caf\udce9"}    # a byte of a foreign encoding
    with pytest.raises(DatasetError, match=r"item v1: label 'score' holds '\\udce9', which is "
                                           r"not Unicode text; store .* cannot hold it"):
        create_store(path, items, PARAMS, ["ahdi"], dataset="d", source="s")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------
# finding 4: damaged, zero-byte and deleted chunks
# ----------------------------------------------------------------------------
def _inner(out: Path, array: str, position: tuple[int, ...]) -> tuple[Path, int, int, int]:
    """The object holding array's chunk at element ``position``: (file, index entry,
    offset, size); entry -1 and the whole file for an array without shards."""
    from ahdi.pipeline.chunks import inner_grid, object_key

    arr = zarr.open_group(str(out), mode="r")[array]
    coords = tuple(p // c for p, c in zip(position, arr.chunks))
    file = out / array / object_key(arr, coords)
    grid = inner_grid(arr)
    if grid is None:
        return file, -1, 0, file.stat().st_size
    n = int(np.prod(grid))
    index = np.frombuffer(file.read_bytes()[-(16 * n + 4):-4], "<u8").reshape(n, 2)
    entry = int(np.ravel_multi_index(tuple(c % g for c, g in zip(coords, grid)), grid))
    return file, entry, int(index[entry, 0]), int(index[entry, 1])


def drop_chunk(out: Path, array: str, position: tuple[int, ...]) -> None:
    """Make one chunk not stored: its file, or its entry of its shard's index (the
    index's CRC32C made to match, as an index without that chunk would be)."""
    import google_crc32c

    file, entry, _offset, _size = _inner(out, array, position)
    if entry < 0:
        file.unlink()
        return
    from ahdi.pipeline.chunks import inner_grid

    data = bytearray(file.read_bytes())
    n = int(np.prod(inner_grid(zarr.open_group(str(out), mode="r")[array])))
    start = len(data) - (16 * n + 4)
    data[start + 16 * entry:start + 16 * entry + 16] = b"\xff" * 16
    data[-4:] = google_crc32c.value(bytes(data[start:-4])).to_bytes(4, "little")
    file.write_bytes(bytes(data))


# Damage to an array stored as one chunk of G items (status, n_frames) or whose
# chunk spans G items (motion: 64 items x 4096 frames) is damage to every item in it.
WHOLE_GROUP = ("status", "motion", "n_frames")


def _damage(out: Path, how: str) -> tuple[str, str, str]:
    """Damage item 2's chunk of one array; returns (video id, array, 'damaged'/'missing')."""
    vid = str(open_store(out).video_ids()[2])
    positions = {"ahdi": (2, 0, 0, 0), "mdv": (2, 0, 0, 0, 0), "status": (2,),
                 "motion": (2, 0), "n_frames": (2,)}
    array, change = how.split(":")
    if change == "deleted":
        drop_chunk(out, array, positions[array])
        return vid, array, "missing"
    file, _entry, offset, size = _inner(out, array, positions[array])
    data = bytearray(file.read_bytes())
    if change == "random":
        data[offset:offset + size] = np.random.default_rng(0).bytes(size)
    elif change == "flip":
        data[offset + size // 2] ^= 0x10
    else:   # empty: the whole object
        data = bytearray()
    file.write_bytes(bytes(data))
    return vid, array, "damaged"


@pytest.mark.parametrize("how", ["ahdi:random", "ahdi:flip", "ahdi:deleted", "mdv:deleted",
                                 "mdv:flip", "status:empty", "motion:flip", "n_frames:deleted"])
def test_a_damaged_chunk_is_named_skipped_repaired_and_redone(clips, clean, tmp_path, how,
                                                             caplog):
    out = copy_of(clean["32"], tmp_path)
    vid, array, kind = _damage(out, how)
    line = f"item {vid}: array {array}: {kind} chunk ("
    hint = f"run ahdi verify {out} --repair, then the same ahdi convert command"

    if array in ("ahdi", "mdv"):                  # readers name it and say how to repair
        with pytest.raises(DamagedChunkError) as info:
            open_store(out).image("ahdi", 2) if array == "ahdi" else open_store(out).mdv(2)
        assert str(info.value).startswith(f"store {out}: {line}") and hint in str(info.value)
    pictures = ["--montage", tmp_path / "m.png", "--rep", array if array == "mdv" else "ahdi",
                "--export", tmp_path / "png"]
    if how in ("ahdi:random", "status:empty", "motion:flip"):   # the page draws every item
        pictures += ["--html", tmp_path / "r.html"]
    with caplog.at_level(logging.WARNING, logger="ahdi.pipeline.figures"):
        status, output = run("inspect", out, *pictures)
    assert "Traceback" not in output, output
    if array == "status":    # every item's status is in the damaged chunk: none is drawn
        assert status == 1 and f"[2] {vid}: array status: damaged chunk" in output, output
        assert f"Error: no done item to show in store {out}" in output
    else:
        assert status == 0, output
    if array in ("ahdi", "mdv"):
        assert any(f"skipped: store {out}: item {vid}: array {array}: damaged chunk" in m
                   or f"skipped: store {out}: {line}" in m for m in caplog.messages), \
            caplog.messages
        assert not any(f"2_s0_v2" in p.name for p in (tmp_path / "png").rglob("*.png"))

    bad = N if array in WHOLE_GROUP else 1
    status, output = run("verify", out)
    assert status == 1 and output.count(line) == 1, output
    assert f"{bad} bad chunks in {bad} items" in output, output
    status, output = run("verify", out, "--repair")
    assert status == 1 and f"marked {bad} items pending" in output, output
    status, output = run(*convert_args(clips, out))
    assert status == 0 and f"{bad} converted, 0 failed, {N - bad} already done" in output, \
        output
    assert_clean(out, clean["32"])
    assert run("verify", out)[0] == 0


def test_a_zero_byte_status_chunk_is_redone_by_a_rerun_and_by_overwrite(clips, clean,
                                                                       tmp_path):
    for extra in ([], ["--overwrite"]):
        out = copy_of(clean["32"], tmp_path)
        _damage(out, "status:empty")      # the statuses of items 0-63: all N redone
        status, output = run(*convert_args(clips, out), *extra)
        assert status == 0 and f"{N} converted, 0 failed, 0 already done" in output, \
            output
        assert_clean(out, clean["32"])
        shutil.rmtree(out)


def test_a_deleted_image_chunk_never_reads_as_a_black_image(clean, tmp_path):
    out = copy_of(clean["32"], tmp_path)
    store = open_store(out)
    assert store.image("ahdi", 3).any()
    drop_chunk(out, "ahdi", (3, 0, 0, 0))
    with pytest.raises(DamagedChunkError, match="array ahdi: missing chunk"):
        store.images("ahdi", [1, 3])
    with pytest.raises(DamagedChunkError, match="missing chunk"):
        store.image("ahdi", 3)


@pytest.mark.slow
def test_train_and_evaluate_stop_with_one_error_line_on_a_damaged_item(clips, clean, tmp_path):
    pytest.importorskip("torch")
    out = copy_of(clean["32"], tmp_path)
    status, output = run("train", out, "--label", "score", "--protocol", "kfold:2",
                         "--max-folds", "1", "--epochs", "1", "--batch-size", "2",
                         "--in-memory", "always", "--out", tmp_path / "run", "--quiet")
    assert status == 0, output
    vid, array, kind = _damage(out, "ahdi:flip")
    for args in (["train", out, "--label", "score", "--protocol", "kfold:2", "--max-folds",
                  "1", "--epochs", "1", "--in-memory", "always", "--out", tmp_path / "run2",
                  "--quiet"],
                 # Streamed: the error meets a DataLoader worker process first.
                 ["train", out, "--label", "score", "--protocol", "kfold:2", "--max-folds",
                  "1", "--epochs", "1", "--in-memory", "never", "--out", tmp_path / "run3",
                  "--quiet"],
                 ["evaluate", tmp_path / "run", out, "--out", tmp_path / "ev"]):
        status, output = run(*args)
        assert status == 1, output
        assert f"Error: store {out}: item {vid}: array ahdi: damaged chunk (" in output
        assert "Traceback" not in output


# ----------------------------------------------------------------------------
# labels are data
# ----------------------------------------------------------------------------
def test_a_new_labels_csv_replaces_the_labels_without_recomputing(clips, clean, tmp_path):
    out = copy_of(clean["32"], tmp_path)
    computed = {k: v for k, v in chunk_files(out).items() if not k.startswith("label_")}
    text = tmp_path / "text.csv"
    text.write_text("path,score,side\n" + "".join(f"s{i % 2}/v{i}.mp4,grade {i},l\n"
                                                   for i in range(N)))
    args = convert_args(clips, out)
    args[args.index(str(clips["csv"]))] = str(text)
    status, output = run(*args)
    assert status == 0 and f"0 converted, 0 failed, {N} already done" in output, output
    store = open_store(out)
    assert store.label_kinds == {"score": "text", "side": "text"}
    assert sorted(store.labels()["score"]) == [f"grade {i}" for i in range(N)]
    assert {k: v for k, v in chunk_files(out).items() if not k.startswith("label_")} == computed
    status, output = run(*convert_args(clips, out))      # and back to numbers
    assert status == 0, output
    assert_clean(out, clean["32"])
