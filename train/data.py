"""What the trainer reads from a store, and how batches reach the model.

``select_items`` picks the ``done`` items with a usable label and turns the
label into a float target (regression) or 0/1 (binary). ``ImageSource``
delivers uint8 batches of the chosen representation: when the selected
arrays fit in memory (with a margin) they are loaded once as one uint8
tensor, on the GPU when there is one, and batches are slices of it;
otherwise DataLoader worker processes stream chunks from the store (from a
store on object storage, a local copy of the selection made once: every
epoch would otherwise fetch it again).
``BatchTransform`` then does the float conversion, the augmentation
(random resized crop, horizontal flip, small colour jitter, one draw per
sample, in batch, on the model's device) and ImageNet normalisation. The
optical-flow picture is augmented as motion: its hue is the direction of
motion, so a flip mirrors the hue too, and it gets no contrast or
saturation jitter (its saturation is fixed, its value is the magnitude).

MDV stacks are padded to the longest stack of the selection; the mask says
which images are real.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import tempfile
import weakref

import numpy as np
import torch
import torch.nn.functional as F

from ahdi.pipeline.errors import AhdiError
from ahdi.pipeline.store import is_remote

from .vocab import IN_MEMORY, REPRESENTATIONS, TASKS, check_choice

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MISSING_TEXT = {"", "nan"}          # the store writes "" for a missing text label


class DataError(AhdiError, ValueError):
    """The store cannot give what the run asks for (message says why)."""


class NoLabelValuesError(DataError):
    """No done item of the store has a value for the label asked for."""


@dataclasses.dataclass
class Selection:
    """The items a run uses, in store order."""
    indices: np.ndarray        # store item indices
    targets: np.ndarray        # float32: regression value or 0/1
    subjects: np.ndarray       # str
    video_ids: np.ndarray      # str
    labels: dict               # every label column, restricted to the selection
    counts: dict               # how many items were done / failed / pending / unlabelled

    def __len__(self) -> int:
        return int(self.indices.size)


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    return np.array([v is None or str(v).strip().lower() in _MISSING_TEXT for v in values],
                    dtype=bool)


def _as_float(values: np.ndarray) -> np.ndarray | None:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _only(ids: np.ndarray, done: np.ndarray, items) -> np.ndarray:
    """``done`` restricted to the video ids ``items``; every id must be a done item.

    ``ids`` are the store's video ids, as text.
    """
    wanted = set(map(str, items))
    absent = sorted(wanted - set(ids[done].tolist()))
    if absent:
        raise DataError(f"{len(absent)} of the {len(wanted)} items asked for are not done "
                        f"items of the store: {', '.join(absent[:5])}")
    return done & np.isin(ids, list(wanted))


def select_items(store, label: str, task: str, positive: str | None = None,
                 representation: str = "ahdi", items=None) -> Selection:
    """Done items of ``store`` with a non-missing ``label``, and their targets.

    Binary targets come from a numeric 0/1 label, or from a text (or
    numeric) label compared with ``positive``. ``items`` (video ids), when
    given, restricts the selection to them. A regression label that is
    infinite is refused by item (an empty or NaN label is missing and
    skipped).
    """
    try:
        check_choice("task", task, TASKS)
        check_choice("representation", representation, REPRESENTATIONS)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    have = list(store.representations)
    if representation not in have:
        raise DataError(f"representation {representation!r} is not in this store; "
                        f"it has: {', '.join(have) or 'none'}")
    names = list(store.label_names)
    if label not in names:
        raise DataError(f"unknown label {label!r}; known labels: {', '.join(names) or 'none'}")
    statuses = np.asarray(store.statuses()).astype(str)
    done = statuses == "done"
    counts = {s: int(np.sum(statuses == s)) for s in ("done", "failed", "pending")}
    if not done.any():
        raise DataError(f"no done items in the store ({store.n_items} items: "
                        f"{counts['pending']} pending, {counts['failed']} failed); "
                        "run `ahdi convert` first")
    # Read once: each read is a whole column (a remote read on S3).
    ids = np.asarray(store.video_ids()).astype(str)
    if items is not None:
        done = _only(ids, done, items)
    all_labels = store.labels()
    values = np.asarray(all_labels[label])
    keep = done & ~_missing(values)
    counts["unlabelled"] = int(np.sum(done & _missing(values)))
    if not keep.any():
        raise NoLabelValuesError(f"no done item has a value for label {label!r}")
    idx = np.flatnonzero(keep)
    v = values[idx]
    numeric = _as_float(v)
    if task == "regression":
        if numeric is None:
            raise DataError(f"label {label!r} is text ({sorted(set(v.tolist()))[:5]}); "
                            "regression needs numbers")
        bad = np.flatnonzero(~np.isfinite(numeric))
        if bad.size:
            shown = ", ".join(f"{i} = {x}" for i, x in zip(ids[idx[bad]][:5], numeric[bad][:5]))
            raise DataError(f"label {label!r} is not a finite number for {bad.size} "
                            f"item(s) ({shown}); fix them, or leave them empty to skip them")
        targets = numeric
    elif positive is None:
        if numeric is None or not np.all((numeric == 0) | (numeric == 1)):
            seen = sorted({str(x) for x in v.tolist()})
            raise DataError(f"binary task: label {label!r} has values {seen[:10]}; "
                            "use a 0/1 label or say which value is positive with --positive VALUE")
        targets = numeric
    else:
        if numeric is not None and _as_float(np.array([positive])) is not None:
            targets = (numeric == float(positive)).astype(np.float64)
        else:
            targets = np.array([str(x) == str(positive) for x in v.tolist()], np.float64)
        if not targets.any():
            seen = sorted({str(x) for x in v.tolist()})
            raise DataError(f"--positive {positive!r} matches no item of label {label!r}; "
                            f"its values are {seen[:10]}")
    return Selection(indices=idx.astype(np.int64), targets=targets.astype(np.float32),
                     subjects=np.asarray(store.subjects()).astype(str)[idx],
                     video_ids=ids[idx],
                     labels={k: np.asarray(a)[idx] for k, a in all_labels.items()},
                     counts=counts)


# ----------------------------------------------------------------------------
# reading arrays
def read_images(store, representation: str, indices, chunk: int = 256) -> np.ndarray:
    """(k, S, S, 3) uint8 of a single-image representation, read in chunks."""
    indices = np.asarray(indices, np.int64)
    parts = [np.asarray(store.images(representation, indices[i:i + chunk]))
             for i in range(0, indices.size, chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, store.size, store.size, 3), np.uint8)


def read_mdv(store, indices, m_max: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, m_max, S, S, 3) uint8 padded MDV stacks and (k,) counts."""
    s = int(store.size)
    out = np.zeros((len(indices), m_max, s, s, 3), np.uint8)
    counts = np.zeros(len(indices), np.int64)
    for j, i in enumerate(indices):
        stack = np.asarray(store.mdv(int(i)))
        n = min(stack.shape[0], m_max)
        out[j, :n] = stack[:n]
        counts[j] = n
    return out, counts


