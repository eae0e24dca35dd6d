"""Tunables of the CPU backend, one frozen dataclass per algorithm.

Every number here was measured; the comment beside it says where.  The
kernels never read a module global for these: a public entry point takes
:func:`current` once and passes the algorithm's record down explicitly,
and every cache whose content depends on a tunable has the record in its
key, so a change is always seen.  Tests and benchmarks change them with
:func:`override`, not by patching module attributes::

    from kernels.cpu import _tuning
    with _tuning.override(fft=dict(chunk_bytes=1)):
        kernels.conv2d(x, w, algorithm="fft")

The setting is a :mod:`contextvars` variable: it holds in the calling
thread (and asyncio task); worker threads receive the record from their
caller.

``AUTO_THRESHOLDS`` are ``algorithm="auto"``'s defaults on this backend
(a calibration file for this backend and machine overrides them, see
:mod:`kernels._calibration`).

Measurements: a 2-vCPU AMD EPYC Zen 4 KVM guest (1 MiB L2 per core,
32 MiB L3, AVX-512, OpenBLAS SkylakeX) unless a comment says otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import glob
import os
import platform
from dataclasses import dataclass

__all__ = ["AUTO_THRESHOLDS", "BlasTuning", "DirectTuning", "Im2colTuning",
           "WinogradTuning", "FFTTuning", "TransposedTuning", "CpuTuning",
           "current", "defaults", "override", "set_defaults",
           "block_shape_threads", "host_vector_bits", "l2_bytes", "machine_key"]


def block_shape_threads():
    """The thread count that fixes block and piece shapes.

    The process's maximum (``NUMBA_NUM_THREADS``), never the current
    ``numba.get_num_threads()``: block shapes set the M of BLAS calls and
    the order of sums, so shapes that followed ``set_num_threads`` made
    results depend on it (Winograd on the Zen 4: 38 % of outputs differed
    in the last digits).
    """
    import numba
    return max(1, int(numba.config.NUMBA_NUM_THREADS))


def host_vector_bits():
    """512 on AVX-512 machines, else 256 (AVX2; LLVM splits as needed):
    the SIMD width of direct's tiles."""
    from numba.core import config
    features = config.CPU_FEATURES
    if features is None:
        try:
            import llvmlite.binding as llvm
            return 512 if llvm.get_host_cpu_features().get("avx512f") else 256
        except Exception:  # pragma: no cover - exotic LLVM builds
            return 256
    return 512 if "+avx512f" in features else 256


def l2_bytes(default=1 << 20):
    """Per-core L2 cache size from Linux's sysfs, or ``default``."""
    for index in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(index + "/level") as f:
                level = f.read().strip()
            with open(index + "/type") as f:
                kind = f.read().strip()
            with open(index + "/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size.endswith("K"):
            return int(size[:-1]) * 1024
    return default


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}
SCRATCH_ENV_VAR = "CONVBENCH_IM2COL_SCRATCH"


def parse_nbytes(text, name=SCRATCH_ENV_VAR):
    """Bytes from '67108864', '64M', '64MiB', '1G' (binary units).

    Anything else, and sizes below one byte (0, negative, NaN, Inf), raise
    ``ValueError`` naming ``name``: a malformed setting is never ignored.
    """
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in ("K", "M", "G") else ""
    number = s[: len(s) - len(unit)].strip()
    try:
        nbytes = int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):
        raise ValueError(
            f"{name}={text!r} is not a size in bytes; use e.g. 67108864, "
            f"64M or 1G") from None
    if nbytes < 1:
        raise ValueError(
            f"{name}={text!r} is below one byte; use a positive size, e.g. "
            f"67108864, 64M or 1G")
    return nbytes


def _default_scratch():
    text = os.environ.get(SCRATCH_ENV_VAR)
    return parse_nbytes(text) if text else 64 * 2**20


