"""Calibration kernels (Numba): streaming tensor statistics, histograms, percentile and entropy (KL) thresholds.

A calibration run sees each tensor once per batch. For every tensor it keeps the min, the max and a histogram of
``nbins`` equal bins over ``[-bound, bound]``, where ``bound`` is the largest magnitude seen so far. When a batch
brings a larger magnitude, the old counts are moved into the wider bins first (each old bin lands, whole, in the new
bin holding its centre), so one pass over the data suffices and no batch is kept in memory.

The histogram is symmetric around zero with an even number of bins, so folding it gives the histogram of ``|x|``
that the entropy method works on.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["fold_abs", "histogram_add", "kl_threshold", "percentile_range", "rebin", "tensor_stats"]


@njit(cache=True, nogil=True)
def tensor_stats(x: np.ndarray) -> tuple[float, float, float, int]:
    """Min, max, largest magnitude and the number of finite elements of a flat float array (NaN/inf skipped)."""
    lo = math.inf
    hi = -math.inf
    n = 0
    for i in range(x.size):
        v = x[i]
        if not math.isfinite(v):
            continue
        n += 1
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    if n == 0:
        return 0.0, 0.0, 0.0, 0
    return float(lo), float(hi), float(max(abs(lo), abs(hi))), n


@njit(cache=True, nogil=True)
def histogram_add(hist: np.ndarray, x: np.ndarray, bound: float) -> None:
    """Add the finite elements of flat ``x`` to ``hist`` (bins of equal width over ``[-bound, bound]``)."""
    n = hist.size
    if bound <= 0.0:
        # everything is zero: it belongs to the bin just right of the centre
        for i in range(x.size):
            if math.isfinite(x[i]):
                hist[n // 2] += 1
        return
    scale = n / (2.0 * bound)
    for i in range(x.size):
        v = x[i]
        if not math.isfinite(v):
            continue
        k = int((v + bound) * scale)
        if k < 0:
            k = 0
        elif k >= n:
            k = n - 1
        hist[k] += 1


@njit(cache=True, nogil=True)
def rebin(hist: np.ndarray, old_bound: float, new_bound: float) -> np.ndarray:
    """The counts of ``hist`` over ``[-old_bound, old_bound]`` moved into the same number of bins over the wider
    ``[-new_bound, new_bound]``; each old bin goes whole into the new bin that holds its centre."""
    n = hist.size
    out = np.zeros(n, dtype=hist.dtype)
    if old_bound <= 0.0 or new_bound <= 0.0:
        out[n // 2] = hist.sum()
        return out
    width = 2.0 * old_bound / n
    scale = n / (2.0 * new_bound)
    for i in range(n):
        c = hist[i]
        if c == 0:
            continue
        centre = -old_bound + (i + 0.5) * width
        k = int((centre + new_bound) * scale)
        if k < 0:
            k = 0
        elif k >= n:
            k = n - 1
        out[k] += c
    return out


@njit(cache=True, nogil=True)
def fold_abs(hist: np.ndarray) -> np.ndarray:
    """The histogram of ``|x|`` over ``[0, bound]`` (``n/2`` bins) from a symmetric one over ``[-bound, bound]``."""
    half = hist.size // 2
    out = np.zeros(half, dtype=np.float64)
    for j in range(half):
        out[j] = hist[half + j] + hist[half - 1 - j]
    return out


@njit(cache=True, nogil=True)
def percentile_range(hist: np.ndarray, bound: float, percentile: float) -> tuple[float, float]:
    """The range holding the central ``percentile`` % of the mass: ``(100 - percentile) / 2`` % is cut from each tail.

    Returned as bin edges over ``[-bound, bound]``; ``(0, 0)`` for an empty histogram.
    """
    n = hist.size
    total = 0.0
    for i in range(n):
        total += hist[i]
    if total == 0.0 or bound <= 0.0:
        return 0.0, 0.0
    cut = total * (100.0 - percentile) / 200.0
    width = 2.0 * bound / n
    acc = 0.0
    lo_bin = 0
    for i in range(n):
        acc += hist[i]
        if acc > cut:
            lo_bin = i
            break
    acc = 0.0
    hi_bin = n - 1
    for i in range(n - 1, -1, -1):
        acc += hist[i]
        if acc > cut:
            hi_bin = i
            break
    return -bound + lo_bin * width, -bound + (hi_bin + 1) * width


_EMPTY_Q = 1e-7
"""Probability given to a bin Q leaves empty where P is not (smoothing: a finite, heavy penalty instead of inf)."""


@njit(cache=True, nogil=True)
def _kl(p: np.ndarray, q: np.ndarray) -> float:
    sp = p.sum()
    sq = q.sum()
    if sp == 0.0 or sq == 0.0:
        return math.inf
    d = 0.0
    for i in range(p.size):
        if p[i] > 0.0:
            pi = p[i] / sp
            qi = q[i] / sq if q[i] > 0.0 else _EMPTY_Q
            d += pi * math.log(pi / qi)
    return d


@njit(cache=True, nogil=True)
def kl_threshold(abs_hist: np.ndarray, bound: float, levels: int = 128) -> float:
    """The clipping threshold T on ``|x|`` that minimises KL(P || Q), TensorRT's entropy calibration.

    For each candidate T (a bin edge from ``levels`` bins up), P is the histogram cut at T with the clipped tail
    added to its last bin, and Q is P squeezed into ``levels`` equal groups of bins and spread back uniformly over
    each group's non-empty bins. Returns ``bound`` when the histogram is empty or too coarse to choose.
    """
    n = abs_hist.size
    if n <= levels or abs_hist.sum() == 0.0:
        return bound
    width = bound / n
    best = math.inf
    best_i = n
    tail = abs_hist[levels:].sum()  # what lies beyond the candidate threshold; bins leave it as they enter P
    for i in range(levels, n + 1):
        p = abs_hist[:i].copy()
        p[i - 1] += tail
        q = np.zeros(i, dtype=np.float64)
        per = i / levels
        for g in range(levels):
            start = int(g * per)
            stop = int((g + 1) * per) if g < levels - 1 else i
            if stop <= start:
                continue
            s = 0.0
            nz = 0
            for k in range(start, stop):
                s += abs_hist[k]
                if p[k] > 0.0:
                    nz += 1
            if nz == 0:
                continue
            share = s / nz
            for k in range(start, stop):
                if p[k] > 0.0:
                    q[k] = share
        d = _kl(p, q)
        if d < best:
            best = d
            best_i = i
        if i < n:
            tail -= abs_hist[i]
    return best_i * width
