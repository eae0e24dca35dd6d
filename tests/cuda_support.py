"""When the CUDA backend can run here, and a skip marker for when it cannot.

The CUDA tests run on a GPU, or without one in numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set before Python starts: ``.ci/run`` does).
Without numba-cuda they are skipped, never failed: the CPU suite must pass
with the ``cuda`` extra absent.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def cuda_usable():
    """(usable, reason): numba-cuda importable, and a GPU or the simulator."""
    if importlib.util.find_spec("numba_cuda") is None:
        return False, "numba-cuda is not installed (pip install '.[cuda]')"
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return True, "CUDA simulator"
    from numba import cuda
    if cuda.is_available():
        return True, "GPU"
    return False, ("numba-cuda is installed but no GPU is usable; set "
                   "NUMBA_ENABLE_CUDASIM=1 to run the CUDA tests in the simulator")


CUDA_USABLE, CUDA_REASON = cuda_usable()
SIMULATED = CUDA_USABLE and CUDA_REASON == "CUDA simulator"

requires_cuda = pytest.mark.skipif(not CUDA_USABLE, reason=CUDA_REASON)