# --------------------------------------------------------------------------
# algorithm="auto"
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _cpuinfo():
    """The first processor's ``/proc/cpuinfo`` fields (empty elsewhere)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=1)
def machine_key():
    """What a calibration must have been measured on to apply here: the
    CPU model (name, family, model number and widest SIMD: a virtual
    machine may call a Zen 3 and a Zen 4 both "AMD EPYC", and AVX-512
    changes the direct kernel's tiles), the core count and the versions
    of the libraries whose speed the thresholds compare (JSON-able, cached
    per process)."""
    import numba
    import numpy
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set(info.get("flags", "").split())
    simd = next((isa for isa in ("avx512f", "avx2", "sse4_2") if isa in flags),
                None)
    try:
        from importlib.metadata import version
        fftw = version("pyFFTW")
    except Exception:           # not installed as a distribution
        fftw = None
    return {"cpu": model, "cpu_family": info.get("cpu family"),
            "cpu_model": info.get("model"), "simd": simd,
            "cores": os.cpu_count(), "numpy": numpy.__version__,
            "numba": numba.__version__, "pyfftw": fftw}


AUTO_THRESHOLDS = {
    # Below this many multiply-adds per image the fast algorithms' set-up
    # costs more than they save: use direct.  MobileNet-v2's 1x1 layers
    # (15 repeats): direct faster at 2.4e6 (0.16 vs im2col 0.19 ms) and
    # 4.8e6 (0.29 vs 0.43), a tie at 4.5e6-7.2e6, im2col faster at 7.5e6
    # (960 -> 160 at 7^2: 0.33 vs 0.41).  convbench calibrate's probe
    # (3x3, C = K = 16, 8^2..64^2) found direct fastest throughout (an
    # edge, 1.9e7).
    "direct_max_macs": 5.0e6,
    # The same for a 1x1 kernel on a 1x1 output (a fully connected layer),
    # counted over the whole batch.  SE-ResNet-50's 1x1 convs at batch 32,
    # 15 repeats: direct faster at 1.3e5 (0.24 vs im2col 0.46 ms), im2col
    # from 5.2e5 on (0.50 vs 0.58; 0.47 vs 0.63), 2.1e6: 0.96 vs 2.3.
    # convbench calibrate (C = K = 16..512, batch 32) found 1.05e6, with
    # direct only 3 % slower at 5.2e6: C = K favours direct more than the
    # SE blocks' 16:1 shapes.  Since im2col runs such layers as one GEMM
    # over the batch (2026-12-02), its probe's crossover moved between
    # 8.2e3 and 1.3e5 (median 6.6e4), and SE-ResNet-50's 1.3e5 layers ran
    # im2col 0.08-0.10 ms against direct 0.24-0.28 (9 repeats).
    "direct_max_macs_fc": 6.6e4,
    # The same for other 1x1 kernels (pointwise), per image: the MobileNet
    # figures under direct_max_macs above are all 1x1 layers (Zen 4).
    "direct_max_macs_pointwise": 5.0e6,
    # Kernel area (kH * kW, of each stride phase) from which FFT is chosen
    # with C/g * K/g = 1, 16 and 4096 channel products (interpolated in
    # log2(C*K) between them, kernels._choose.fft_min_area).
    # Single channel, 'same': 512^2 k = 15 fft 2.39 ms vs direct 2.81;
    # 1024^2 k = 15 a tie (6.0 vs 5.7, 8.2 vs 10.1 in another run), k = 11
    # direct (4.8 vs 5.8), k = 19 fft (4.5 vs 7.9); 4096^2 k = 15 fft
    # 1.25x; 1-D 10^6 samples k = 63 a tie, k = 255 fft (3.8 vs 5.7).
    # convbench calibrate, 2048^2, k = 9..23: 197, pinned (direct 0.81x of
    # fft at k = 13, 1.45x slower at 15).
    "fft_min_area_single": 197,
    # C = K = 4 at 128^2 ('same', batch 1): direct faster up to k = 17
    # (0.95 ms vs fft 1.19; k = 7: 0.29 vs 0.89), the FFT's fixed cost
    # dominating on small images.
    # convbench calibrate, C = K = 4 at 512^2: 173, pinned (0.71x at
    # k = 13, 1.47x at 15).  On a 128^2 image the crossover is later
    # (k = 19-23): the FFT's fixed cost; not modelled (see docs/auto.md).
    "fft_min_area_few": 173,
    # C = K = 64 at 56^2: k = 5 winograd 1.95 ms, fft 2.58, direct 3.35;
    # k = 7 fft 3.04 vs winograd 4.83.  1-D C = 3, K = 16 (C*K = 48):
    # k = 15 direct 6.5 vs fft 11.3, k = 63 a tie.
    # convbench calibrate, C = K = 64 at 56^2: 37, within noise (the
    # crossover between k = 5 and 7 moved between repeats).
    "fft_min_area_multi": 37,
    # A 1-D problem (H = kH = 1) goes to FFT from this fraction of the 2-D
    # area threshold: its overlap-save blocks overlap along one axis only
    # and each output pays one transform length, not two.  timeseries-1d,
    # two sweeps: C = 3, K = 16 (threshold 146 in 2-D), k = 63: fft 12.5
    # ms vs direct 15.0 at 10^5 samples x 4, 10.6 vs 12.4 at 10^4 x 32;
    # one channel (197), k = 63: direct 3.9 vs fft 5.3, k = 255: fft 4.7
    # vs 5.9.  convbench calibrate measures it on 3 -> 16 channels of 10^5
    # samples x 4, and for one channel (C*K = 1) separately: on the AVX2
    # Zen 3 one channel of 10^6 samples crossed at k = 95-127 (a factor of
    # 0.77), while 3 -> 16 channels ran FFT 1.3-1.5x faster at k = 63.
    "fft_1d_area_factor": 0.4,
    "fft_1d_area_factor_single": 0.4,
    # Winograd for 3x3 stride-1 layers with at least this many output
    # channels (and C >= 16; 5x5 kernels from half as many) ...
    # convbench calibrate (C = K = 16..256 at 56^2, batch 4): 64, pinned
    # (0.61x of direct at 32, 1.06x faster at 64).  K = 64 on large images
    # is within noise either way (U-Net 572^2, 9 repeats: winograd 126 ms
    # vs direct 143-211, 144 vs 232, 70 vs 69; 256^2 batch 4: 146 vs
    # 131-186, 337 vs 268-312); ResNet-50 128@28^2 winograd 2x.
    # 128 on AVX-512, where direct's channel tile (2026-12-04) runs
    # 64-channel layers 1.15-1.18x faster than before: ResNet-50's 64@56^2
    # (Xeon VM, `convbench sweep`, 7 repeats, in process / isolated)
    # direct 1.14 / 1.52 ms against winograd 1.21 / 1.89 at batch 1, 3.91
    # / 4.70 against 4.70 / 5.53 at batch 4; inside the ResNet-50 batch-1
    # sequence 1.06-1.08 against 1.12-1.60; `convbench calibrate` there:
    # 128, within noise (repeats at 64 and 128).
    "winograd_min_channels": 128 if host_vector_bits() == 512 else 64,
    # ... and this many for 5x5 layers (not calibrated: the calibration
    # probes 3x3 layers).  Half the 3x3 limit on AVX2, as it was until
    # stop 40 (under AVX2 code generation on the Xeon VM Winograd ran
    # 5x5 C = K = 64 at 28^2 1.37x, 32^2 x 2 1.77x, 56^2 2.01x direct's
    # speed; 32 channels at 112^2 1.30x, 56^2 0.98x, 28^2 x 4 0.78x).  On
    # AVX-512 the 3x3 default: direct's channel tile ran 5x5 32-channel
    # layers faster at every size (direct's time over Winograd's, Xeon VM,
    # caches cold, 21 alternated calls: 28^2 x 4 0.40, 56^2 0.49, 112^2
    # 0.62), and 64-channel ones below ~2048 positions (28^2 0.78, 28^2
    # x 2 0.92, 14^2 x 8 0.62; 32^2 x 2 1.11 and 56^2 1.10 go to Winograd
    # by winograd_mid_min_positions).  With half of a calibrated 64 the
    # 32-channel layers ran Winograd.
    "winograd_min_channels_5x5": 128 if host_vector_bits() == 512 else 32,
    # ... on images of at least this many pixels (H * W) ...  From 8^2 up
    # F(4,3)'s 4x4 tiles cover the map without waste (7^2 computes 64
    # outputs for 49).  AVX2 Zen 3 (2026-12-03, `convbench sweep`, 5-7
    # repeats, in-process / isolated, direct's time over winograd's):
    # 256 at 2 x 8^2 1.31 / 1.16, 8 x 8^2 1.98 / 1.81; 512 at 2 x 10^2
    # 1.46 / 1.58, 2 x 12^2 3.44 / 2.65; 128 at 2 x 12^2 1.35 / 1.13; 64
    # at 4 x 12^2 1.10 / 1.22.  7^2 maps stay direct: on the Xeon VM
    # (AVX-512, section V of docs/performance.md) 512 at 4 x 7^2 ran
    # direct 6.9 ms against winograd's 8.8 through kernels.conv2d, the
    # filter's two checks taking 3.6 ms of a call (on the Zen 3 winograd
    # won there, 4.94 against 7.08).  Was 196, set on the Zen 4 before
    # Winograd's unrolled transforms and register-tile GEMMs.
    # 7^2 maps too since 2026-12-04 (49, with winograd_min_positions
    # keeping batch 1 and 2 direct): on the Zen 3, direct's time over
    # winograd's, paired in one process, 512 at 4 x 7^2 1.54, 3 x 7^2
    # 1.21, 2 x 7^2 1.01, 1 x 7^2 0.72; 256 at 4 x 7^2 1.59; 128 at 4 x
    # 7^2 1.08 (64 channels stay direct: winograd_narrow_min_positions).
    # On the Xeon VM, after the register-tile GEMMs (section V, stop 25),
    # 512 at 4 x 7^2 was a tie through kernels.conv2d: winograd 9.73 and
    # 8.79 ms against direct's 8.88 and 10.0 in two sweeps.
    "winograd_min_pixels": 49,
    # ... and at least this many output positions over the batch (N Ho Wo:
    # the tuple GEMMs' columns, over which each call's filter transform,
    # or its cache check, is spread).  Zen 3, C = K = 512 at 7^2: direct
    # 2.01 ms, winograd 3.08 at batch 1 (49 positions); 10^2 batch 1
    # (100) a tie, 4.28 / 4.24; 256 at 2 x 8^2 (128) winograd 1.31x
    # faster, at 1 x 13^2 (169) 1.11x.
    "winograd_min_positions": 128,
    # ... or, on maps of at least 14^2, at least this many multiply-adds
    # over the batch, weighted by the share of the default tile's outputs
    # that are real (kernels._choose: WINOGRAD_MACS_MIN_PIXELS, _tiled_macs,
    # and a bound on the filter elements per output position).  On the
    # AVX-512 Xeon VM, with direct's channel tile, Winograd's crossover
    # followed the multiply-adds once the channels were 128 or more.
    # 1e9 (2026-12-04): direct's time over Winograd's, alternated in one
    # process, 512@28^2 batch 1 (1.85e9) 1.27, batch 8 1.50; 256@28^2
    # batch 4 (1.85e9) 1.19; 256@56^2 batch 1 (1.85e9) 1.17; 512@14^2
    # batch 8 (3.7e9) 1.17; 4.6e8 layers 0.58-0.94.  4e8 since the tuple
    # GEMMs run the panel tile (stop 35, /tmp/s35/wd.py, inputs out of
    # cache, two runs): 128@28^2 x 4 (4.6e8) 1.19, 1.29; 256@28^2 x 1
    # (4.6e8) 1.16, 1.07; 128@56^2 1.09, 1.16; 512@14^2 x 4 1.16, 1.11;
    # 512@28^2 and 256@56^2 x 1 1.32, 1.29; kept out: 256@14^2 x 4 1.01,
    # 0.87 (14^2 counts 0.77: F(4,3) covers 16^2), 512@14^2 x 2 0.96, 0.92
    # and x 1 0.59, 0.57 (the filter-elements bound), 128@28^2 x 2 (2.3e8)
    # 1.01, 1.11.  Not measured on AVX2, where it is off (the pixel and
    # position limits alone).
    "winograd_min_macs": 4.0e8 if host_vector_bits() == 512 else float("inf"),
    # ... or, for deep layers (C and K >= 256, kernels._choose:
    # WINOGRAD_DEEP_MIN_CHANNELS), at least this many output positions on
    # maps of any size, since Winograd transforms the filters of such
    # layers inside its GEMMs when their tiles are few (2026-12-05, Xeon
    # VM, caches cold: a 96 MB pass before each call, 15 alternated calls,
    # direct's time over Winograd's): 512@7^2 batch 1 (49 positions)
    # 0.70, batch 2 (98) 0.87, batch 4 (196) 1.35, batch 8 (392) 1.63;
    # 256@14^2 batch 1 (196) 1.04-1.13, batch 4 1.14; 256@7^2 batch 4
    # 1.03-1.17; 512@14^2 batch 1 1.06; 1024@7^2 batch 1 0.77.  Not
    # measured on AVX2: off there.  Not calibrated (the calibration's
    # Winograd probes have 64-128 channels).
    "winograd_deep_min_positions": 196 if host_vector_bits() == 512 else float("inf"),
    # ... or, for layers of 64 channels or more (3x3 or 5x5, C and K >=
    # kernels._choose.WINOGRAD_MID_MIN_CHANNELS), at least this many
    # output positions over the batch, below winograd_min_channels (128
    # on AVX-512).  Since Winograd's fused jobs copy their own input
    # region (stop 39), 64-channel layers with many tiles run it faster
    # than direct's channel tile (2026-12-05, stop 40, Xeon VM, defaults,
    # caches cold: a 32 MB pass before each call, 21 alternated calls,
    # direct's time over Winograd's, median of the paired ratios):
    # C = K = 64, 3x3: 28^2 x 2 (1568 positions) 1.00, 1.01; 32^2 x 2
    # (2048) 1.23; 48^2 (2304) 1.30; 56^2 (3136) 1.17, 28^2 x 4 1.19;
    # 56^2 x 2 1.28, x 4 1.43; 112^2 1.37; 224^2 1.55; below: 28^2 (784)
    # 0.92, 14^2 x 4 (784) 0.73.  64 -> 128 at 56^2 1.23 (784: 0.85),
    # 128 -> 64 at 56^2 1.13 (784: 0.67), 96 at 56^2 1.17, at 28^2 x 4
    # 1.16; 5x5 64 at 32^2 x 2 (2048) 1.11, 56^2 1.10.  1792 is between
    # 1568 and 2048.  float64 crosses later (the choice does not depend on
    # the dtype): 64@56^2 0.97, 32^2 x 2 0.96, 28^2 x 2 0.86, 56^2 x 4
    # 1.43, 112^2 1.38, 64 -> 128 at 56^2 1.13.  Off on AVX2, where the
    # channel limit is 64 already.
    "winograd_mid_min_positions": 1792 if host_vector_bits() == 512 else float("inf"),
    # ... and, for layers whose output channels only just pass
    # winograd_min_channels (under twice it: 128-255 on AVX-512), at least
    # this many output positions over the batch (N Ho Wo), unless the
    # rules above send them to Winograd.  Since its output transform
    # stores vectors (stop 46), Winograd runs 128-channel layers on
    # small maps faster than direct's channel tile (Xeon VM, defaults,
    # caches cold: a 32 MB pass before each call, 25 alternated calls,
    # direct's time over Winograd's, median of the paired ratios): C = K
    # = 128, 3x3: 28^2 (784 positions) 1.37, 21^2 (441) 1.10 and 1.30,
    # 18^2 (324) 1.23, 14^2 x 2 (392) 1.00, 14^2 (196) 0.83; 14^2 x 4
    # (784) 1.19, 7^2 x 16 1.57; 160 at 28^2 1.52.  416 is between 392
    # and 441.  Not calibrated; 1568 (kernels._choose.
    # WINOGRAD_NARROW_MIN_POSITIONS) on AVX2, not measured there since.
    "winograd_narrow_min_positions": 416 if host_vector_bits() == 512 else 1568,
    # im2col only when each group has at least this many output channels ...
    "im2col_min_out_channels": 8,
    # ... and kernels of at most this area (kH * kW); larger ones run
    # direct.  With im2col's BLAS serial and direct reading its weights in
    # place, direct beat im2col at every k >= 3 (C = K = 16..256 at
    # 14^2..64^2, 1.2-4.7x; ResNet-50's 3x3 layers 1.2-2.1x, conv1 7x7/2
    # 1.8x); im2col won the 1x1 layers (a plain GEMM, 1.1-1.5x).
    "im2col_max_area": 1,
    # ... or, for strided layers, reductions (C/g kH kW) of at least this
    # many steps.  Zen 3 only (2026-12-03, /tmp/s27/s2b.py, stride-2 3x3,
    # direct / im2col): C = K = 128 at 56^2 1.06-1.07 at batch 1 (1.01-1.13
    # at 4), 256 at 28^2 1.13-1.18, 512 at 14^2 1.30-1.76, 1024 at 14^2
    # 1.32-1.97; 64 at 56^2 0.79-1.08; C -> 2C 0.96-1.16.  convbench
    # calibrate measures it (C = K at 56^2, batch 1).  576 since
    # 2026-12-04, after the GEMM's even job split (s2pair.py, paired in
    # one process, direct's time over im2col's): 3x3/2 at batch 1, C = K
    # = 64 at 56^2 1.10, 128 at 56^2 1.22, 256 at 28^2 1.28, 64 -> 128
    # 1.19, 128 -> 256 1.21; batch 4, 64 1.07, 128 1.20; below 576, 48
    # (432) 1.04, 32 (288) 0.96 and 0.86 at batch 4.  Kernels larger than
    # 3x3 also need 96 input channels (IM2COL_STRIDED_WIDE_MIN_CHANNELS).
    "im2col_min_depth_strided": 576,
    # ... and at least this many output positions (N Ho Wo): none on
    # AVX-512, where direct runs strided layers with its channel tile
    # (stop 35).  Xeon VM, stride-2 3x3, C = K, inputs out of cache,
    # alternated in one process, im2col's time over direct's (/tmp/s35/
    # strided.py, three runs where repeated): 64@56^2 1.11, 1.05, 0.83,
    # x 4 1.17; 128@56^2 0.91, 1.01, 1.09, x 4 1.11, 1.15, 1.13; 256@28^2
    # 1.24, x 2 1.21, x 4 1.32, x 8 1.34; 512@14^2 (pixel tile: too many
    # filter bytes per position for the channel tile) 1.16, x 4 1.28,
    # x 8 1.08, x 16 1.07; 1024@14^2 1.05; 128@28^2 1.38; 256@14^2 1.50;
    # 64@112^2 0.97, 0.94, 1.08.  Before the channel tile took strided
    # layers, with the pixel tile, 392 (im2col's time over direct's: 49
    # positions 1.44, 196 1.11-1.34, 392 0.97-1.05, 784 1.00-1.06).  On the
    # Zen 3 (AVX2, no channel tile) im2col won at 196 positions (256@28^2,
    # 1.28x): no floor there.  Not calibrated.
    "im2col_min_positions_strided": (float("inf") if host_vector_bits() == 512
                                     else 0),
    # ... unless the output has fewer positions (N Ho Wo) than one BLAS
    # piece (64 columns: one thread) and more multiply-adds than this.
    # MobileNet 1x1 convs at 7^2: im2col won 960 -> 160 (7.5e6: 0.32 vs
    # 0.42 ms), tied 960 -> 320 (1.5e7), lost 320 -> 1280 (2.0e7: 0.77 vs
    # 0.54) and 1024 -> 1024 (5.1e7: 2.2 vs 1.06).  convbench calibrate
    # (C = K at 7^2): within noise, the crossover moving from 3.2e6 to
    # 1.3e7 between repeats; im2col_max_area's probe (C = K = 64 at 28^2)
    # found direct 1.15x faster even at 1x1 (an edge), against im2col's
    # wins on MobileNet's 1x1 layers at 56^2-112^2: both kept.
    # direct_max_macs' probe (3x3, C = K = 16 up to 64^2) found direct
    # fastest throughout (an edge at 1.9e7): kept at 2e6, as 1x1 layers of
    # 1-2e7 multiply-adds went to im2col (MobileNet-v2 24 -> 144 at 56^2:
    # 0.40 vs direct's 0.48 ms).
    # 2026-12-02, after im2col's 1x1 path changed (9 repeats, MobileNet-v2
    # at batch 1, 7^2 maps): direct 1.21x faster at 7.5e6 (160 -> 960),
    # 1.23x at 1.5e7 (960 -> 320), a tie at 7.5e6 (960 -> 160); the probe
    # found direct faster from its first size (an edge at 4.0e5).
    "im2col_serial_max_macs": 5.0e6,
}


# --------------------------------------------------------------------------
# Per-algorithm records
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class BlasTuning:
    # A product is split into column pieces of at least this many columns
    # (and a multiple of 16, one 64-byte line of float32) ...
    min_piece_columns: int = 64
    # ... when it has at least this many multiply-adds; below, handing a
    # piece to another thread (~20 us) costs more than it saves.
    min_parallel_macs: int = 1 << 21


@dataclass(frozen=True)
class DirectTuning:
    # Multiply-adds up to which the whole convolution runs on one thread.
    # C = K = 16 at 28^2 (1.8 M multiply-adds): serial 63 us; parallel
    # 50 us right after another launch, 250-270 us when the other worker
    # had gone to sleep (waking a halted virtual CPU), the usual case
    # between the layers of a small network.
    serial_max_macs: int = 2_000_000
    # A task computes a run of consecutive column tiles of one channel
    # block, with at most this many taps times columns (its inputs stay in
    # L2 for the next block's task), and at most max_run_columns of them.
    # Layers with few taps per output are bound by their stores, which a
    # run keeps sequential within each output plane.
    run_taps: int = 2048
    max_run_columns: int = 64
    # ... unless a group's filters exceed this many bytes and one image's
    # packed input does not: then a task takes all of an image's column
    # tiles (up to max_run_columns), so that each block of filters is read
    # once per image instead of once per run.  Deep layers on small maps
    # stream their filters: ResNet-50's 256@14^2 (2.4 MB of filters, 0.26
    # MB of input), paired in one process, runs of one tile over runs of
    # four 1.042 at batch 1, 1.049 at batch 4; in separate processes
    # 128@28^2 (0.6 MB of filters) and 64@56^2 ran 5-20 % slower in long
    # runs, hence the bound (Xeon VM, 2 MiB L2).  Half the core's L2.
    filter_bound_bytes: int = dataclasses.field(
        default_factory=lambda: l2_bytes() // 2)
    # The channel tile (kernels.cpu._direct_channels) computes a parallel
    # call it applies to where the group's filters take at most this many
    # bytes per output position (images x pixels); 0 turns it off.  It
    # repacks the filters on every call, which the pixel tile does not.
    # Against the pixel tile (Xeon VM, paired): 256@14^2 batch 1 (12 KiB a
    # position) 1.16, 512@14^2 batch 1 (48 KiB) 0.93, batch 4 (12 KiB)
    # 1.16; 128@28^2 batch 1 (0.75 KiB) 1.30.  Off on AVX2, where it was
    # not measured.
    channel_tile_max_filter_bytes_per_position: int = dataclasses.field(
        default_factory=lambda: 24 * 1024 if host_vector_bits() == 512 else 0)


@dataclass(frozen=True)
class Im2colTuning:
    # Most scratch (patch matrix of one chunk, plus its GEMM result when
    # images are merged) one call may allocate; $CONVBENCH_IM2COL_SCRATCH
    # sets the default ('64M', '1G', bytes).
    scratch_limit: int = dataclasses.field(default_factory=_default_scratch)
    # Images with fewer output positions than this are merged into one
    # GEMM (batch 4, ResNet-50 3x3 layers: 512 ch at 7x7 15 % faster
    # merged, 256 ch at 14x14 4 %, larger maps unchanged).
    merge_below_positions: int = 512
    # Preferred scratch of one chunk: still in L3 when the GEMM reads it,
    # large enough to amortise the chunk's synchronisation.  ms for 4 / 8
    # / 16 / 64 MiB: ResNet-50 64@56^2 batch 4 4.41 / 3.53 / 3.51 / 3.50;
    # 1-D 10^6 samples, C = K = 16, k = 9: 63 / 35 / 38 / 58.
    cache_target_bytes: int = 8 * 2**20
    # ... while the GEMM keeps at least this many columns.
    min_gemm_columns: int = 256
    # The GEMM's jobs pack their panels from the (zero-padded) images
    # instead of a gathered patch matrix, where one padded image fits the
    # scratch limit.
    pack_from_image: bool = True
    # 1x1 layers whose reduction (input channels per group) is at least
    # this run their product with output channels in the lanes
    # (kernels/cpu/_pointwise.py) where it applies; 0: never.  On AVX-512
    # (Xeon VM, docs/performance.md section AS), the panel GEMM's time
    # over it on ResNet-50's 1x1 layers: 1.02-1.34 from 256 channels on,
    # 0.89 at 128 (128 -> 512 @ 28^2), 0.73-0.83 at 64.  Off on AVX2,
    # where it was not measured.
    channel_lanes_min_depth: int = dataclasses.field(
        default_factory=lambda: 256 if host_vector_bits() == 512 else 0)


@dataclass(frozen=True)
class WinogradTuning:
    # Scratch per parallel job, bytes: half the core's L2, leaving the rest
    # to the packed GEMM operands (ResNet-50 128@28^2, batch 4, F(4,3):
    # 512 KiB best on the 1 MiB-L2 Zen 4; on a 2 MiB-L2 Xeon 1 MiB blocks
    # ran 5.1-5.3 ms, 512 KiB 6.0-6.2 ms).
    block_budget: int = dataclasses.field(
        default_factory=lambda: max(256 * 1024, min(4 << 20, l2_bytes() // 2)))
    # Transformed filters below this size run the fused path.  ResNet-50's
    # 256@14^2 with F(2,3) has U = 4 MiB: fused 0.73-0.75 ms against
    # staged 0.94-0.96 at batch 1, 3.0-3.7 against 4.5-4.7 at batch 4
    # (2-vCPU Zen 4, 1 MiB L2); 512@7^2's 16 MiB U stays staged (fused
    # 4.7-5.1 ms against 3.0 at batch 1).
    fused_max_u_bytes: int = 6 * 2**20
    # On AVX-512, since the tuple GEMMs run the panel tile (stop 35), a U
    # above this runs staged too unless the staged path's V and M would
    # take at least fused_min_staged_bytes (then they leave the caches).
    # 1 MiB until stop 43; since the fused jobs read x themselves (stop
    # 40), a U of 2.25 MiB (128 channels, F(4,3)) runs fused faster with
    # caches cold and no slower warm.  Xeon VM (docs/performance.md
    # section AO), staged time over fused, alternated in one process,
    # 21 calls, each after a 128 MB write and a 30 ms sleep / back to
    # back: 128@28^2 at batch 1, 2, 4, 8 1.26 / 1.04, 1.13 / 1.04, 1.17
    # and 1.16 / 0.94 and 0.98, 1.15 / 0.97; 112 and 96 channels at batch
    # 4 1.11 / 1.00, 1.12 / 0.99; but 144, 160 and 192 channels (U 2.85,
    # 3.5, 5.1 MiB) 0.90-1.04 / 0.65-0.84.  Not measured on AVX2: the old
    # rule.
    fused_small_u_bytes: int = dataclasses.field(
        default_factory=lambda: (5 << 19) if host_vector_bits() == 512
        else 6 * 2**20)
    fused_min_staged_bytes: int = 16 * 2**20
    # A U above this lets fewer tiles keep the larger tile (see
    # winograd.tile_for_problem).
    large_u_bytes: int = 4 * 2**20
    transform_budget: int = 256 * 1024
    # Tuple GEMMs with fewer rows (tiles) than this fall back to m = 2 ...
    min_gemm_rows: int = 32
    # ... or than this with a U above large_u_bytes.
    min_gemm_rows_large_u: int = 16
    # A problem that runs staged with at most this many tiles in the batch
    # transforms its filters inside the tuple GEMMs' jobs instead of using
    # the weight cache (winograd._streams_filters) ...
    streamed_max_tiles: int = 64
    # ... and so does a problem the cached path would run fused, with as
    # few tiles, a U larger than this (the core's L2: a network's other
    # layers evict it between calls) and a strip of output channels for
    # every thread.  ResNet-50's 128@28^2 at batch 1 (49 tiles, U 2.25
    # MiB, 2 strips), inside the network's sequence, Xeon VM: the three
    # calls summed 0.77-0.88x the cached path's time in five processes;
    # 64@56^2 (196 tiles) streamed took 1.4x its cached time
    # (docs/performance.md section AW).
    streamed_min_fused_u_bytes: int = dataclasses.field(
        default_factory=l2_bytes)
    # ... a block of this many input channels at a time, or, with at
    # least streamed_many_tiles tiles, of streamed_c_block_many: more
    # tiles make more passes of the GEMM over each block, fewer tiles
    # leave the filter transforms to dominate, which smaller blocks keep
    # closer.  Xeon VM, 2 threads, 21-41 alternated calls, time with 32
    # channels over 64, back to back / each after a 30 ms sleep: 256@14^2
    # x 4 (64 tiles) 1.04 / 1.05, 1.01 / 1.08, 512@7^2 x 8 (32) 1.01 /
    # 1.09, 256@14^2 x 2 (32) 1.06 / 1.06; below 32 tiles 256@14^2 x 1
    # (16) 0.99 / 0.98, 1.04 / 0.83, 512@7^2 x 2 (8) 1.01 / 0.99, x 1
    # (4) 1.00 / 0.95, but 512@7^2 x 4 (16) 1.04-1.21 / 0.99-1.03
    # (docs/performance.md section AP).
    streamed_c_block: int = 32
    streamed_c_block_many: int = 64
    streamed_many_tiles: int = 32
    # Where both tiles would stream, F(2,3) replaces F(4,3) when
    # alpha^2 (tiles + this) is smaller (winograd._cheaper_streamed_tile):
    # the filter transforms cost about as much as this many tiles' tuple
    # GEMMs.  Xeon VM, 2 threads, 15 shuffled calls in each of three
    # processes, time of F(4,3) over F(2,3) cold / warm: 256@14^2 x 1
    # (16 tiles against 49) 1.14 / 1.08, 1.14 / 1.08, 1.07 / 1.01; 512@14^2
    # x 1 1.11 / 1.08, 0.99 / 1.08, 1.07 / 1.08; but 256@14^2 x 2 (32
    # against 98) 0.96, 0.85, 0.95 / 0.99, 0.89, 0.93 and 512@7^2 x 4
    # (16 against 64) 0.85-0.89 / 0.85-0.87: between 10.4 and 20.8 (section AQ).
    streamed_filter_tiles: int = 16


@dataclass(frozen=True)
class FFTTuning:
    # Tiles per chunk of the staged path keep the chunk's spectra (input
    # and output) below this: bounded memory, spectra in the LLC between
    # stages.
    chunk_bytes: int = 16 * 2**20
    # Task path (few channels): a block's buffers fit in this ...
    task_bytes: int = 1 << 20
    # ... at least this many blocks per thread (block_shape_threads()) ...
    tasks_per_thread: int = 4
    # ... unless a block would hold less modelled work than this
    # (seconds; a block costs ~20 us of Python on top).
    min_task_seconds: float = 100e-6
    # Task plans (blocks, phase tables, worker buffers, bound FFTW plans)
    # kept while their buffers total at most this.
    task_plan_bytes: int = 64 * 2**20


@dataclass(frozen=True)
class TransposedTuning:
    # Bound on the im2col column matrix of one band; None: im2col's
    # scratch limit.
    scratch_limit: int | None = None


@dataclass(frozen=True)
class CpuTuning:
    blas: BlasTuning = BlasTuning()
    direct: DirectTuning = DirectTuning()
    im2col: Im2colTuning = dataclasses.field(default_factory=Im2colTuning)
    winograd: WinogradTuning = dataclasses.field(default_factory=WinogradTuning)
    fft: FFTTuning = FFTTuning()
    transposed: TransposedTuning = TransposedTuning()


_DEFAULT = CpuTuning()
_current = contextvars.ContextVar("convbench_cpu_tuning", default=None)


def current():
    """The :class:`CpuTuning` in force in this thread."""
    override = _current.get()
    return _DEFAULT if override is None else override


def defaults():
    """The process-wide tuning (what :func:`current` gives outside any
    :func:`override`)."""
    return _DEFAULT


def _changed(tuning, changes):
    names = [f.name for f in dataclasses.fields(CpuTuning)]
    updates = {}
    for name, value in changes.items():
        if name not in names:
            raise TypeError(f"no tunables named {name!r}; known: "
                            f"{', '.join(names)}")
        record = getattr(tuning, name)
        updates[name] = (dataclasses.replace(record, **value)
                         if isinstance(value, dict) else value)
    return dataclasses.replace(tuning, **updates)


@contextlib.contextmanager
def override(**changes):
    """Change tunables for the calls inside the ``with`` block.

    Each keyword names an algorithm's record (``fft``, ``im2col``, ...) and
    takes a dict of its fields or a whole record::

        with override(fft=dict(chunk_bytes=1), im2col=dict(min_tasks=1)):
            ...

    Unknown algorithms or fields raise ``TypeError``.
    """
    token = _current.set(_changed(current(), changes))
    try:
        yield _current.get()
    finally:
        _current.reset(token)


def set_defaults(**changes):
    """Change the process-wide tunables (as :func:`override`, without a
    block); returns the previous :class:`CpuTuning`, which
    ``set_defaults(**vars(previous))`` restores."""
    global _DEFAULT
    previous = _DEFAULT
    _DEFAULT = _changed(_DEFAULT, changes)
    return previous
