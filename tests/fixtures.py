"""Builders of tiny videos and dataset trees that copy each layout exactly.

Every function writes under a folder it is given and returns what it wrote
(paths and the expected labels), so tests of any module can reuse them:

>>> from tests.fixtures import make_unbc_tree          # doctest: +SKIP
>>> info = make_unbc_tree(tmp_path / "UNBC")            # doctest: +SKIP

Frames are small (32 x 24 by default) with a bright blob moving over a
gradient, so motion is never zero; ``black_first`` prepends black frames.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

W, H = 32, 24


def blob_frames(n: int = 8, w: int = W, h: int = H, *, black_first: int = 0, seed: int = 0,
                step: int = 2) -> list[np.ndarray]:
    """``n`` RGB uint8 frames: a gradient with a bright square moving right and down.

    The first ``black_first`` of them are all black. ``seed`` shifts colours
    and the start position so different videos differ.
    """
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.uint8)
    base[..., 0] = np.linspace(30, 120, w, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(40, 100, h, dtype=np.uint8)[:, None]
    base[..., 2] = int(rng.integers(20, 80))
    side = max(3, min(w, h) // 4)
    x0, y0 = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    colour = np.array([255, int(rng.integers(150, 256)), int(rng.integers(0, 100))], np.uint8)
    frames = []
    for i in range(n):
        if i < black_first:
            frames.append(np.zeros((h, w, 3), np.uint8))
            continue
        f = base.copy()
        x = (x0 + step * i) % max(1, w - side)
        y = (y0 + (step * i) // 2) % max(1, h - side)
        f[y:y + side, x:x + side] = colour
        frames.append(f)
    return frames


def write_video(path: str | os.PathLike, frames: list[np.ndarray], fps: float = 30.0,
                fourcc: str = "mp4v") -> Path:
    """Write RGB frames with cv2.VideoWriter (mp4v in .mp4 by default; MJPG for .avi)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cv2.VideoWriter cannot write {path} with {fourcc}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    assert path.stat().st_size > 0
    return path


def write_frames(folder: str | os.PathLike, frames: list[np.ndarray],
                 pattern: str = "frame{i}.png", start: int = 1) -> list[Path]:
    """Write RGB frames as images named by ``pattern`` (``{i}`` from ``start``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, f in enumerate(frames, start=start):
        p = folder / pattern.format(i=i)
        assert cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        out.append(p)
    return out


def read_video_raw(path: str | os.PathLike) -> list[np.ndarray]:
    """All frames of a video as RGB (test helper; holds everything in memory)."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


# ----------------------------------------------------------------------
# special videos
# ----------------------------------------------------------------------
def make_blank_video(path: str | os.PathLike, n: int = 6, w: int = 64, h: int = 48,
                     value: int = 128) -> Path:
    """A constant grey video (no face anywhere)."""
    return write_video(path, [np.full((h, w, 3), value, np.uint8)] * n)


def make_truncated_video(path: str | os.PathLike, n: int = 30, keep: float = 0.6) -> tuple[Path, int]:
    """An MJPG .avi cut to ``keep`` of its bytes: the header still claims ``n`` frames."""
    path = Path(path)
    full = path.with_name(path.stem + "_full.avi")
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]
    write_video(full, frames, fourcc="MJPG")
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    full.unlink()
    return path, n


