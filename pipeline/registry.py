"""The dataset registry: datasets.yaml, where it is found, and each dataset's root.

:func:`load_datasets_yaml` reads the registry (name -> entry) and checks
every entry against the adapters of :mod:`ahdi.pipeline.adapters`;
:func:`dataset_root` says which root a dataset is read from: ``--root``,
then ``$AHDI_<NAME>_ROOT`` (:func:`root_env_var`), then the entry's
``root``. See docs/datasets.md.
"""

from __future__ import annotations

import os
from pathlib import Path


from . import remote
from .adapters import ADAPTER_OPTIONS, ADAPTERS
from .errors import DatasetError
from .files import read_yaml

__all__ = ["load_datasets_yaml", "DEFAULT_DATASETS", "root_env_var", "dataset_root"]

#: What load_datasets_yaml returns when no datasets.yaml exists.
DEFAULT_DATASETS = {"samples": {"adapter": "samples"}}

# The registry shipped with the package. In a checkout it is a link to the
# top-level datasets.yaml (the one file people edit); a wheel holds a copy.
# Resolved, so relative roots in a checkout are relative to the top level.
_SHIPPED_YAML = (Path(__file__).parent / "datasets.yaml").resolve()
_COMMON_KEYS = {"adapter", "root", "description"}


def _yaml_candidates(path: str | os.PathLike | None) -> list[Path]:
    if path is not None:
        return [Path(path)]
    out = []
    env = os.environ.get("AHDI_DATASETS")
    if env:
        out.append(Path(env))
    out += [Path("datasets.yaml"), _SHIPPED_YAML]
    return out


def _find_yaml(path: str | os.PathLike | None) -> Path | None:
    """The first registry file of the search order; None when there is none."""
    explicit = path is not None or bool(os.environ.get("AHDI_DATASETS"))
    for i, cand in enumerate(_yaml_candidates(path)):
        if cand.is_file():
            return cand
        if i == 0 and explicit:
            if cand.exists():  # a folder or a FIFO: read_text says which
                return cand
            how = "given" if path is not None else "named by $AHDI_DATASETS"
            raise DatasetError(f"{cand}: datasets file {how} does not exist")
    return None


def _read_yaml(file: Path) -> dict:
    """The ``datasets:`` mapping of a registry file."""
    doc = read_yaml(file, "datasets file", DatasetError)
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise DatasetError(f"{file}: expected a mapping with a 'datasets:' mapping of "
                           "name -> entry")
    return doc["datasets"]


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
        An explicit path or $AHDI_DATASETS that does not exist, a file that
        is not UTF-8 or malformed YAML (naming file and line), a wrong
        structure or an unknown adapter.
    """
    file = _find_yaml(path)
    if file is None:
        return {k: dict(v) for k, v in DEFAULT_DATASETS.items()}
    base = file.resolve().parent
    return {str(name): _entry(entry, f"{file}: dataset {name!r}", base)
            for name, entry in _read_yaml(file).items()}


def _entry(entry, where: str, base: Path) -> dict:
    """A checked copy of one entry, its roots made absolute against ``base``."""
    _check_keys(entry, where)
    entry = dict(entry)
    if entry.get("root") is not None:
        entry["root"] = str(base / os.path.expandvars(os.path.expanduser(str(entry["root"]))))
    if "parts" in entry:
        entry["parts"] = _parts(entry["parts"], where, base, entry.get("root") is None)
    return entry


def _check_keys(entry, where: str) -> None:
    """An entry is a mapping naming a known adapter, with keys that adapter reads."""
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: entry must be a mapping with an 'adapter' key")
    adapter = entry.get("adapter")
    if adapter not in ADAPTERS:
        raise DatasetError(f"{where}: unknown adapter {adapter!r}; known: "
                           f"{', '.join(sorted(ADAPTERS))}")
    allowed = _COMMON_KEYS | ADAPTER_OPTIONS[adapter]
    unknown = set(entry) - allowed
    if unknown:
        raise DatasetError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))} "
                           f"for adapter {adapter!r}; allowed: "
                           f"{', '.join(sorted(allowed))}")


def _parts(parts, where: str, base: Path, relative_to_file: bool) -> list[dict]:
    """BioVid ``parts`` with expanded roots; relative ones taken against ``base``
    when ``relative_to_file`` (the entry has no root of its own)."""
    if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
        raise DatasetError(f"{where}: 'parts' must be a list of mappings "
                           "{name, root, classes, value}")
    new = []
    for p in parts:
        p = dict(p)
        if p.get("root") is None:
            raise DatasetError(f"{where}: every part needs a 'root'")
        r = os.path.expandvars(os.path.expanduser(str(p["root"])))
        if not os.path.isabs(r) and relative_to_file:
            r = str(base / r)
        p["root"] = r
        new.append(p)
    return new


# ----------------------------------------------------------------------
# roots
# ----------------------------------------------------------------------
def root_env_var(dataset: str) -> str:
    """``AHDI_<NAME>_ROOT``: the environment variable that overrides a dataset's root."""
    return "AHDI_" + "".join(c if c.isalnum() else "_" for c in dataset.upper()) + "_ROOT"


def dataset_root(dataset: str, entry: dict, root: str | os.PathLike | None = None
                 ) -> tuple[str | None, str | None]:
    """(where, root) of a dataset, first found of ``root``, its variable, its entry.

    ``where`` says where the root came from, as messages name it
    (``--root``, ``$AHDI_<NAME>_ROOT`` or ``datasets.yaml``); (None, None)
    when the dataset has no root.
    """
    env = root_env_var(dataset)
    if root is not None:
        return "--root", remote.absolute(str(root))
    if os.environ.get(env):
        return f"${env}", remote.absolute(os.environ[env])
    if entry.get("root") is not None:
        return "datasets.yaml", str(entry["root"])
    return None, None
