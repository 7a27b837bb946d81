"""A frame buffer whose memory is bounded whatever the video's length."""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np

BLOCK_BYTES = 32 * 2**20  # frames are held, spilled and read back in blocks of this size


class FrameBuffer:
    """Append-only store of equally shaped uint8 frames with bounded memory.

    Frames are kept in RAM in fixed-size blocks (never copied to grow) while
    they fit in ``memory_budget`` bytes; past that, every frame goes to a
    temporary file. :meth:`chunks` hands them back in time order, block by
    block, reading the file sequentially into one reused block, so neither
    filling nor reading ever holds more than the budget plus one block.
    Use it as a context manager: the file is removed on exit, also on error.

    Parameters
    ----------
    frame_shape : tuple of int
        Shape of one frame, e.g. (S, S, 3).
    memory_budget : int
        Bytes of frames kept in RAM before spilling.
    tmp_dir : str or None
        Folder for the spill file (default: the system's temporary folder).
    block_bytes : int
        Size of the blocks frames are held and read back in.
    """

    def __init__(self, frame_shape: tuple[int, ...], memory_budget: int = 512 * 2**20,
                 tmp_dir: str | None = None, block_bytes: int = BLOCK_BYTES) -> None:
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_bytes = int(np.prod(self.frame_shape))
        self.memory_budget = int(memory_budget)
        self.tmp_dir = tmp_dir
        self.block_frames = max(1, min(int(block_bytes), self.memory_budget) // self.frame_bytes)
        self.n_frames = 0
        self._blocks: list[np.ndarray] = []
        self._file = None
        self.spill_path: str | None = None

    @property
    def spilled(self) -> bool:
        """Whether the frames went to a temporary file."""
        return self.spill_path is not None

    @property
    def memory_bytes(self) -> int:
        """Bytes of frame storage held in RAM now."""
        return sum(block.nbytes for block in self._blocks)

    def append(self, frame: np.ndarray) -> None:
        """Add one frame (copied)."""
        if frame.shape != self.frame_shape or frame.dtype != np.uint8:
            raise ValueError(f"frame {self.n_frames + 1} is {frame.dtype} {frame.shape}, "
                             f"expected uint8 {self.frame_shape}")
        slot = self.n_frames % self.block_frames
        if self._file is None and slot == 0:
            if (len(self._blocks) + 1) * self.block_frames * self.frame_bytes <= self.memory_budget:
                self._blocks.append(np.empty((self.block_frames,) + self.frame_shape, np.uint8))
            else:
                self._spill()
        if self._file is not None:
            self._file.write(np.ascontiguousarray(frame).data)
        else:
            self._blocks[-1][slot] = frame
        self.n_frames += 1

    def _spill(self) -> None:
        fd, self.spill_path = tempfile.mkstemp(prefix="ahdi-frames-", suffix=".u8",
                                               dir=self.tmp_dir)
        self._file = os.fdopen(fd, "wb")
        for block in self._blocks:  # all full: spilling starts at a block boundary
            self._file.write(block.data)
        self._blocks = []

    def chunks(self) -> Iterator[np.ndarray]:
        """The frames in time order, as (k, *frame_shape) arrays of at most one block.

        A chunk read back from the spill file is overwritten by the next one:
        use each before asking for the next.
        """
        if self._file is None:
            for i, block in enumerate(self._blocks):
                yield block[: min(self.block_frames, self.n_frames - i * self.block_frames)]
            return
        self._file.flush()
        reused = np.empty((self.block_frames,) + self.frame_shape, np.uint8)
        with open(self.spill_path, "rb", buffering=0) as fh:
            left = self.n_frames
            while left > 0:
                k = min(self.block_frames, left)
                view = reused[:k]
                if fh.readinto(memoryview(view.reshape(-1))) != view.nbytes:
                    raise OSError(f"{self.spill_path}: spill file ended early")
                yield view
                left -= k

    def frames(self) -> np.ndarray:
        """All frames as one (T, *frame_shape) array, in RAM (for inspection and tests)."""
        if self.n_frames == 0:
            return np.empty((0,) + self.frame_shape, np.uint8)
        return np.concatenate([chunk.copy() for chunk in self.chunks()])

    def close(self) -> None:
        """Release memory and remove the spill file."""
        self._blocks = []
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
