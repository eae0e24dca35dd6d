"""Backend-neutral mathematics of Winograd convolution F(m x m, r x r).

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR
2016).  A stride-1 correlation of an ``alpha = m + r - 1`` input tile
``d`` with an ``r``-tap filter ``g`` gives ``m`` outputs

    y = A^T [ (G g) * (B^T d) ]                         (1-D)
    Y = A_h^T [ (G_h g G_w^T) * (B_h^T d B_w) ] A_w     (2-D, nested)

with ``alpha`` multiplications per axis instead of ``m r``.

The transforms are *generated*, not typed in: :func:`cook_toom` builds
(A^T, G, B^T) for any (m, r) from the ``alpha - 1`` interpolation points of
:data:`INTERPOLATION_POINTS` plus the point at infinity, in exact rational
arithmetic, and :func:`transform_matrices` casts them to a dtype.

This module also holds what every backend shares about tiles: which
configurations and kernel sizes are supported (:func:`unsupported_reason`)
and which tile each gets (:func:`tile_for`, :func:`use_tile`), the
measured error constant of each tile, the tile counts of an output, and
:class:`TransformedWeights`.  It imports no
backend (no Numba): the CPU kernels live in :mod:`kernels.cpu.winograd`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections import namedtuple
from fractions import Fraction
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULT_TILE_BY_KERNEL", "ERROR_CONSTANTS_BY_TILE", "INTERPOLATION_POINTS",
    "MAX_ALPHA", "SUPPORTED_KERNEL_SIZES", "Tile", "TransformedWeights",
    "cook_toom", "error_constant", "kernel_size_rule", "requested_tile",
    "tile_counts", "tile_for", "transform_matrices", "unsupported_reason",
    "use_tile",
]


# --------------------------------------------------------------------------
# Interpolation points and tiles
# --------------------------------------------------------------------------

_H = Fraction(1, 2)
_TQ = Fraction(3, 4)

# The finite interpolation points of a transform with alpha = m + r - 1
# (alpha - 1 of them; the point at infinity is always added).  Small points
# keep the Vandermonde-like transforms well conditioned.  0, +-1, +-2, +-1/2
# is the usual choice for F(4, 3) and F(6, 3) (Lavin & Gray; wincnn); for
# alpha = 9, 10 we measured the float32 error of every F(m, r) with the
# candidate pairs +-3, +-4, +-1/4, +-3/2, +-5/4, +-2/3, +-3/4 (and
# combinations): +-3/4 was best, 2-3x more accurate than +-3/2 and 5-15x
# more than +-3 or +-4.  Each row extends the previous one, so all tiles
# share one point sequence.
INTERPOLATION_POINTS = {
    1: (),
    2: (0,),
    3: (0, 1),
    4: (0, 1, -1),
    5: (0, 1, -1, 2),
    6: (0, 1, -1, 2, -2),
    7: (0, 1, -1, 2, -2, _H),
    8: (0, 1, -1, 2, -2, _H, -_H),
    9: (0, 1, -1, 2, -2, _H, -_H, _TQ),
    10: (0, 1, -1, 2, -2, _H, -_H, _TQ, -_TQ),
}
INTERPOLATION_POINTS = {alpha: tuple(Fraction(p) for p in pts)
                        for alpha, pts in INTERPOLATION_POINTS.items()}
MAX_ALPHA = max(INTERPOLATION_POINTS)

# Kernel sizes (per axis) this module computes, and the output tile m it
# uses for each by default.  An axis of size 1 needs no transform (m = 1,
# alpha = 1).  For r >= 2 the default is the largest tile with
# alpha = m + r - 1 <= 8 whose measured error constant (below) is at most
# 64 in both dtypes: beyond that the error grows fast (F(6, 3): 128,
# F(7, 2): 196; alpha = 9, 10: 350-1300) while the arithmetic saved grows
# slowly.  It keeps >= 18 bits in float32.  F(4, 3) is also the fastest
# r = 3 tile on ResNet layers here (benchmarks/bench_winograd.py).
SUPPORTED_KERNEL_SIZES = (1, 2, 3, 4, 5, 6, 7)
DEFAULT_TILE_BY_KERNEL = {1: 1, 2: 4, 3: 4, 4: 4, 5: 4, 6: 3, 7: 2}

# Observed error constant per square tile F(m x m, r x r), float32 and
# float64: max over random standard-normal problems (4 wide layers,
# C = 32, and 6000 narrow ones of each kind, C = 1..3, 2-D and 1-D, random
# zero padding) of
#     max |y - y_ref| / (u * max (|x| * |w|))
# i.e. kernels.accuracy.error_in_bound_units with the *normwise* scale
# (as for "fft").  Measured by benchmarks/bench_winograd.py
# (`python -m benchmarks.bench_winograd accuracy 6000`, 2026-12-05).  The
# first table took 60 narrow problems of each kind and missed the tails:
# every tile's maximum grew with 6000 (F(4,3) 37.1 -> 65.6 in float32,
# 30.8 -> 81.9 in float64; F(4,5) 59.7 -> 122.2), so that 2x of the old
# maxima was exceeded (a thorough hypothesis run found F(3x3, 5x4) at 50.007
# against its 50).  Over 20000 problems F(3,5) grew by 5 % more (68.6 ->
# 71.9), F(4,3) not at all: the maxima settle.  The elementwise scale
# does not bound Winograd: an output whose own window holds only small
# (or zero) inputs gets rounding errors from the large inputs elsewhere in
# its tile, so error / (u * (|x| * |w|)) is unbounded there.
_OBSERVED_CONSTANTS = {
    (1, 1): (2.2, 3.0),
    (1, 2): (2.0, 3.7),
    (2, 2): (5.0, 5.1),
    (3, 2): (4.8, 5.7),
    (4, 2): (47.3, 38.4),
    (5, 2): (143.7, 131.2),
    (6, 2): (182.4, 180.5),
    (7, 2): (328.7, 237.6),
    (8, 2): (2213.3, 2949.8),
    (9, 2): (2902.2, 4233.3),
    (1, 3): (6.5, 5.4),
    (2, 3): (4.0, 4.9),
    (3, 3): (33.8, 30.2),
    (4, 3): (65.6, 81.9),
    (5, 3): (107.7, 104.3),
    (6, 3): (143.6, 169.1),
    (7, 3): (2392.0, 2085.9),
    (8, 3): (2337.2, 2754.6),
    (1, 4): (4.1, 4.4),
    (2, 4): (19.3, 17.9),
    (3, 4): (51.4, 58.1),
    (4, 4): (88.3, 104.3),
    (5, 4): (145.5, 137.1),
    (6, 4): (1603.5, 1697.5),
    (7, 4): (1739.9, 1979.6),
    (1, 5): (21.2, 18.9),
    (2, 5): (49.1, 49.0),
    (3, 5): (73.4, 63.4),
    (4, 5): (122.2, 114.3),
    (5, 5): (942.1, 1140.4),
    (6, 5): (1552.7, 1830.1),
    (1, 6): (47.4, 47.4),
    (2, 6): (72.4, 60.2),
    (3, 6): (81.7, 101.5),
    (4, 6): (889.0, 949.7),
    (5, 6): (1037.6, 1546.8),
    (1, 7): (58.1, 73.3),
    (2, 7): (65.9, 67.1),
    (3, 7): (751.2, 1485.1),
    (4, 7): (837.3, 1646.9),
}


def _with_headroom(c):
    """2x the observed value, rounded up to two significant digits."""
    v = 2.0 * c
    step = 10.0 ** (np.floor(np.log10(v)) - 1)
    return round(float(np.ceil(v / step) * step), 6)


ERROR_CONSTANTS_BY_TILE = {
    tile: {"float32": _with_headroom(c32), "float64": _with_headroom(c64)}
    for tile, (c32, c64) in _OBSERVED_CONSTANTS.items()}

Tile = namedtuple("Tile", "m_h m_w r_h r_w")
Tile.alpha_h = property(lambda t: t.m_h + t.r_h - 1)
Tile.alpha_w = property(lambda t: t.m_w + t.r_w - 1)
Tile.__doc__ = ("Output tile m_h x m_w of a r_h x r_w kernel: the 2-D "
                "transform F(m_h x m_w, r_h x r_w).")


# --------------------------------------------------------------------------
# Exact construction of the transforms (Cook-Toom / Lagrange)
# --------------------------------------------------------------------------

def _poly_from_roots(roots):
    """Coefficients (lowest degree first) of prod (x - a) over ``roots``."""
    coeffs = [Fraction(1)]
    for a in roots:
        shifted = [Fraction(0)] + coeffs          # x * p(x)
        for i, c in enumerate(coeffs):
            shifted[i] -= a * c                   # - a * p(x)
        coeffs = shifted
    return coeffs


def _evaluation_matrix(points, n):
    """alpha x n matrix evaluating a degree < n polynomial at the points
    and at infinity (where it is its coefficient of x^(n-1))."""
    rows = [[a ** j for j in range(n)] for a in points]
    rows.append([Fraction(0)] * (n - 1) + [Fraction(1)])
    return rows


@lru_cache(maxsize=None)
def cook_toom(m, r, points=None):
    """Exact Winograd transforms (A^T, G, B^T) of the 1-D F(m, r).

    Parameters
    ----------
    m, r : int >= 1
        Outputs per tile and filter taps; the tile has ``alpha = m + r - 1``
        inputs.
    points : tuple of Fraction, optional
        ``alpha - 1`` distinct finite interpolation points; default
        ``INTERPOLATION_POINTS[alpha]``.

    Returns
    -------
    AT, G, BT : tuple of tuple of Fraction
        Shapes (m, alpha), (alpha, r), (alpha, alpha), with
        ``sum_i g[i] d[t + i] == (AT @ ((G @ g) * (BT @ d)))[t]`` exactly.

    Notes
    -----
    The product ``u(x) = g(x) h(x)`` of polynomials of degree r-1 and m-1
    (a linear convolution) is fixed by its values at the alpha - 1 points
    ``a_i`` and its leading coefficient ("the value at infinity"):
    ``u(x) = sum_i u(a_i) L_i(x) + u_inf prod_i (x - a_i)`` with Lagrange
    polynomials ``L_i``.  With ``E_n`` evaluating degree < n polynomials at
    those alpha points and ``Cmat`` the interpolation above,
    ``u = Cmat ((E_r g) * (E_m h))``.  Correlation is the transpose of
    convolution with respect to ``h`` (the transformation principle), so
    ``A^T = E_m^T``, ``G = E_r``, ``B^T = Cmat^T``.  The Lagrange
    denominators ``prod_{k != i} (a_i - a_k)`` are moved from B^T into G:
    G is applied once per weight array in float64, and B^T keeps small
    entries (integers for integer points).
    """
    alpha = m + r - 1
    if m < 1 or r < 1:
        raise ValueError(f"m and r must be >= 1, got m={m}, r={r}")
    if points is None:
        if alpha not in INTERPOLATION_POINTS:
            raise ValueError(
                f"F({m}, {r}) needs alpha = m + r - 1 = {alpha} <= {MAX_ALPHA}")
        points = INTERPOLATION_POINTS[alpha]
    points = tuple(Fraction(p) for p in points)
    if len(points) != alpha - 1 or len(set(points)) != len(points):
        raise ValueError(f"F({m}, {r}) needs {alpha - 1} distinct points, "
                         f"got {points}")
    G = _evaluation_matrix(points, r)
    BT = []
    for i, a in enumerate(points):
        others = points[:i] + points[i + 1:]
        denominator = Fraction(1)
        for b in others:
            denominator *= a - b
        sign = 1 if denominator > 0 else -1
        # Row i of B^T: L_i(x) times its denominator (padded to alpha coeffs).
        BT.append([sign * c for c in _poly_from_roots(others)] + [Fraction(0)])
        G[i] = [g * sign / denominator for g in G[i]]
    BT.append(_poly_from_roots(points))
    AT = [list(col) for col in zip(*_evaluation_matrix(points, m))]
    as_tuple = lambda rows: tuple(tuple(row) for row in rows)  # noqa: E731
    return as_tuple(AT), as_tuple(G), as_tuple(BT)


@lru_cache(maxsize=None)
def _float_matrices(m, r, dtype_name):
    AT, G, BT = cook_toom(m, r)
    to = lambda rows, dt: np.array([[float(v) for v in row] for row in rows], dt)  # noqa: E731
    out = (to(AT, dtype_name), to(G, np.float64), to(BT, dtype_name))
    for a in out:
        a.setflags(write=False)
    return out


def transform_matrices(m, r, dtype=np.float64):
    """(A^T, G, B^T) of F(m, r) as arrays: A^T and B^T in ``dtype`` (all
    points are dyadic rationals, and their entries are exact even in
    float32), G in float64 since the kernel transform runs in float64."""
    return _float_matrices(int(m), int(r), np.dtype(dtype).name)


# --------------------------------------------------------------------------
# Tiles: the supported kernels, the tile of each, its accuracy
# --------------------------------------------------------------------------

def kernel_size_rule(kernel_hw):
    """The sentence that states the supported kernel sizes, for a kernel of
    size ``kernel_hw = (kH, kW)`` outside them."""
    return (f"Winograd supports kernel sizes {SUPPORTED_KERNEL_SIZES[0]} to "
            f"{SUPPORTED_KERNEL_SIZES[-1]} along each axis (transforms with "
            f"at most {MAX_ALPHA} interpolation points), got "
            f"{kernel_hw[0]}x{kernel_hw[1]}")


def tile_for(kernel_hw, m=None):
    """The :class:`Tile` used for a kernel of size ``kernel_hw = (kH, kW)``.

    ``m`` is None (default per kernel size, :data:`DEFAULT_TILE_BY_KERNEL`),
    an int (both axes; an axis with a 1-tap kernel always uses m = 1) or a
    pair ``(m_h, m_w)``.  Raises ValueError for tiles outside the table.
    """
    r_h, r_w = (int(k) for k in kernel_hw)
    for r in (r_h, r_w):
        if r not in SUPPORTED_KERNEL_SIZES:
            raise ValueError(kernel_size_rule(kernel_hw))
    if m is None:
        m_h, m_w = DEFAULT_TILE_BY_KERNEL[r_h], DEFAULT_TILE_BY_KERNEL[r_w]
    elif np.ndim(m) == 0:
        m_h = m_w = int(m)
    else:
        m_h, m_w = (int(v) for v in m)
    # A 1-tap axis needs no transform at all: F(1, 1) is the identity.
    m_h = 1 if r_h == 1 else m_h
    m_w = 1 if r_w == 1 else m_w
    for mm, r in ((m_h, r_h), (m_w, r_w)):
        if mm < 1 or mm + r - 1 > MAX_ALPHA:
            raise ValueError(
                f"tile m={mm} for a {r}-tap kernel axis needs m + r - 1 = "
                f"{mm + r - 1} interpolation points; allowed 1 <= m <= "
                f"{MAX_ALPHA + 1 - r}")
    return Tile(m_h, m_w, r_h, r_w)


def error_constant(tile, dtype):
    """Documented normwise error constant c of a 2-D tile.

    ``|y - y_ref| <= c * u * max(|x| * |w|)``; for F(m_h x m_w, r_h x r_w)
    the larger of the constants of the square tiles of its two axes.
    """
    name = np.dtype(dtype).name
    return max(ERROR_CONSTANTS_BY_TILE[(tile.m_h, tile.r_h)][name],
               ERROR_CONSTANTS_BY_TILE[(tile.m_w, tile.r_w)][name])


def tile_counts(out_hw, tile):
    """(tiles_h, tiles_w): tiles covering an output of size ``out_hw``."""
    return (-(-out_hw[0] // tile.m_h), -(-out_hw[1] // tile.m_w))


# --------------------------------------------------------------------------
# Which tile a call uses: default, or requested by the caller
# --------------------------------------------------------------------------

_requested_tile = contextvars.ContextVar("winograd_tile", default=None)


@contextlib.contextmanager
def use_tile(m):
    """Within the block, Winograd convolutions use output tile ``m`` (int or
    (m_h, m_w)) instead of the default; ``None`` restores the default.

    >>> import numpy as np, kernels
    >>> from kernels.winograd import use_tile
    >>> x = np.ones((1, 2, 9, 9)); w = np.ones((3, 2, 3, 3))
    >>> with use_tile(6):
    ...     y = kernels.conv2d(x, w, padding=1, algorithm="winograd")
    >>> float(y[0, 0, 4, 4])
    18.0
    """
    token = _requested_tile.set(m)
    try:
        yield
    finally:
        _requested_tile.reset(token)


def requested_tile():
    """The tile requested by the innermost :func:`use_tile`, or None."""
    return _requested_tile.get()


# --------------------------------------------------------------------------
# Which configurations Winograd computes
# --------------------------------------------------------------------------

def unsupported_reason(x_shape, w_shape, stride, padding, dilation, groups):
    """None when Winograd can compute the configuration, else the rule.

    The per-algorithm check of :mod:`kernels._dispatch` (shapes as there:
    padding (top, bottom, left, right)); the same on every backend.
    """
    if tuple(stride) != (1, 1):
        return (f"Winograd computes stride-1 convolutions only, got "
                f"stride={tuple(stride)}")
    if tuple(dilation) != (1, 1):
        return (f"Winograd computes undilated convolutions only (dilation 1), "
                f"got dilation={tuple(dilation)}")
    kernel_hw = tuple(w_shape[2:])
    if any(k not in SUPPORTED_KERNEL_SIZES for k in kernel_hw):
        return kernel_size_rule(kernel_hw)
    if x_shape[2] < kernel_hw[0] or x_shape[3] < kernel_hw[1]:
        # Then every window is partly padding: the taps that meet only
        # zeros still enter the transformed products, and the error can
        # exceed the bound scale max(|x| * |w|) by any factor.
        return (f"Winograd needs an input at least as large as the kernel along "
                f"each axis (input {x_shape[2]}x{x_shape[3]}, kernel "
                f"{kernel_hw[0]}x{kernel_hw[1]}); smaller ones are all padding "
                f"at every output, where its error bound does not hold")
    try:
        tile_for(kernel_hw, requested_tile())
    except ValueError as exc:
        return f"the tile requested with use_tile() does not fit: {exc}"
    return None


# --------------------------------------------------------------------------
# Transformed weights
# --------------------------------------------------------------------------

class TransformedWeights:
    """Filters already through the kernel transform, for reuse across calls.

    Build with :func:`kernels.winograd.transform_weights`; pass in place of
    ``w`` to :func:`kernels.winograd.conv2d`.

    Attributes
    ----------
    U : ndarray (groups, alpha_h * alpha_w, C // groups, K // groups)
        Read-only.
    weights : ndarray (K, C // groups, kH, kW)
        The filters (read-only; for inputs that must go to another
        algorithm, e.g. non-finite ones).
    tile : Tile
    groups : int
    derived : dict
        Other layouts of U that a backend makes once and keeps with the
        weights (the CPU's packed strips), by a key of the backend's.
    """

    def __init__(self, U, weights, tile, groups):
        self.U = U
        self.weights = weights
        self.tile = tile
        self.groups = int(groups)
        self.derived = {}

    @property
    def w_shape(self):
        return self.weights.shape

    @property
    def dtype(self):
        return self.weights.dtype

    @property
    def nbytes(self):
        """Bytes held: the filters, U and its derived layouts."""
        return (self.weights.nbytes + self.U.nbytes
                + sum(a.nbytes for a in self.derived.values()))

    def __repr__(self):
        t = self.tile
        return (f"TransformedWeights(F({t.m_h}x{t.m_w}, {t.r_h}x{t.r_w}), "
                f"w_shape={self.w_shape}, groups={self.groups}, "
                f"dtype={self.dtype.name})")
