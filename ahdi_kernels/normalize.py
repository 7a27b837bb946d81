"""Float image -> RGB uint8 (spec step 7)."""

from __future__ import annotations

import numpy as np

from ._jit import jit

FLAT = 1e-6  # a range below this (frames in [0, 1] units) is rounding noise


@jit
def _min_max(x):
    lo = x[0]
    hi = x[0]
    for v in x:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return lo, hi


@jit
def _map_to_uint8(x, lo, hi, out):
    scale = hi - lo
    for i in range(x.shape[0]):
        v = x[i]
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        out[i] = np.uint8(np.floor(255.0 * (v - lo) / scale + 0.5))


def to_uint8(image: np.ndarray, normalize: str = "minmax") -> np.ndarray:
    """Stretch a float image to uint8 over all its pixels and channels.

    Parameters
    ----------
    image : np.ndarray
        Float image of any shape.
    normalize : {'minmax', 'percentile'}
        ``minmax``: the global minimum maps to 0 and the maximum to 255.
        ``percentile``: the 1st and 99th percentiles do, values outside are
        clipped (robust to a few extreme pixels).

    Returns
    -------
    np.ndarray
        uint8 image of the same shape; all 0 when the range is below 1e-6
        (a flat image is never stretched noise).
    """
    x = np.ascontiguousarray(image, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("cannot normalise an empty image")
    if normalize == "minmax":
        lo, hi = _min_max(x)
    elif normalize == "percentile":
        lo, hi = (float(v) for v in np.percentile(x, [1.0, 99.0]))
    else:
        raise ValueError(f"normalize must be 'minmax' or 'percentile', got {normalize!r}")
    out = np.zeros(x.shape, np.uint8)
    if hi - lo >= FLAT:
        _map_to_uint8(x, float(lo), float(hi), out)
    return out.reshape(np.shape(image))
