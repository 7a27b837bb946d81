"""The errors ahdi raises for problems a user can fix, one class per kind.

Every message names the file (or store, dataset, address) and the problem,
so the command line prints it as one ``Error:`` line without a traceback:
it catches :class:`AhdiError` and nothing broader. Callers that need to tell
kinds apart catch the subclass, never match a class name or message text.
"""

from __future__ import annotations

__all__ = [
    "AhdiError", "VideoError", "DatasetError", "StoreError", "ClusterError",
    "ClusterPathError", "GridError", "SettingError",
]


class AhdiError(Exception):
    """A problem with an input, a store or a setting; the message says which and why."""


class VideoError(AhdiError):
    """A video cannot be read; the message names the file and the problem."""


class DatasetError(AhdiError, ValueError):
    """A dataset cannot be listed (bad name, root, datasets.yaml or labels file)."""


class StoreError(AhdiError):
    """A store cannot be created, opened, written or locked as asked."""


class ClusterError(AhdiError, RuntimeError):
    """A distributed cluster cannot run the conversion (no workers, paths unseen)."""


class ClusterPathError(ClusterError):
    """A worker of a distributed cluster cannot see the store or the source."""


class SettingError(AhdiError, ValueError):
    """A setting (an option, a config value, a protocol) outside what is allowed."""


class GridError(AhdiError, ValueError):
    """An ablation grid that cannot be run; the message names the file and the problem."""
