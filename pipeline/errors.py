"""The errors ahdi raises for problems a user can fix, one class per kind.

Every message names the file (or store, dataset, address) and the problem,
so the command line prints it as one ``Error:`` line without a traceback:
it catches :class:`AhdiError` and nothing broader. Callers that need to tell
kinds apart catch the subclass, never match a class name or message text.
"""

from __future__ import annotations

__all__ = [
    "AhdiError", "VideoError", "DatasetError", "StoreError", "DamagedChunkError", "LockLostError",
    "ClusterError", "ClusterPathError", "GridError", "SettingError",
]


class AhdiError(Exception):
    """A problem with an input, a store or a setting; the message says which and why."""


class VideoError(AhdiError):
    """A video cannot be read; the message names the file and the problem."""


class DatasetError(AhdiError, ValueError):
    """A dataset cannot be listed (bad name, root, datasets.yaml or labels file)."""


class StoreError(AhdiError):
    """A store cannot be created, opened, written or locked as asked."""


class DamagedChunkError(StoreError):
    """A chunk of a store cannot be read back, or one a done item must have is missing.

    ``store``, ``array``, ``index`` (None for a column of the whole store),
    ``video_id``, ``kind`` ('damaged' or 'missing') and ``reason`` say which
    and why; the message says how to repair it. Built from the message
    alone (as pickling and torch's worker processes rebuild exceptions),
    the other fields are empty.
    """

    def __init__(self, message: str, *, store: str = "", array: str = "",
                 index: int | None = None, video_id: str = "", kind: str = "damaged",
                 reason: str = "") -> None:
        super().__init__(message)
        self.store, self.array, self.index = store, array, index
        self.video_id, self.kind, self.reason = video_id, kind, reason


class LockLostError(StoreError):
    """This process lost the writer lock of a store while it held it (another process
    took it over, or it was removed) and stopped writing; the message names the
    store and the new holder. Commands exit with ``exit_code``, not 1.
    """

    exit_code = 4


class ClusterError(AhdiError, RuntimeError):
    """A distributed cluster cannot run the conversion (no workers, paths unseen)."""


class ClusterPathError(ClusterError):
    """A worker of a distributed cluster cannot see the store or the source."""


class SettingError(AhdiError, ValueError):
    """A setting (an option, a config value, a protocol) outside what is allowed."""


class GridError(AhdiError, ValueError):
    """An ablation grid that cannot be run; the message names the file and the problem."""
