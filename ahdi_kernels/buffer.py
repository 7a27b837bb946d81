"""A frame buffer that stays in RAM up to a budget, then spills to disk."""

from __future__ import annotations

import os
import tempfile

import numpy as np


class FrameBuffer:
    """Append-only store of equally shaped uint8 frames with bounded memory.

    Frames are kept in a growing in-memory array until it would pass
    ``memory_budget`` bytes; from then on they go to a temporary file that
    :meth:`frames` memory-maps, so memory stays bounded whatever the
    video's length. Use it as a context manager: the file is removed on
    exit, also on error.

    Parameters
    ----------
    frame_shape : tuple of int
        Shape of one frame, e.g. (S, S, 3).
    memory_budget : int
        Bytes of frames kept in RAM before spilling.
    tmp_dir : str or None
        Folder for the spill file (default: the system's temporary folder).
    """

    def __init__(self, frame_shape: tuple[int, ...], memory_budget: int = 512 * 2**20,
                 tmp_dir: str | None = None) -> None:
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.memory_budget = int(memory_budget)
        self.tmp_dir = tmp_dir
        self.n_frames = 0
        self._memory = np.empty((0,) + self.frame_shape, np.uint8)
        self._file = None
        self.spill_path: str | None = None

    @property
    def spilled(self) -> bool:
        """Whether the frames went to a temporary file."""
        return self.spill_path is not None

    def append(self, frame: np.ndarray) -> None:
        """Add one frame (copied)."""
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {self.n_frames + 1} is {frame.dtype} {frame.shape}, "
                             f"expected uint8 {self.frame_shape}")
        if self._file is not None:
            self._file.write(np.ascontiguousarray(frame).data)
        else:
            if self.n_frames == len(self._memory):
                self._grow()
            if self._file is not None:
                self._file.write(np.ascontiguousarray(frame).data)
            else:
                self._memory[self.n_frames] = frame
        self.n_frames += 1

    def _grow(self) -> None:
        capacity = max(16, 2 * len(self._memory))
        if capacity * self.frame_bytes > self.memory_budget:
            capacity = self.memory_budget // self.frame_bytes
        if capacity <= self.n_frames:
            self._spill()
            return
        grown = np.empty((capacity,) + self.frame_shape, np.uint8)
        grown[: self.n_frames] = self._memory[: self.n_frames]
        self._memory = grown

    def _spill(self) -> None:
        fd, self.spill_path = tempfile.mkstemp(prefix="ahdi-frames-", suffix=".u8",
                                               dir=self.tmp_dir)
        self._file = os.fdopen(fd, "wb")
        self._file.write(self._memory[: self.n_frames].data)
        self._memory = np.empty((0,) + self.frame_shape, np.uint8)

    def frames(self) -> np.ndarray:
        """All frames as one (T, *frame_shape) uint8 array (a memmap if spilled)."""
        if self._file is None:
            return self._memory[: self.n_frames]
        self._file.flush()
        if self.n_frames == 0:
            return np.empty((0,) + self.frame_shape, np.uint8)
        return np.memmap(self.spill_path, dtype=np.uint8, mode="r",
                         shape=(self.n_frames,) + self.frame_shape)

    def close(self) -> None:
        """Release memory and remove the spill file."""
        self._memory = np.empty((0,) + self.frame_shape, np.uint8)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.spill_path is not None:
            try:
                os.remove(self.spill_path)
            except FileNotFoundError:
                pass
            self.spill_path = None

    def __enter__(self) -> "FrameBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
