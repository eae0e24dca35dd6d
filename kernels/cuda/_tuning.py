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
    """Launch shapes of :mod:`kernels.cuda.im2col`.

    The block tile and thread count are the GEMM core's (:data:`GEMM`):
    the implicit GEMM is that kernel with its own loaders.
    """

    # 1x1 / stride-1 / unpadded problems use the cheaper loaders (x viewed
    # as (N, C, H W): 1 division per element instead of 4 plus the padding
    # test); False runs them through the general gather, to measure it.
    pointwise: bool = True


IM2COL = Im2colTuning()


# ---- winograd ------------------------------------------------------------

@dataclass(frozen=True)
class WinogradTuning:
    """Launch shapes of :mod:`kernels.cuda.winograd`."""

    # Threads per block of the transform kernels (one thread per tile and
    # channel or filter): 256 keeps >= 25 % occupancy up to 128 registers.
    threads: int = 256
    # Intermediates (h of Y = L X R^T) a transform thread keeps live: the
    # output columns are split into chunks of at most this many values
    # (rows of X re-read per chunk).  36 holds a whole alpha = 6 tile
    # (F(4x4, 3x3)) in one pass; alpha = 8 tiles take two: F(6x6, 3x3)'s
    # float64 input transform then needs 130 registers instead of 166
    # (F(4x4, 5x5), F(2x2, 7x7): 128), all without spills.
    max_live_values: int = 36
    # Batches with fewer tiles than this use m = 2 instead of the default
    # tile (as the CPU's min_gemm_rows): a tuple GEMM block spans 64 tiles,
    # so below ~32 tiles of F(4x4, 3x3) its 36 GEMMs are mostly idle
    # columns, and F(2x2, 3x3)'s 16 GEMMs over 4x the tiles cost fewer
    # padded FLOPs (36 * 64 vs 16 * 64 columns per filter-channel pair).
    min_gemm_tiles: int = 32


WINOGRAD = WinogradTuning()


# ---- fft ------------------------------------------------------------

@dataclass(frozen=True)
class FFTTuning:
    """Launch shapes and tile rule of :mod:`kernels.cuda.fft`."""

    # Threads per block of the FFT passes: 8 warps, each thread one
    # radix-4 (or two radix-2) butterflies per stage of a full block.
    threads: int = 256
    # Complex elements a block holds in shared memory: the longest FFT a
    # block does on its own (longer ones run stage by stage through
    # global memory); shorter ones are batched shared_length / L to a
    # block.  8 KiB (float32) / 16 KiB (float64) of shared memory per
    # block; must be a multiple of 4 * threads.
    shared_length: int = 1024
    # Overlap-save tile lengths (powers of two): the smallest power of two
    # >= taps_per_tile * (kq - 1), clamped to [min_tile, max_tile] and at
    # least 2 kq; an axis whose whole output fits in that one tile is one
    # tile.  32 x 32 tiles of a 3 x 3 filter keep 88 % of every transform.
    min_tile: int = 16
    max_tile: int = 64
    taps_per_tile: int = 16
    # Device bytes of spectra (input and output, per image) a chunk of
    # images may hold; the images of a call are processed in chunks.
    chunk_bytes: int = 512 * 2**20
    # The per-frequency contraction runs elementwise (one thread per
    # (bin, group, tile), all Kg outputs of its group; no GEMM tile
    # padding) when Kg <= few_channel_max_k and Cg' <= few_channel_max_c,
    # else on the GEMM core.  Kg: the GEMM's M = 2 Kg is padded to 64
    # rows, so it executes at most 2 Kg / 64 = 25 % useful FLOPs for
    # Kg <= 8, while the elementwise kernel, which re-uses nothing through
    # shared memory (one load per FMA: 2 uniform W + 2 X per complex MAC),
    # is bound near 1/4 of the FMA rate by the load units (32 vs 128 per
    # clock per SM on sm_90): break-even at Kg = 8.  Cg': each thread
    # reads its Cg' X values once per output (Kg times), from L1 as long
    # as a resident warp's 2 Cg' lines of 128 B fit: 64 warps x 8 x 256 B
    # = 128 KiB of sm_90's 256 KiB L1 at Cg' = 8.
    few_channel_max_k: int = 8
    few_channel_max_c: int = 8
    # Cap of the elementwise contraction's grid (blocks of ``threads``):
    # 132 SMs x 8 resident 256-thread blocks is ~1056 per wave on an
    # H100/H200; four waves hide the tail, larger problems grid-stride.
    contract_max_blocks: int = 4096


FFT = FFTTuning()


# ---- pooling ------------------------------------------------------------

@dataclass(frozen=True)
class PoolingTuning:
    """Launch shapes of :mod:`kernels.cuda.pooling`."""

    # Threads per block of the one-thread-per-element kernels (forward:
    # per output, backward: per input element).  A multiple of the warp;
    # 256 keeps 8 blocks per SM resident at full occupancy (sm_90) with the
    # few dozen registers these kernels use, and a block's warps read
    # neighbouring columns of a few rows (coalesced along W).
    threads: int = 256
    # Cap of the grid-stride kernels' grid: 132 SMs x 8 resident blocks of
    # 256 threads is ~1056 blocks per wave on an H100/H200; 4096 blocks
    # (four waves) hides the tail of the last wave while large problems
    # loop instead of launching millions of blocks.
    max_blocks: int = 4096
    # Threads per block of global average pooling (one block per plane,
    # a shared-memory tree): a power of two for the tree.  256 float64
    # partial sums (2 KiB) per block; planes of 7x7 .. 56x56 give each
    # thread 1 .. 13 loads, enough to keep the loads in flight.
    reduce_threads: int = 256


