"""Approximate rank pooling coefficients (Bilen et al., CVPR 2016)."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=1024)
def _arp_coefficients_cached(length: int) -> np.ndarray:
    tau = np.arange(1, length + 1, dtype=np.float64)
    # H[k] = sum_{i=1..k} 1/i with H[0] = 0, summed in a fixed order so the
    # coefficients are bit-identical everywhere.
    harmonic = np.concatenate(([0.0], np.cumsum(1.0 / tau)))
    alpha = 2.0 * (length - tau + 1.0) - (length + 1.0) * (harmonic[length] - harmonic[:-1])
    alpha.setflags(write=False)
    return alpha


def arp_coefficients(length: int) -> np.ndarray:
    """Coefficients alpha_tau(M) of approximate rank pooling.

    Parameters
    ----------
    length : int
        Number M >= 1 of pooled elements.

    Returns
    -------
    np.ndarray
        Read-only float64 array of shape (M,) with
        ``alpha_tau = 2(M - tau + 1) - (M + 1)(H_M - H_{tau-1})``. They sum
        to zero, so pooling a constant sequence gives exactly zero; for
        M = 1 the single coefficient is 0 (one element has no dynamics).

    Examples
    --------
    >>> arp_coefficients(2)
    array([-0.5,  0.5])
    """
    length = int(length)
    if length < 1:
        raise ValueError(f"ARP needs at least 1 element, got length {length}")
    return _arp_coefficients_cached(length)
