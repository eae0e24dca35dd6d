"""Where one algorithm overtakes another along a sweep.

Given the times of two contenders at increasing sizes (kernel sizes, or
any increasing measure of problem size), the crossover is the smallest
size from which the second stays faster than the first.  Timings on a
shared machine are noisy, so the decision is taken on the time ratio
smoothed by a running median of three neighbouring points (see
:func:`smoothed_ratio`): a single outlier cannot create a crossover, and
it moves a real one by at most one size (it can only hide one that starts
at the second-to-last size, where one point cannot be told from noise).

Example
-------
>>> crossover([3, 5, 7, 9, 11], [1, 2, 4, 8, 16], [3, 3, 3, 3, 3])
9
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["smoothed_ratio", "crossover", "Crossover", "find_crossovers"]


def _median3(a, b, c):
    return sorted((a, b, c))[1]


def smoothed_ratio(times_a, times_b):
    """``times_b / times_a`` smoothed by a running median of three.

    Interior points take the median of themselves and their two
    neighbours.  The last point takes the median of the last three, so a
    lone outlier at the end of a sweep cannot hide or fake a crossover.  The first
    point is kept as measured: smoothing it towards its right neighbours
    would erase a genuine crossover between the first two sizes, and a
    lone outlier there can move the crossover by at most one size.  With
    fewer than three points the ratio is returned unsmoothed.
    """
    ratio = [tb / ta for ta, tb in zip(times_a, times_b)]
    n = len(ratio)
    if n < 3:
        return ratio
    out = [ratio[0]]
    for i in range(1, n):
        j = min(i, n - 2)                  # centre of the window used
        out.append(_median3(ratio[j - 1], ratio[j], ratio[j + 1]))
    return out


def _finite_points(sizes, times_a, times_b):
    """Drop sizes where either time is missing (None, NaN, inf or <= 0)."""
    keep = []
    for s, ta, tb in zip(sizes, times_a, times_b):
        ok = all(t is not None and math.isfinite(t) and t > 0 for t in (ta, tb))
        if ok:
            keep.append((s, ta, tb))
    return [p[0] for p in keep], [p[1] for p in keep], [p[2] for p in keep]


def crossover(sizes, times_a, times_b):
    """Smallest size from which B stays faster than A.

    Parameters
    ----------
    sizes : sequence
        Increasing sizes (e.g. kernel sizes) at which both were timed.
    times_a, times_b : sequence of float
        Times of A and B; missing points (None, NaN) are ignored.

    Returns
    -------
    size or None
        ``sizes[i]`` for the smallest ``i`` such that the smoothed ratio
        ``t_B / t_A`` is below one at ``i`` and at every later size; the
        first size when B is faster everywhere; None when B is not faster
        at the last size (it never takes over for good).
    """
    if not (len(sizes) == len(times_a) == len(times_b)):
        raise ValueError(
            f"sizes, times_a and times_b must have equal lengths, got "
            f"{len(sizes)}, {len(times_a)} and {len(times_b)}")
    sizes, times_a, times_b = _finite_points(sizes, times_a, times_b)
    ratio = smoothed_ratio(times_a, times_b)
    start = None
    for i in range(len(ratio) - 1, -1, -1):
        if ratio[i] < 1.0:
            start = i
        else:
            break
    return None if start is None else sizes[start]


@dataclass(frozen=True)
class Crossover:
    """B overtakes A at ``size`` (A was faster at the smallest size)."""

    slower: str       # A: fastest at the small sizes
    faster: str       # B: fastest from ``size`` on
    size: object

    def describe(self, unit="k"):
        return f"{self.faster} beats {self.slower} from {unit}={self.size} on"


def find_crossovers(sizes, times):
    """Every crossover between pairs of contenders.

    Parameters
    ----------
    sizes : sequence
        Increasing sizes.
    times : dict
        Contender name -> list of times (None / NaN where not measured).

    Returns
    -------
    list of :class:`Crossover`
        One per ordered pair (A, B) where A is faster at the first common
        size and B is faster for good from a later size, sorted by size.
    """
    found = []
    names = list(times)
    for a in names:
        for b in names:
            if a == b:
                continue
            s, ta, tb = _finite_points(sizes, times[a], times[b])
            if len(s) < 2:
                continue
            at = crossover(s, ta, tb)
            if at is not None and at != s[0]:
                found.append(Crossover(a, b, at))
    return sorted(found, key=lambda c: (c.size, c.slower, c.faster))
