"""From a dataset name or a path to a sorted list of :class:`Item`.

:func:`resolve_source` accepts a dataset name from datasets.yaml
(:mod:`ahdi.pipeline.registry`), a folder, one video file, or a ``.zip`` /
``.tar`` / ``.tar.gz`` archive, picks the layout (``unbc``, ``biovid`` or
``folder``) from the files it finds and lists the items with that adapter
(:mod:`ahdi.pipeline.adapters`). See docs/datasets.md.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from . import remote
from .adapters import ADAPTERS, adapter_samples, biovid_parts
from .archives import archive_stem, is_archive
from .errors import DatasetError
from .files import VIDEO_EXTS, natural_key, not_regular
from .items import Item
from .registry import dataset_root, load_datasets_yaml, root_env_var
from .sources import VideoSource
from .tree import FileTree, warn_left_out

Report = Callable[[str], None]

__all__ = ["resolve_source"]


def resolve_source(source: str | os.PathLike, *, labels_csv: str | os.PathLike | None = None,
                   root: str | os.PathLike | None = None,
                   datasets_yaml: str | os.PathLike | None = None,
                   on_skip: Report | None = None) -> tuple[str, list[Item]]:
    """List the videos of a dataset name, folder, video file or archive.

    Parameters
    ----------
    source : str
        A dataset name from datasets.yaml (a bare name: write ``./name`` for
        a folder of that name), a folder, one video file, or a ``.zip`` /
        ``.tar`` / ``.tar.gz`` / ``.tgz`` archive; a path or a URL
        (``s3://bucket/videos/``, :mod:`ahdi.pipeline.remote`).
    labels_csv : path, optional
        Labels for a plain folder of videos (docs/datasets.md).
    root : path, optional
        Overrides the dataset's root (before ``$AHDI_<NAME>_ROOT`` and the
        ``root`` in datasets.yaml); only for dataset names.
    datasets_yaml : path, optional
        Registry file (see :func:`ahdi.pipeline.registry.load_datasets_yaml`).
    on_skip : callable, optional
        Called with one message per file or folder the listing leaves out
        (a FIFO named like a video, thumbnails beside videos, a second link
        to one folder); default: a Python warning each.

    Returns
    -------
    (name, items)
        The dataset name (or the source's basename without extension) and
        its items sorted by ``video_id``.
    """
    src = remote.as_local(str(source))   # a file:// URL is its path
    report = on_skip or warn_left_out
    labels_csv = None if labels_csv is None else str(labels_csv)
    is_name = os.sep not in src and "/" not in src and \
        os.path.splitext(src)[1].lower() not in VIDEO_EXTS + (".zip", ".tar", ".gz", ".tgz")
    registry = None
    if is_name:
        registry = load_datasets_yaml(datasets_yaml)
        if src in registry:
            return _resolve_dataset(src, registry[src], root=root, labels_csv=labels_csv,
                                    report=report)
    if remote.exists(src, DatasetError):
        if root is not None:
            raise DatasetError(f"--root applies to dataset names, not to the path {src}")
        return _resolve_path(src, labels_csv, report)
    if registry is None:
        registry = load_datasets_yaml(datasets_yaml)
    raise DatasetError(f"{src!r} is neither an existing file or folder nor a dataset name; "
                       f"known datasets: {', '.join(sorted(registry))}")


def _resolve_path(src: str, labels_csv: str | None, report: Report) -> tuple[str, list[Item]]:
    """Items of an existing folder, archive or single video file."""
    path = remote.absolute(src)
    if remote.kind(path, DatasetError) == "folder":
        name = remote.basename(path) or path
        return _finish(name, _from_tree(path, adapter=None, entry={}, labels_csv=labels_csv,
                                        dataset=name, report=report))
    kind = None if remote.is_remote(path) else not_regular(os.stat(path).st_mode)
    if kind:  # never opened: reading a FIFO waits for a writer forever
        raise DatasetError(f"{src}: is {kind}, not a video file, folder or archive")
    if is_archive(path):
        base = archive_stem(remote.basename(path))
        return _finish(base, _from_tree(path, adapter=None, entry={}, labels_csv=labels_csv,
                                        dataset=base, report=report))
    stem = Path(path).stem
    if labels_csv is not None:
        raise DatasetError(f"a labels CSV applies to folders, not to the single video {src}")
    return _finish(stem, [Item(stem, VideoSource("file", path), stem, {})])


def _resolve_dataset(name: str, entry: dict, *, root, labels_csv, report: Report
                     ) -> tuple[str, list[Item]]:
    """Items of a registry entry, read from its root (see :func:`dataset_root`)."""
    adapter = entry["adapter"]
    env = root_env_var(name)
    where, base = dataset_root(name, entry, root)
    if adapter == "samples":
        return _finish(name, adapter_samples(None, entry, dataset=name))
    if adapter == "biovid" and entry.get("parts"):
        if base is not None and not remote.exists(base, DatasetError):
            raise DatasetError(f"{base}: root folder of dataset {name!r} (from {where}) does "
                               f"not exist; set {env} or pass --root")
        return _finish(name, biovid_parts(entry, base, name, env, report))
    if base is None:
        raise DatasetError(f"dataset {name!r} has no root; set {env} or pass --root")
    if not remote.exists(base, DatasetError):
        raise DatasetError(f"{base}: root folder of dataset {name!r} (from {where}) does not "
                           f"exist; set {env} or pass --root")
    return _finish(name, _from_tree(base, adapter=adapter, entry=entry, labels_csv=labels_csv,
                                    dataset=name, report=report))


def _finish(name: str, items: list[Item]) -> tuple[str, list[Item]]:
    """The items sorted by ``video_id``, which must be unique."""
    items = sorted(items, key=lambda it: natural_key(it.video_id))
    seen: dict[str, Item] = {}
    for it in items:
        if it.video_id in seen:
            raise DatasetError(f"dataset {name!r}: video_id {it.video_id!r} appears twice "
                               f"({seen[it.video_id].source.describe()} and "
                               f"{it.source.describe()})")
        seen[it.video_id] = it
    return name, items


def _detect_layout(tree: FileTree) -> str:
    """The tree's layout, stripping a wrapper folder where that reveals one.

    A plain folder whose wrapper hides no layout is listed as it is, so its
    video ids keep the wrapper's name; an archive always loses its wrapper.
    """
    plain = tree.layout()
    if plain != "folder":
        return plain
    tree.strip_wrapper()
    stripped = tree.layout()
    if stripped == "folder" and tree.archive is None:
        tree.unstrip()  # a plain folder keeps its ids
    return stripped


def _from_tree(location: str, *, adapter: str | None, entry: dict, labels_csv, dataset: str,
               report: Report) -> list[Item]:
    """Items of a folder or archive, with ``adapter`` or the one its layout names."""
    tree = FileTree(location, strip_wrapper=False, report=report)
    try:
        if adapter is None or adapter in ("unbc", "biovid"):
            found = _detect_layout(tree)
            if adapter is None:
                adapter = found
            elif found != adapter:
                raise DatasetError(f"{location}: dataset {dataset!r} expects the {adapter} "
                                   f"layout, found {found}")
        elif tree.archive is not None:
            tree.strip_wrapper()
        if labels_csv is not None and adapter != "folder":
            raise DatasetError(f"a labels CSV applies to plain folders of videos; {location} "
                               f"has the {adapter} layout")
        return ADAPTERS[adapter](tree, entry, labels_csv=labels_csv, dataset=dataset)
    finally:
        tree.close()