# ----------------------------------------------------------------------
# dataset trees
# ----------------------------------------------------------------------
def make_folder_tree(root: str | os.PathLike) -> dict:
    """A plain folder: videos in subject folders, a frame folder, a top-level video, a CSV.

    ::

        root/subjA/clip1.mp4           8 frames
        root/subjA/clip2.avi           6 frames (MJPG)
        root/subjB/clip3.mp4           7 frames, 2 black first
        root/subjB/seq/frame1..frame12.png  (frame2 sorts before frame10)
        root/top.mp4                   6 frames (subject = the root's name)
        root/notes.txt                 ignored
        labels.csv (beside root, not in it): path,subject,score,group
    """
    root = Path(root)
    write_video(root / "subjA" / "clip1.mp4", blob_frames(8, seed=1))
    write_video(root / "subjA" / "clip2.avi", blob_frames(6, seed=2), fourcc="MJPG")
    write_video(root / "subjB" / "clip3.mp4", blob_frames(7, seed=3, black_first=2))
    seq = blob_frames(12, seed=4)
    write_frames(root / "subjB" / "seq", seq)
    write_video(root / "top.mp4", blob_frames(6, seed=5))
    (root / "notes.txt").write_text("not a video\n")
    csv_path = root.parent / f"{root.name}_labels.csv"
    csv_path.write_text(
        "path,subject,score,group\n"
        "subjA/clip1.mp4,p1,   3.0000000e+00,a\n"
        "subjB/seq,p2,1.5,\n"
        "subjB/missing.mp4,p3,,b\n"
        "top.mp4,,2,c\n")
    return {
        "root": root,
        "csv": csv_path,
        "ids": ["subjA/clip1", "subjA/clip2", "subjB/clip3", "subjB/seq", "top"],
        "subjects": {"subjA/clip1": "subjA", "subjA/clip2": "subjA", "subjB/clip3": "subjB",
                     "subjB/seq": "subjB", "top": root.name},
        "seq_frames": seq,
        "csv_ids": ["subjA/clip1", "subjB/missing", "subjB/seq", "top"],
    }


UNBC_SEQUENCES = {
    # subject: {sequence: (n_frames, black_first)}
    "042-ll042": {"ll042t1aaaff": (8, 0), "ll042t1aiaff": (6, 2)},
    "043-jh043": {"jh043t2aaaff": (10, 0)},
}


def _landmarks(frame_w: int, frame_h: int, shift: float) -> str:
    """66 'x y' points on an ellipse inside the frame, in the AAM files' float format."""
    t = np.linspace(0, 2 * np.pi, 66, endpoint=False)
    cx, cy = frame_w * 0.5 + shift, frame_h * 0.5
    xs = cx + frame_w * 0.2 * np.cos(t)
    ys = cy + frame_h * 0.3 * np.sin(t)
    return "".join(f"   {x:.7e}   {y:.7e}\n" for x, y in zip(xs, ys))


def make_unbc_tree(root: str | os.PathLike) -> dict:
    """The UNBC-McMaster layout with three sequences of two subjects.

    Sequence labels are written like the archive does (``   3.0000000e+00``).
    PSPI per frame = frame index mod 4 (in the second sequence: 0 on the
    black frames); FACS files list ``AU intensity`` lines, some zero-byte.
    AAM landmarks exist for subject 042 only; VAS is missing for 043.
    """
    root = Path(root)
    expected: dict[str, dict] = {}
    seed = 10
    for subj, seqs in UNBC_SEQUENCES.items():
        for seq, (n, black) in seqs.items():
            seed += 1
            frames = blob_frames(n, seed=seed, black_first=black)
            write_frames(root / "Images" / subj / seq, frames, pattern=seq + "{i:03d}.png")
            opr, vas, aff, sen = float(seed % 5), float(seed % 7), float(seed % 3), 2.0
            for kind, v in (("OPR", opr), ("VAS", vas), ("AFF", aff), ("SEN", sen)):
                if kind == "VAS" and subj.startswith("043"):
                    continue
                d = root / "Sequence_Labels" / kind / subj
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{seq}.txt").write_text(f"   {v:.7e}\n")
            pspi, au_counts = [], []
            for i in range(1, n + 1):
                stem = f"{seq}{i:03d}"
                p = 0.0 if i <= black else float(i % 4)
                pspi.append(p)
                d = root / "Frame_Labels" / "PSPI" / subj / seq
                d.mkdir(parents=True, exist_ok=True)
                (d / f"{stem}_facs.txt").write_text(f"   {p:.7e}\n")
                d = root / "Frame_Labels" / "FACS" / subj / seq
                d.mkdir(parents=True, exist_ok=True)
                aus = [] if p == 0 else [(4, p), (6, 1.0), (43, 1.0)][: int(p)]
                au_counts.append(len(aus))
                (d / f"{stem}_facs.txt").write_text(
                    "".join(f"   {a:.7e}   {v:.7e}\n" for a, v in aus))
                if subj.startswith("042"):
                    d = root / "AAM_landmarks" / subj / seq
                    d.mkdir(parents=True, exist_ok=True)
                    (d / f"{stem}_aam.txt").write_text(_landmarks(W, H, shift=i % 2))
            expected[f"{subj}/{seq}"] = {
                "subject": subj, "n_frames": n, "frames": frames,
                "opr": opr, "vas": float("nan") if subj.startswith("043") else vas,
                "aff": aff, "sen": sen,
                "pspi_max": max(pspi), "pspi_mean": sum(pspi) / len(pspi),
                "au_count_max": float(max(au_counts)),
                "landmarks": subj.startswith("042"),
            }
    return {"root": root, "items": expected}


