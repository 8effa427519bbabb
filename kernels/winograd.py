"""Winograd minimal filtering F(m x m, r x r): transform matrices by the Cook-Toom construction, the offline weight
transform, and a reference Winograd convolution (Numba).

Derivation used here. A linear convolution c = h * g (h of length m, g of length r, c of length n = m + r - 1) is
computed Toom-Cook style by evaluating both polynomials at n points (n - 1 finite points and infinity, where the
"value" is the leading coefficient), multiplying pointwise and interpolating: ``c = C [(E_g g) . (E_h h)]``. The
correlation a convolution layer computes, ``y_i = sum_k g_k d_(i+k)`` for a tile d of length n, is the transpose of
``h -> c``, so ``y = E_h^T [(E_g g) . (C^T d)]``: ``A^T = E_h^T`` (m x n), ``G = E_g`` (n x r), ``B^T = C^T`` (n x n).
Each row j of B^T is scaled by the common denominator of its entries and row j of G by its inverse, so the input
transform has small integer coefficients and the fractions sit in G, whose product with the weights is computed
once, offline. All of it is exact rational arithmetic; the float matrices come last.

In 2D: ``Y = A^T [ (G g G^T) . (B^T d B) ] A`` per tile of n x n inputs and m x m outputs.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cache

import numpy as np
from numba import njit, prange

__all__ = [
    "BACKENDS",
    "POINTS",
    "cook_toom",
    "direct_conv",
    "input_transform",
    "matrices",
    "output_transform",
    "reference_conv",
    "weight_transform",
    "weight_transform_numpy",
]

_CANDIDATES = (
    Fraction(0),
    Fraction(1),
    Fraction(-1),
    Fraction(2),
    Fraction(-2),
    Fraction(1, 2),
    Fraction(-1, 2),
    Fraction(4),
    Fraction(-4),
    Fraction(1, 4),
    Fraction(-1, 4),
)
POINTS: dict[int, tuple[Fraction, ...]] = {k: _CANDIDATES[:k] for k in range(1, len(_CANDIDATES) + 1)}
"""The finite interpolation points used for k points (F(m, r) needs k = m + r - 2): small, symmetric, exact."""


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
    """Exact inverse by Gauss-Jordan elimination."""
    n = len(matrix)
    aug = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if aug[r][col] != 0)
        aug[col], aug[pivot] = aug[pivot], aug[col]
        p = aug[col][col]
        aug[col] = [x / p for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col] != 0:
                f = aug[r][col]
                aug[r] = [x - f * y for x, y in zip(aug[r], aug[col], strict=True)]
    return [row[n:] for row in aug]


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)


def cook_toom(
    m: int, r: int = 3, points: tuple[Fraction, ...] | None = None
) -> tuple[list[list[Fraction]], list[list[Fraction]], list[list[Fraction]]]:
    """Exact ``(A^T, G, B^T)`` of F(m, r): shapes (m, n), (n, r), (n, n) with n = m + r - 1."""
    n = m + r - 1
    pts = tuple(points) if points is not None else POINTS.get(n - 1, ())
    if len(pts) != n - 1 or len(set(pts)) != n - 1:
        raise ValueError(f"F({m}, {r}) needs {n - 1} distinct finite points, got {pts}")

    def evaluation(cols: int) -> list[list[Fraction]]:  # n x cols: value at each point, leading coefficient at infinity
        rows = [[p**k for k in range(cols)] for p in pts]
        rows.append([Fraction(int(k == cols - 1)) for k in range(cols)])
        return rows

    e_g, e_h = evaluation(r), evaluation(m)
    vinv = _inverse([[p**k for k in range(n - 1)] for p in pts])
    # C maps (values at the finite points, leading coefficient) to the n coefficients of c
    top = [p ** (n - 1) for p in pts]
    c = [vinv[i] + [-sum(vinv[i][j] * top[j] for j in range(n - 1))] for i in range(n - 1)]
    c.append([Fraction(0)] * (n - 1) + [Fraction(1)])
    bt = [[c[i][j] for i in range(n)] for j in range(n)]  # C^T
    at = [[e_h[j][i] for j in range(n)] for i in range(m)]  # E_h^T
    g = [row[:] for row in e_g]
    for j in range(n):  # integers in B^T, the fractions in G
        scale = 1
        for x in bt[j]:
            scale = _lcm(scale, x.denominator)
        first = next((x for x in bt[j] if x != 0), Fraction(1))
        if first < 0:
            scale = -scale
        bt[j] = [x * scale for x in bt[j]]
        g[j] = [x / scale for x in g[j]]
    return at, g, bt


@cache
def matrices(m: int, r: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 ``(A^T, G, B^T)`` of F(m, r)."""
    at, g, bt = cook_toom(m, r)
    return tuple(np.array([[float(x) for x in row] for row in mat]) for mat in (at, g, bt))  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# weight transform and reference convolution
