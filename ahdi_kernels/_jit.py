"""The one place Numba options live.

``cache=True`` writes compiled machine code next to the sources, so Dask
worker processes load it instead of recompiling every kernel on start.
``nogil=True`` lets the threaded scheduler run kernels of different videos
side by side. No ``fastmath``: reassociating float sums would break the
bit-for-bit reproducibility the store promises. No ``parallel=True`` either:
parallelism comes from converting several videos at once, and Numba's
default threading layer is not safe to enter from several Python threads.
"""

from __future__ import annotations

import functools

import numba

JIT_OPTIONS = {"nogil": True, "cache": True, "fastmath": False}

jit = functools.partial(numba.njit, **JIT_OPTIONS)
