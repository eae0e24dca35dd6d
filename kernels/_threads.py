"""Keep Numba's and OpenBLAS's thread pools from fighting.

Numba's OpenMP threading layer and OpenBLAS both keep their worker threads
spinning for a while after a parallel region.  When a ``prange`` kernel and
a BLAS call alternate (im2col, Winograd, FFT contraction), each pool's
spinning threads steal the cores the other needs: one im2col step was
measured 10x slower (8.0 ms instead of 0.84 ms) on the 2-core development
machine.  Asking OpenMP to sleep instead of spin removes the clash.

``OMP_WAIT_POLICY`` is read once, when the OpenMP runtime loads, which
Numba does lazily at the first parallel kernel launch; importing ``kernels``
sets it (unless the user already chose a value) before that can happen.
"""

from __future__ import annotations

import os


def configure():
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # GNU OpenMP honours OMP_WAIT_POLICY; Intel's runtime reads this one.
    os.environ.setdefault("KMP_BLOCKTIME", "0")