# --------------------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, inline="always")
def _sandwich(left: np.ndarray, d: np.ndarray, tmp: np.ndarray, out: np.ndarray) -> None:
    """``out = left . d . left^T`` for small 2D blocks (``out`` may be a strided view); ``tmp`` holds ``left . d``."""
    rows, inner = left.shape
    cols = d.shape[1]
    for i in range(rows):
        for j in range(cols):
            s = 0.0
            for q in range(inner):
                s += left[i, q] * d[q, j]
            tmp[i, j] = s
    for i in range(rows):
        for j in range(rows):
            s = 0.0
            for q in range(cols):
                s += tmp[i, q] * left[j, q]
            out[i, j] = s


@njit(cache=True, parallel=True, nogil=True)
def _weight_transform(w: np.ndarray, g: np.ndarray) -> np.ndarray:
    k_out, c_in, r, _ = w.shape
    n = g.shape[0]
    u = np.empty((n, n, c_in, k_out), dtype=np.float64)
    for k in prange(k_out):
        tmp = np.empty((n, r))
        for c in range(c_in):
            _sandwich(g, w[k, c], tmp, u[:, :, c, k])
    return u


def weight_transform(w: np.ndarray, m: int, backend: str = "numba") -> np.ndarray:
    """``U = G w G^T`` for every (output, input) channel pair of a [K, C, r, r] weight, as [n, n, C, K] float64."""
    r = w.shape[-1]
    _, g, _ = matrices(m, r)
    w = np.ascontiguousarray(w, dtype=np.float64)
    if backend == "numba":
        return _weight_transform(w, g)
    u = np.empty((g.shape[0], g.shape[0], w.shape[1], w.shape[0]))
    _run(backend, "weight_transform", None, w, g, u)
    return u


def weight_transform_numpy(w: np.ndarray, m: int) -> np.ndarray:
    """The same in numpy (einsum), for checking."""
    _, g, _ = matrices(m, w.shape[-1])
    return np.einsum("it,kctu,ju->ijck", g, w.astype(np.float64), g)


@njit(cache=True, parallel=True, nogil=True)
def _input_transform(x: np.ndarray, bt: np.ndarray, m: int, v: np.ndarray) -> None:
    batch, c_in, hp, wp = x.shape
    n = bt.shape[0]
    th, tw = (hp - n) // m + 1, (wp - n) // m + 1
    tiles = th * tw
    for bc in prange(batch * c_in):
        b, c = bc // c_in, bc % c_in
        tmp = np.empty((n, n))
        for t in range(tiles):
            ty, tx = t // tw, t % tw
            _sandwich(bt, x[b, c, ty * m : ty * m + n, tx * m : tx * m + n], tmp, v[:, :, c, b * tiles + t])


@njit(cache=True, parallel=True, nogil=True)
def _output_transform(mm: np.ndarray, at: np.ndarray, th: int, tw: int, y: np.ndarray) -> None:
    n, _, k_out, cols = mm.shape
    m = at.shape[0]
    tiles = th * tw
    batch = cols // tiles
    for bk in prange(batch * k_out):
        b, k = bk // k_out, bk % k_out
        tmp = np.empty((m, n))
        for t in range(tiles):
            ty, tx = t // tw, t % tw
            _sandwich(at, mm[:, :, k, b * tiles + t], tmp, y[b, k, ty * m : ty * m + m, tx * m : tx * m + m])