def _read(store, representation: str, indices,
          m_max: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The images of ``indices`` in ``representation``, and their MDV counts
    (None for a single-image representation; ``m_max`` applies to MDV only)."""
    if representation == "mdv":
        return read_mdv(store, indices, m_max)
    return read_images(store, representation, indices), None


def memory_budget(device: torch.device, margin: float = 0.5) -> int:
    """Bytes of selected arrays we allow in memory on ``device``."""
    import psutil
    ram = int(psutil.virtual_memory().available * margin)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return min(ram, int(free * 0.4))
    return ram


class _ChunkDataset(torch.utils.data.Dataset):
    """Reads one chunk (an array of selection positions) per ``__getitem__``."""

    def __init__(self, store, representation, store_indices, m_max):
        self.path = getattr(store, "path", None)
        self._store = store
        self.representation = representation
        self.store_indices = store_indices
        self.m_max = m_max

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None:
            state["_store"] = None      # each worker opens its own handle
        return state

    def _get_store(self):
        if self._store is None:
            from ahdi.pipeline.store import open_store
            self._store = open_store(self.path)
        return self._store

    def __len__(self):
        return len(self.store_indices)

    def __getitem__(self, positions):
        positions = np.asarray(positions, np.int64)
        order = np.argsort(positions, kind="stable")         # read in store order
        store = self._get_store()
        idx = self.store_indices[positions[order]]
        try:
            x, counts = _read(store, self.representation, idx, self.m_max)
        except AhdiError as exc:
            # Sent back as a value: a DataLoader worker's exception reaches the
            # main process wrapped in the worker's traceback text.
            return _ReadFailure(type(exc), str(exc))
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        x = torch.from_numpy(np.ascontiguousarray(x[inv]))
        c = torch.from_numpy(counts[inv]) if counts is not None else torch.zeros(0)
        return x, c, torch.from_numpy(positions)


class _LocalCopy(torch.utils.data.Dataset):
    """The selection of a store on object storage, read once into a local file.

    Streaming from object storage would fetch every image again each epoch;
    this reads them once (in store order, ``chunk`` items at a time) into a
    ``.npy`` file in the system temp folder, which DataLoader workers map
    read-only. The folder is removed with this object. ``__getitem__`` takes
    positions into the selection, as :class:`_ChunkDataset` does.
    """

    def __init__(self, store, representation, store_indices, m_max, chunk: int = 256):
        mdv = representation == "mdv"
        s = int(store.size)
        shape = (len(store_indices),) + ((m_max,) if mdv else ()) + (s, s, 3)
        need = int(np.prod(shape))
        folder = tempfile.mkdtemp(prefix="ahdi-train-cache-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, folder, True)
        free = shutil.disk_usage(folder).free
        if need > 0.95 * free:
            self._cleanup()
            raise DataError(f"store {store.path}: the {need} bytes of {representation} images "
                            f"to train on fit neither in memory nor in the {free} bytes free in "
                            f"{os.path.dirname(folder)}; free space there or set TMPDIR")
        self.file = os.path.join(folder, f"{representation}.npy")
        self.representation = representation
        self.counts = np.zeros(len(store_indices), np.int64)
        arr = np.lib.format.open_memmap(self.file, mode="w+", dtype=np.uint8, shape=shape)
        for start in range(0, len(store_indices), chunk):
            idx = store_indices[start:start + chunk]
            arr[start:start + len(idx)], counts = _read(store, representation, idx, m_max)
            if counts is not None:
                self.counts[start:start + len(idx)] = counts
        arr.flush()
        del arr
        self._arr = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_arr"] = None           # each worker maps the file itself
        state.pop("_cleanup", None)    # only the main process removes it
        return state

    def __len__(self):
        return self.counts.size

    def __getitem__(self, positions):
        if self._arr is None:
            self._arr = np.load(self.file, mmap_mode="r")
        positions = np.asarray(positions, np.int64)
        x = torch.from_numpy(np.ascontiguousarray(self._arr[positions]))
        c = (torch.from_numpy(self.counts[positions]) if self.representation == "mdv"
             else torch.zeros(0))
        return x, c, torch.from_numpy(positions)


@dataclasses.dataclass(frozen=True)
class _ReadFailure:
    """A user-facing error met by a DataLoader worker, raised again in the main process."""

    kind: type
    message: str


class _Chunks(torch.utils.data.Sampler):
    def __init__(self):
        self.chunks: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self):
        return len(self.chunks)


class ImageSource:
    """uint8 batches of the selection: from memory or streamed from the store.

    ``batches(positions, batch_size, shuffle, rng)`` yields
    ``(x, mask, positions)`` with x (B, S, S, 3) or (B, M, S, S, 3) uint8 on
    ``device``, mask (B, M) bool or None, positions a LongTensor into the
    selection.
    """

    def __init__(self, store, selection: Selection, representation: str,
                 device: torch.device, in_memory: str = "auto", num_workers: int | None = None):
        self.representation = representation
        self.device = device
        self.selection = selection
        self.size = int(store.size)
        n = len(selection)
        if representation == "mdv":
            self.counts_np = np.asarray(store.mdv_counts(selection.indices), np.int64)
            if (self.counts_np < 1).any():
                raise DataError("some done items have no MDV images")
            self.m_max = int(self.counts_np.max())
        else:
            self.counts_np, self.m_max = None, 1
        self.nbytes = n * self.m_max * self.size * self.size * 3
        check_choice("in_memory setting", in_memory, IN_MEMORY)
        self.in_memory = (in_memory == "always"
                          or (in_memory == "auto" and self.nbytes <= memory_budget(device)))
        if self.in_memory:
            arr, counts = _read(store, representation, selection.indices, self.m_max)
            self.counts = None if counts is None else torch.from_numpy(counts).to(device)
            self.images = torch.from_numpy(arr).to(device)
        else:
            if num_workers is None:
                import os
                num_workers = min(8, max(1, (os.cpu_count() or 2) - 1))
            self.num_workers = num_workers
            self._sampler = _Chunks()
            self._dataset = (_LocalCopy if is_remote(store.path) else _ChunkDataset)(
                store, representation, selection.indices, self.m_max)
            self._loader = None

    def _mask(self, counts: torch.Tensor) -> torch.Tensor:
        ar = torch.arange(self.m_max, device=counts.device)
        return ar.unsqueeze(0) < counts.unsqueeze(1)

    def batches(self, positions, batch_size: int, shuffle: bool = False,
                rng: np.random.Generator | None = None, drop_last: bool = False):
        positions = np.asarray(positions, np.int64)
        if shuffle:
            positions = positions[(rng or np.random.default_rng()).permutation(positions.size)]
        stop = positions.size - (positions.size % batch_size if drop_last else 0)
        chunks = [positions[i:min(i + batch_size, stop)] for i in range(0, stop, batch_size)]
        chunks = [c for c in chunks if c.size]
        if self.in_memory:
            for c in chunks:
                pos = torch.from_numpy(c).to(self.device)
                x = self.images[pos]
                mask = self._mask(self.counts[pos]) if self.counts is not None else None
                yield x, mask, pos
            return
        self._sampler.chunks = chunks
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                self._dataset, batch_size=None, sampler=self._sampler,
                num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                pin_memory=self.device.type == "cuda", prefetch_factor=4 if self.num_workers else None)
        for batch in self._loader:
            if isinstance(batch, _ReadFailure):
                raise batch.kind(batch.message)
            x, c, pos = batch
            x = x.to(self.device, non_blocking=True)
            mask = self._mask(c.to(self.device)) if self.representation == "mdv" else None
            yield x, mask, pos.to(self.device)


# ----------------------------------------------------------------------------
# augmentation and normalisation, in batch on the model's device
class BatchTransform:
    """uint8 (B, [M,] S, S, 3) -> normalised float (B, [M,] 3, H, W).

    With ``train=True`` each sample (each video, for MDV: all its images
    alike) gets a random resized crop (area ``scale``, aspect ``ratio``), a
    horizontal flip with p = 0.5 and brightness / contrast / saturation
    factors in ``1 +- jitter``, drawn from a seeded CPU generator.
    ``size`` resizes the output (None keeps S). For ``representation='flow'``
    a flipped picture also gets its hue mirrored (motion direction
    ``(dx, dy)`` becomes ``(-dx, dy)``: hue ``h`` -> ``180 deg - h``), and only
    the brightness is jittered (it scales the magnitude).
    """

    def __init__(self, train: bool, size: int | None = None, seed: int = 0,
                 scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), jitter: float = 0.1,
                 representation: str = "ahdi", flip: float = 0.5):
        self.train = train
        self.size = size
        self.scale, self.ratio, self.jitter, self.flip = scale, ratio, jitter, flip
        # The flow picture's hue is a direction and its saturation is fixed.
        self.motion_picture = representation == "flow"
        self.gen = torch.Generator().manual_seed(seed)

    def _uniform(self, n, lo, hi):
        return lo + (hi - lo) * torch.rand(n, generator=self.gen, dtype=torch.float64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]                           # (B,) or (B, M)
        s = x.shape[-2]
        out_size = self.size or s
        x = x.reshape(-1, s, s, 3).permute(0, 3, 1, 2).float().div_(255.0)
        if self.train:
            x = self._augment(x, lead)
        elif out_size != s:
            x = F.interpolate(x, size=(out_size, out_size), mode="bilinear",
                              align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.reshape(*lead, 3, x.shape[-2], x.shape[-1])

    def _augment(self, x: torch.Tensor, lead) -> torch.Tensor:
        b = lead[0]
        per = x.shape[0] // b                         # images per sample (MDV: M)
        out_size = self.size or x.shape[-1]
        area = self._uniform(b, *self.scale)
        log_r = self._uniform(b, math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(log_r)
        w = torch.sqrt(area * r).clamp(max=1.0)       # fractions of the side
        h = torch.sqrt(area / r).clamp(max=1.0)
        cx = (self._uniform(b, 0, 1) * (1 - w) + w / 2) * 2 - 1     # centre in [-1, 1]
        cy = (self._uniform(b, 0, 1) * (1 - h) + h / 2) * 2 - 1
        flipped = torch.rand(b, generator=self.gen) < self.flip
        flip = torch.where(flipped, -1.0, 1.0).double()
        theta = torch.zeros(b, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        j = self.jitter
        bright = self._uniform(b, 1 - j, 1 + j)
        contrast = self._uniform(b, 1 - j, 1 + j)
        sat = self._uniform(b, 1 - j, 1 + j)
        dev = x.device

        def rep(t):
            return t.to(dev, torch.float32).repeat_interleave(per, dim=0)

        grid = F.affine_grid(rep(theta), [x.shape[0], 3, out_size, out_size],
                             align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                          align_corners=False)
        x = x * rep(bright).view(-1, 1, 1, 1)
        if self.motion_picture:
            mirrored = flipped.to(dev).repeat_interleave(per, dim=0)
            x = torch.where(mirrored.view(-1, 1, 1, 1), mirror_hue(x), x)
            return x.clamp_(0.0, 1.0)
        grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
        m = grey.mean(dim=(2, 3), keepdim=True)
        c = rep(contrast).view(-1, 1, 1, 1)
        x = (x - m) * c + m
        grey = (grey - m) * c + m                            # grey of the adjusted image
        sv = rep(sat).view(-1, 1, 1, 1)
        x = (x - grey) * sv + grey
        return x.clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) RGB in [0, 1] -> hue in turns [0, 1), saturation, value."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v, _ = x.max(dim=1)
    delta = v - x.min(dim=1).values
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(v == r, ((g - b) / safe) % 6,
                    torch.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4)) / 6
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)),
                    torch.zeros_like(v))
    return h, s, v


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv`: (N, H, W) planes -> (N, 3, H, W)."""
    # Standard formula: each channel is v - v s max(0, min(k, 4 - k, 1)),
    # k = (n + 6 h) mod 6 with n = 5, 3, 1 for red, green, blue.
    planes = []
    for n in (5.0, 3.0, 1.0):
        k = (n + 6 * h) % 6
        planes.append(v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1))
    return torch.stack(planes, dim=1)


def mirror_hue(x: torch.Tensor) -> torch.Tensor:
    """The flow picture of horizontally mirrored motion: hue ``h`` -> ``0.5 - h`` turns.

    A flow picture's hue is the angle of the motion ``(dx, dy)``; mirroring
    the picture left-right turns the motion into ``(-dx, dy)``, whose angle
    is 180 degrees minus the old one.
    """
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb((0.5 - h) % 1.0, s, v)
