"""numba.cuda kernels, one module per algorithm or op, mirroring kernels/cpu.

``direct.py`` (shared-memory tiles, register blocks), ``im2col.py``
(implicit GEMM on the GEMM core of ``_gemm.py``), ``winograd.py``,
``fft.py`` (+ ``_fft_stockham.py``, a numba.cuda Stockham FFT),
``transposed.py``, ``backward.py``, ``pooling.py`` and ``arrays.py`` (the
front ends' steps on device arrays); ``_runtime.py`` guards the import of
numba.cuda and moves arrays, ``_tuning.py`` holds launch shapes and
``algorithm="auto"``'s CUDA thresholds.  Each module lists its kernels in
``REPORT`` for ``convbench cuda-report``.

This package's ``__init__`` imports nothing: ``kernels.built_algorithms``
finds the modules without loading CUDA, and only a call with
``backend="cuda"`` imports numba.cuda.
"""