def _c_module():
    """The compiled transforms, or None when the package was installed without a C compiler."""
    try:
        from graphopt.kernels import _ctransforms
    except ImportError:
        return None
    return _ctransforms if getattr(_ctransforms, "ABI_VERSION", None) == 1 else None


BACKENDS = ("numba", "c")


def input_transform(x: np.ndarray, m: int, backend: str = "numba") -> np.ndarray:
    """``B^T d B`` of every n x n tile (stride m) of every channel of a padded [B, C, Hp, Wp] input:
    [n, n, C, B*tiles] float64, tiles row-major per image."""
    _, _, bt = matrices(m, 3)
    x = np.ascontiguousarray(x, dtype=np.float64)
    n = bt.shape[0]
    th, tw = (x.shape[2] - n) // m + 1, (x.shape[3] - n) // m + 1
    v = np.empty((n, n, x.shape[1], x.shape[0] * th * tw))
    _run(backend, "input_transform", _input_transform, x, bt, m, v)
    return v


def output_transform(mm: np.ndarray, m: int, th: int, tw: int, backend: str = "numba") -> np.ndarray:
    """``A^T M A`` of every tile of a [n, n, K, B*tiles] product, laid out as [B, K, th*m, tw*m] float64."""
    at, _, _ = matrices(m, 3)
    mm = np.ascontiguousarray(mm, dtype=np.float64)
    y = np.empty((mm.shape[3] // (th * tw), mm.shape[2], th * m, tw * m))
    _run(backend, "output_transform", _output_transform, mm, at, th, tw, y)
    return y


def _run(backend: str, name: str, numba_fn, *args) -> None:  # noqa: ANN001 - a kernel and its arguments
    if backend == "c":
        mod = _c_module()
        if mod is None:
            raise RuntimeError("graphopt.kernels._ctransforms is not built (no C compiler at install time)")
        getattr(mod, name)(*args)
    elif backend == "numba":
        numba_fn(*args)
    else:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def reference_conv(
    x: np.ndarray, w: np.ndarray, m: int, pads: tuple[int, int, int, int] = (1, 1, 1, 1), backend: str = "numba"
) -> np.ndarray:
    """A stride-1 r x r convolution of ``x`` [N, C, H, W] by ``w`` [K, C, r, r] with Winograd F(m, r), in float64:
    input transform, one [K, C] x [C, tiles] product per transform point, output transform.

    ``pads`` = (top, left, bottom, right). The input is padded further on the bottom/right so whole tiles cover the
    output, and the extra rows/columns are cropped.
    """
    r = w.shape[-1]
    top, left, bottom, right = pads
    h_out = x.shape[2] + top + bottom - r + 1
    w_out = x.shape[3] + left + right - r + 1
    th, tw = -(-h_out // m), -(-w_out // m)
    extra_h = th * m + r - 1 - (x.shape[2] + top + bottom)
    extra_w = tw * m + r - 1 - (x.shape[3] + left + right)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom + extra_h), (left, right + extra_w)))
    n = m + r - 1
    u = weight_transform(w, m, backend).reshape(n * n, w.shape[1], w.shape[0])
    v = input_transform(xp, m, backend).reshape(n * n, w.shape[1], -1)
    mm = np.matmul(u.transpose(0, 2, 1), v).reshape(n, n, w.shape[0], -1)
    y = output_transform(mm, m, th, tw, backend)
    return y[:, :, :h_out, :w_out]


def direct_conv(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int] = (1, 1, 1, 1)) -> np.ndarray:
    """Float64 numpy direct convolution (stride 1), the reference every transform is checked against."""
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
    r = w.shape[-1]
    h_out, w_out = xp.shape[2] - r + 1, xp.shape[3] - r + 1
    y = np.zeros((x.shape[0], w.shape[0], h_out, w_out))
    for i in range(r):
        for j in range(r):
            y += np.einsum("nchw,kc->nkhw", xp[:, :, i : i + h_out, j : j + w_out], w[:, :, i, j].astype(np.float64))
    return y
