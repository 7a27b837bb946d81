"""What a conversion needs from the machine, checked before any work starts.

:func:`check_resources` refuses an output side whose images cannot fit in
this machine's memory (with the arithmetic) and a temporary folder that is
missing or cannot be written, so that neither is found only when every
item fails, or when the first long video spills its frames to disk.
"""

from __future__ import annotations

import os
import tempfile

import psutil

from ahdi.kernels.params import AhdiParams

from .errors import SettingError

__all__ = ["check_resources", "check_memory", "check_tmp_dir", "machine_memory"]

# The least one item holds at once: one float64 S x S x 3 image (a pooling
# accumulator; a video has at least one window) and one uint8 frame.
_BYTES_PER_VALUE = 8 + 1
_CGROUP_LIMIT = "/sys/fs/cgroup/memory.max"


def check_resources(params: AhdiParams, tmp_dir: str | os.PathLike | None,
                    scheduler: str | None = None) -> None:
    """Both checks below; the memory one only where the items run on this machine.

    Raises
    ------
    SettingError
        Naming the size and the arithmetic, or the temporary folder.
    """
    if not (scheduler or "").startswith("tcp://"):
        check_memory(params)
    if tmp_dir is not None:
        check_tmp_dir(tmp_dir)


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    total = psutil.virtual_memory().total
    try:
        with open(_CGROUP_LIMIT) as fh:
            limit = fh.read().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_memory(params: AhdiParams, available: int | None = None) -> None:
    """Refuse a ``size`` whose least per-item memory exceeds ``available`` bytes.

    Parameters
    ----------
    params : AhdiParams
        ``size`` is used.
    available : int, optional
        Bytes to compare with (default: :func:`machine_memory`).

    Examples
    --------
    >>> check_memory(AhdiParams(size=100000), available=128 * 10**9)
    Traceback (most recent call last):
    ...
    ahdi.pipeline.errors.SettingError: size 100000: one video needs at least 100000 x 100000 \
x 3 x (8 + 1) bytes = 270.0 GB (one float64 image and one uint8 frame of that side), more \
than the 128.0 GB of memory here; choose a smaller size
    """
    available = machine_memory() if available is None else available
    side = params.size
    need = side * side * 3 * _BYTES_PER_VALUE
    if need > available:
        raise SettingError(f"size {side}: one video needs at least {side} x {side} x 3 x "
                           f"(8 + 1) bytes = {_gb(need)} (one float64 image and one uint8 "
                           f"frame of that side), more than the {_gb(available)} of memory "
                           "here; choose a smaller size")


def check_tmp_dir(path: str | os.PathLike) -> None:
    """Refuse a temporary folder that does not exist, is not a folder, or cannot be written."""
    name = str(path)
    if not os.path.exists(name):
        raise SettingError(f"{name}: temporary folder (--tmp-dir) does not exist")
    if not os.path.isdir(name):
        raise SettingError(f"{name}: temporary folder (--tmp-dir) is not a folder")
    try:
        with tempfile.TemporaryFile(dir=name):
            pass
    except OSError as exc:
        raise SettingError(f"{name}: cannot write in the temporary folder (--tmp-dir) "
                           f"({exc.strerror or exc})") from None