BIOVID_SUBJECTS = ("071309_w_21", "081014_w_27")
BIOVID_CLASSES = ((0, "BL1"), (1, "PA1"), (4, "PA4"))


def make_biovid_tree(root: str | os.PathLike, *, part_classes=BIOVID_CLASSES,
                     per_class: int = 2, seed: int = 100) -> dict:
    """The BioVid layout: video/<subject>/<sample>.mp4 and a TAB-separated samples.csv."""
    root = Path(root)
    rows = ["subject_id\tsubject_name\tclass_id\tclass_name\tsample_id\tsample_name"]
    expected = {}
    sample_id = 0
    for sid, subj in enumerate(BIOVID_SUBJECTS):
        for cid, cname in part_classes:
            for k in range(per_class):
                sample_id += 1
                name = f"{subj}-{cname}-{sample_id:03d}"
                write_video(root / "video" / subj / f"{name}.mp4",
                            blob_frames(6, seed=seed + sample_id))
                rows.append(f"{sid}\t{subj}\t{cid}\t{cname}\t{sample_id}\t{name}")
                expected[f"{subj}/{name}"] = {"subject": subj, "class_id": float(cid),
                                              "class_name": cname}
    (root / "samples.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "items": expected}


def make_archive(src_dir: str | os.PathLike, dest: str | os.PathLike, *, wrap: bool = True) -> Path:
    """Pack a folder into ``dest`` (.zip, .tar, .tar.gz or .tgz).

    With ``wrap`` every member sits under one top folder named like the
    source folder, as archives made by hand usually are.
    """
    src_dir, dest = Path(src_dir), Path(dest)
    files = sorted(p for p in src_dir.rglob("*") if p.is_file())
    top = src_dir.name + "/" if wrap else ""
    if dest.name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for p in files:
                zf.write(p, top + p.relative_to(src_dir).as_posix())
    else:
        mode = "w:gz" if dest.name.endswith((".tar.gz", ".tgz")) else "w"
        with tarfile.open(dest, mode) as tf:
            for p in files:
                tf.add(p, top + p.relative_to(src_dir).as_posix())
    return dest


def store_chunk_files(store_path: str | os.PathLike) -> dict[str, bytes]:
    """A store's chunk files themselves (zarr.json metadata, with its timestamps, excluded)."""
    root = Path(store_path)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "zarr.json" and not p.name.startswith(".")}


def store_array_bytes(store_path: str | os.PathLike) -> dict[str, bytes]:
    """Every array's decoded values as bytes; motion only up to each item's n_frames
    (its NaN padding is 2**22 values per item; the chunk files are compared anyway)."""
    import zarr

    from ahdi.pipeline.store import open_store

    store = open_store(store_path)
    group = zarr.open_group(str(store_path), mode="r")
    out = {}
    for name, array in group.arrays():
        if name == "motion":
            values = np.concatenate([store.motion(i) for i in range(store.n_items)])
        else:
            values = array[...]
        if values.dtype.kind in "OUT":  # strings: zarr 3 returns numpy's StringDType
            out[name] = "\x00".join(str(v) for v in values.ravel()).encode()
        else:
            out[name] = values.tobytes()
    return out