POOLING = PoolingTuning()


# ---- transposed ------------------------------------------------------------

@dataclass(frozen=True)
class TransposedTuning:
    """Launch shapes of :mod:`kernels.cuda.transposed`."""

    # Threads per block of the direct gather (one output pixel each):
    # 8 warps, the usual elementwise block; occupancy is register-bound.
    threads: int = 256
    # Output channels of one group each direct thread accumulates in
    # registers: every input value loaded is used this many times.  With
    # 4 the gather needs 70 (float32) / 80 (float64) registers, no
    # spills, 37.5 % occupancy at 256 threads; a partial block multiplies
    # at most 3 zero-padded channels.
    out_block: int = 4
    # Threads per block of im2col's col2im gather (one output element each).
    col2im_threads: int = 256
    # Bytes of im2col's column matrix (groups x Co kH kW x pixels) one
    # step may allocate; larger problems run a few images or a band of
    # input rows at a time.  256 MiB is ~0.2 % of an H100/H200's memory
    # and a GEMM of >= 64 Mi float32 elements already fills the GPU.
    scratch_limit: int = 256 * 2**20


TRANSPOSED = TransposedTuning()


# ---- backward ------------------------------------------------------------

@dataclass(frozen=True)
class BackwardTuning:
    """Launch shapes of :mod:`kernels.cuda.backward`.

    The weight gradient is a GEMM core launch (:data:`GEMM` tiles) whose
    reduction runs over the batch's output positions, split into at most
    ``max_splits`` contiguous ranges (split-K) when its output is too small
    to fill the GPU; a second kernel adds the partial sums in a fixed
    order.  The split count depends on the problem only, never on the GPU,
    so results are the same on every device.
    """

    # Threads per block of the kernel that adds the split-K partial sums
    # (one thread per weight-gradient element, coalesced).
    threads: int = 256
    # Split the reduction until about this many GEMM blocks run: 3 resident
    # 256-thread GEMM blocks (80 registers in float32) per SM x 132 SMs of
    # an H100/H200.
    target_blocks: int = 396
    # Each split sums at least this many reduction elements (128 slabs of
    # 8), so the partial sums' extra traffic (2 x splits x the output) stays
    # small beside the GEMM's reads.
    min_split_length: int = 1024
    # At most this many partial sums per output (bounds that traffic too).
    max_splits: int = 64


BACKWARD = BackwardTuning()


AUTO_THRESHOLDS = {
    # Same names as the CPU's (kernels/cpu/_tuning.py), so the shared
    # chooser applies.  No GPU was lent while these were set: they follow
    # the roofline model of `convbench cuda-report --model` (H200, float32,
    # bounds, not measurements) and the launch counts, except where a
    # comment gives the one H200 run so far (docs/cuda.md section 4:
    # batch 32, 5 timed calls, device arrays); the rest are to be replaced
    # by `convbench calibrate`-style measurements on a GPU.
    #
    # Below this many multiply-adds the work is a few microseconds at most
    # and the launches dominate: direct is one launch, Winograd and FFT
    # three to five.
    "direct_max_macs": 1.0e7,
    # Single-channel 2048^2.  The model (us) put FFT from 17x17 (k = 15
    # direct 28.2 / fft 30.7, k = 17 36.2 / 33.0); the H200 (ms, median of
    # 5) did not: k = 15 direct 1.21 / fft 2.07, k = 31 2.04 / 2.78, k = 63
    # 7.16 / 3.19.  Direct grows as 0.40 + 0.0017 k^2 ms between 31 and 63
    # and FFT as 2.78 + 0.00014 (k^2 - 961): they cross at k^2 ~ 1440,
    # k ~ 38 (interpolated, not measured there).
    "fft_min_area_single": 38 * 38,
    # C = K = 64 at 56^2, batch 32 (model, us): 5x5 winograd 96.9 / fft
    # 81.1; 7x7 354 / 81.1; at 3x3 the model favours fft too (47.9 vs
    # 59.1) but Winograd's transforms are registers-only and its tuple
    # GEMMs run the GEMM core at full tiles: 3x3 stays Winograd's.  The
    # H200 at 3x3 (ms): fft 3.19, winograd 1.44, direct 1.12; 5x5 and 7x7
    # were not run, so this stays the model's.
    "fft_min_area_multi": 25,
    # Winograd for 3x3 stride-1 layers with at least this many channels:
    # with fewer the tuple GEMMs run mostly-empty 64-wide tiles (model,
    # C = K = 8 at 56^2: direct 1.7 us, winograd 7.4) ...
    "winograd_min_channels": 16,
    # ... and at least 64 output pixels (fewer than 16 4x4 tiles per image).
    "winograd_min_pixels": 64,
    # Implicit GEMM (cuDNN's default algorithm) whenever a group has at
    # least 8 output channels (an eighth of the 64-row block tile) ...
    "im2col_min_out_channels": 8,
    # ... up to 7x7; larger kernels go to FFT above (multi-channel) or
    # direct (few output channels).
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
