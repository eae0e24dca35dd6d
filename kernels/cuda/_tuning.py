"""Tunables of the CUDA backend: block and tile sizes, one frozen dataclass
per algorithm, and ``algorithm="auto"``'s CUDA thresholds.

Launch shapes are compile-time constants of the kernels (shared-memory
and register-array sizes must be), so unlike the CPU's these records are
read when a module builds its kernels, not per call: change them before
the first call.  ``convbench cuda-report`` shows what each choice costs
in registers, shared memory and occupancy.

No GPU was lent while these were chosen: the sizes follow the usual
SGEMM / implicit-GEMM practice on sm_80/sm_90 (CUTLASS's and cuDNN's
64x64 .. 128x128 block tiles, 4x4 .. 8x8 per thread) and were checked with
the compilation report (no spills, occupancy >= 25 %); the thresholds
follow the roofline model of ``convbench cuda-report --model``.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

__all__ = ["AUTO_THRESHOLDS", "GemmTuning", "GEMM", "DirectTuning", "DIRECT",
           "Im2colTuning", "IM2COL", "WinogradTuning", "WINOGRAD",
           "FFTTuning", "FFT", "PoolingTuning", "POOLING",
           "TransposedTuning", "TRANSPOSED", "BackwardTuning", "BACKWARD",
           "machine_key"]


@dataclass(frozen=True)
class GemmTuning:
    """The register-tiled GEMM core (:mod:`kernels.cuda._gemm`).

    A block computes a ``block_m x block_n`` tile of C with
    ``(block_m / thread_m) * (block_n / thread_n)`` threads, each holding
    ``thread_m x thread_n`` accumulators in registers; K advances
    ``block_k`` at a time through two shared-memory buffers (the next
    slab is loaded while the current one is multiplied).
    """

    block_m: int = 64
    block_n: int = 64
    block_k: int = 8
    thread_m: int = 4
    thread_n: int = 4

    @property
    def threads(self):
        return (self.block_m // self.thread_m) * (self.block_n // self.thread_n)


GEMM = GemmTuning()


# ---- direct ------------------------------------------------------------

@dataclass(frozen=True)
class DirectTuning:
    """Launch shapes of :mod:`kernels.cuda.direct`.

    A block of ``threads`` threads owns ``thread_channels * channel_threads``
    output channels by ``thread_pixels * threads / channel_threads`` output
    pixels of one image and group; each thread keeps ``thread_channels x
    thread_pixels`` accumulators in registers.  ``channel_threads`` is
    chosen per problem (a power of two up to ``max_channel_threads``).
    """

    # 8 warps: enough to hide shared-memory latency, and 2+ blocks fit per
    # SM at up to 128 registers per thread (occupancy >= 25 %).
    threads: int = 256
    # Register block 4 channels x 4 pixels: 16 accumulators, 8 shared loads
    # per 16 FMAs (the 4x4 of the GEMM core).
    thread_channels: int = 4
    thread_pixels: int = 4
    # Threads along the channels: 4 (16 channels x 256 pixels per block) by
    # default; up to 16 (64 x 64) when the output plane is small.
    channel_threads: int = 4
    max_channel_threads: int = 16
    # Static shared memory for the staged input window and the weights, in
    # bytes (the same for float32 and float64): 24 KiB per block leaves 9
    # blocks per SM on sm_90 (228 KiB), and holds a 3x3 layer's 18x18
    # window of 12 (float32) or 6 (float64) channels.
    input_shared_bytes: int = 16384
    weight_shared_bytes: int = 8192


DIRECT = DirectTuning()


# ---- im2col ------------------------------------------------------------

@dataclass(frozen=True)
class Im2colTuning:
    """Launch shapes of :mod:`kernels.cuda.im2col`."""

    threads: int = 256


IM2COL = Im2colTuning()


# ---- winograd ------------------------------------------------------------

@dataclass(frozen=True)
class WinogradTuning:
    """Launch shapes of :mod:`kernels.cuda.winograd`."""

    threads: int = 256


WINOGRAD = WinogradTuning()


# ---- fft ------------------------------------------------------------

@dataclass(frozen=True)
class FFTTuning:
    """Launch shapes of :mod:`kernels.cuda.fft`."""

    threads: int = 256


FFT = FFTTuning()


# ---- pooling ------------------------------------------------------------

@dataclass(frozen=True)
class PoolingTuning:
    """Launch shapes of :mod:`kernels.cuda.pooling`."""

    threads: int = 256


POOLING = PoolingTuning()


# ---- transposed ------------------------------------------------------------

@dataclass(frozen=True)
class TransposedTuning:
    """Launch shapes of :mod:`kernels.cuda.transposed`."""

    threads: int = 256


TRANSPOSED = TransposedTuning()


# ---- backward ------------------------------------------------------------

@dataclass(frozen=True)
class BackwardTuning:
    """Launch shapes of :mod:`kernels.cuda.backward`."""

    threads: int = 256


BACKWARD = BackwardTuning()


AUTO_THRESHOLDS = {
    # Same names as the CPU's (kernels/cpu/_tuning.py) so that the shared
    # chooser applies; values from the roofline model of an H100/H200
    # (convbench cuda-report --model), not from a measurement.
    "direct_max_macs": 1.0e6,
    "fft_min_area_single": 121,
    "fft_min_area_multi": 121,
    "winograd_min_channels": 32,
    "winograd_min_pixels": 64,
    "im2col_min_out_channels": 8,
    "im2col_max_area": 49,
}


def machine_key():
    """What a CUDA calibration must have been measured on: the GPU's name
    and compute capability (or 'simulator'), and numba-cuda's version."""
    from ._runtime import SIMULATOR, cuda
    try:
        import numba_cuda
        version = getattr(numba_cuda, "__version__", "?")
    except ImportError:  # pragma: no cover - old numba with built-in CUDA
        version = "?"
    if SIMULATOR:
        return {"gpu": "simulator", "numba_cuda": version,
                "host": platform.machine()}
    try:
        device = cuda.get_current_device()
        name = device.name.decode() if isinstance(device.name, bytes) else device.name
        return {"gpu": name, "cc": list(device.compute_capability),
                "numba_cuda": version}
    except Exception:  # no GPU: the key of a machine without one
        return {"gpu": None, "numba_cuda": version}
