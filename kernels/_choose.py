"""``algorithm="auto"``: pick the algorithm expected to be fastest.

The choice is a public function, :func:`choose_algorithm`, so that it can
be inspected and tested on its own (as ``scipy.signal.choose_conv_method``).
Without ``measure`` it uses a cost model whose thresholds are the
backend's own (``kernels/<backend>/_tuning.py``, ``AUTO_THRESHOLDS``),
overridden by a calibration file for this backend and machine when one
exists (:mod:`kernels._calibration`).  It only ever returns an algorithm
that is built for the backend and supports the problem.
:func:`choose_transposed_algorithm` does the same for transposed
convolution with the same thresholds.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np

from . import _dispatch
from ._calibration import load_thresholds
from ._dispatch import ConvSpec
from ._validation import int_tuple, normalise_padding
from ._winograd_math import DEFAULT_TILE_BY_KERNEL

__all__ = ["choose_algorithm", "choose_transposed_algorithm", "candidates",
           "default_thresholds", "thresholds", "thresholds_key",
           "NEUTRAL_THRESHOLDS",
           "one_d_fft_factor"]

# For a backend without measured thresholds: direct whenever it is built
# (the one algorithm every backend is expected to have), no fast
# algorithm by size alone.
NEUTRAL_THRESHOLDS = {
    "direct_max_macs": float("inf"),
    "direct_max_macs_fc": float("inf"),
    "direct_max_macs_pointwise": float("inf"),
    "fft_min_area_single": float("inf"),
    "fft_min_area_few": float("inf"),
    "fft_min_area_multi": float("inf"),
    # (measured on the Zen 4 CPU; also the value of tables without it)
    "fft_1d_area_factor": 0.4,
    "fft_1d_area_factor_single": 0.4,
    "winograd_min_channels": float("inf"),
    "winograd_min_pixels": float("inf"),
    # (a rule added after the first tables: no limit of its own there)
    "winograd_min_positions": 0,
    # (a rule added 2026-12-04: none in the tables before it)
    "winograd_min_macs": float("inf"),
    # (a rule added 2026-12-05: none in the tables before it)
    "winograd_deep_min_positions": float("inf"),
    # (a rule added 2026-12-05, stop 40: none in the tables before it)
    "winograd_mid_min_positions": float("inf"),
    # (a module constant, WINOGRAD_NARROW_MIN_POSITIONS, until stop 46:
    # its value for the tables before it)
    "winograd_narrow_min_positions": 1568,
    # (5x5 layers had half of winograd_min_channels before stop 40)
    "winograd_min_channels_5x5": float("inf"),
    "im2col_min_out_channels": float("inf"),
    "im2col_max_area": 0,
    "im2col_min_depth_strided": float("inf"),
    # (a rule added 2026-12-04: no floor in the tables before it)
    "im2col_min_positions_strided": 0,
    "im2col_serial_max_macs": float("inf"),
}

#: Channel products (C/groups * K/groups) at which the three FFT area
#: thresholds were measured; :func:`fft_min_area` interpolates between
#: them in log2(C*K) and holds the end values beyond.
FFT_AREA_CHANNELS = {"fft_min_area_single": 1, "fft_min_area_few": 16,
                     "fft_min_area_multi": 4096}

#: im2col's 1x1 GEMM is one piece (one thread) when both the output
#: positions (N * Ho * Wo) and the output channels per group are fewer
#: than this: the CPU BLAS splits the longer of them into pieces of at
#: least 64 (BlasTuning).
IM2COL_SERIAL_POSITIONS = 64

#: A single-channel 2-D image smaller than 1024^2 reaches FFT at a larger
#: kernel, as FFT's fixed costs per call weigh more on a smaller image:
#: the area threshold (measured at 1024^2) is multiplied by a factor
#: interpolated in log2(H W) and log(factor) between these (pixels,
#: factor) points, and held at the ends.  Crossovers measured 2026-12-02
#: (``convbench sweep``, 9 repeats, direct vs fft): 256^2 direct faster to
#: k = 23 (area 529), fft from 25 (625): area ~575; 512^2 direct at k = 15
#: (1.40-1.63 ms vs fft 1.67-2.42 in-process, 1.84 vs 2.46-2.57 isolated,
#: and 1.18x, 1.22x in two earlier sweeps), fft from 17 or 19 in three
#: sweeps: ~286; 1024^2 fft from k = 15 in every sweep: the default 197.
FFT_SINGLE_SIZE_FACTORS = ((1 << 16, 575 / 197), (1 << 18, 286 / 197),
                           (1 << 20, 1.0))

#: A 1-D problem with several channels reaches FFT at an area (kernel
#: length) that falls further with the channels than the 2-D one, which is
#: held beyond C*K = 4096, and rises on short signals, where FFT's fixed
#: costs weigh more.  Its threshold (``fft_min_area`` times
#: ``fft_1d_area_factor``, calibrated on 3 -> 16 channels, C*K = 48) is
#: multiplied by a factor interpolated in log2(C*K) and log(factor)
#: between these (C*K, factor) points, held at the ends, and by ``1 +
#: ONE_D_FFT_FIXED_SAMPLES / (Lo sqrt(N))``.  Crossovers measured on the
#: Xeon VM (2026-12-05, conv1d, C = K, batch 1, caches cold, 7 alternated
#: calls; docs/performance.md section AN), the kernel length from which
#: FFT beats direct and im2col, by signal length 1024 / 4096 / 16384 /
#: 65536: 32 channels > 63 / ~70 / ~45 / ~40; 64: ~70 / ~26 / ~20 / -;
#: 128: ~28 / ~12 / ~8 / -; 256: ~16 / ~8 / - / -.  The long-signal
#: lengths 38, 16.8, 6.7 and 4.6 over the former threshold (28.4 at C*K =
#: 1024, 14.8 from 4096 on) give the factors; the former threshold sent 64
#: channels at k = 15 to FFT at 0.40-0.88x direct's speed and kept 256
#: channels at k = 9 on direct at 1.17x FFT's time.
ONE_D_FFT_CHANNEL_FACTORS = ((48, 1.0), (1024, 38 / 28.4), (4096, 16.8 / 14.8),
                             (16384, 6.7 / 14.8), (65536, 4.6 / 14.8))

#: Samples at which FFT's fixed costs double a 1-D threshold (see above):
#: 4096 samples need 1.75x the long-signal length, 1024 4x.  A batch counts
#: as the square root of its images: 4 x 4096 and 16 x 1024 samples of
#: 128 channels at k = 9 ran FFT 0.86x and 0.92x direct's speed, one
#: signal of 16384 1.13x; 64 channels at k = 21 0.92x and 1.08x, 1.04x.
ONE_D_FFT_FIXED_SAMPLES = 3072

#: Output positions (N * Ho * Wo) Winograd needs when its output channels
#: only just pass ``winograd_min_channels`` (under twice it): the neutral
#: value of the threshold ``winograd_narrow_min_positions`` and the CPU's
#: default on AVX2 (on AVX-512: kernels/cpu/_tuning.py).  C = K = 64,
#: 3x3, through ``kernels.conv2d``, direct's time over Winograd's (11
#: shuffled rounds, Xeon VM, 2026-12-03, with the unrolled transforms and
#: register-tile GEMMs): 14^2 (196 positions) 0.80, 28^2 (784) 0.92,
#: 56^2 (3136) 1.18, 28^2 x 4 (3136) 1.24, 56^2 x 2 1.27; the threshold
#: is between 784 and 3136, at their geometric mean.  (Before those
#: changes 56^2 at batch 1 ran direct 1.04-1.19x faster: 6272.)
WINOGRAD_NARROW_MIN_POSITIONS = 1568

#: A 3x3 layer with half the input channels Winograd needs (C at least
#: ``winograd_min_channels / 2``) still runs Winograd on images of at
#: least this many pixels (H * W): the tuple GEMMs are shallow, but the
#: tiles are many.  Jet images' 32 -> 64 layer (direct's time over
#: Winograd's, medians over 7 rounds of isolated workers, 2026-12-02):
#: 64^2 x 256 1.10 (1.26 and 1.24 in two sweeps), 96^2 x 64 1.04,
#: 128^2 x 32 1.27, 64^2 x 16 1.07, 32 -> 128 at 64^2 0.97; below,
#: 56^2 0.87, 48^2 0.96, 40^2 0.81, 33^2 0.71 and 25^2 (sweeps) 0.8.
WINOGRAD_HALF_CHANNELS_MIN_PIXELS = 4096

#: Layers of at least ``winograd_min_macs`` multiply-adds (over the batch)
#: go to Winograd whatever their pixels and positions, on maps of at least
#: this many pixels: F(4,3) computes 8^2 for a 7^2 map, and 512@7^2 at
#: batch 4 ran Winograd 1.4-1.5x slower than direct on the Xeon VM
#: (section AF of docs/performance.md), while 512@14^2 at batch 8 ran it
#: 1.17x faster.
WINOGRAD_MACS_MIN_PIXELS = 196

#: ... and only with at most this many filter elements per output
#: position (N * Ho * Wo): a large U read for few tiles.  Xeon VM, float32,
#: direct's time over Winograd's (stop 35, tuple GEMMs on the panel
#: tile): 512@14^2 batch 1 (12288 elements, 48 KiB, a position) 0.59,
#: 0.57, batch 2 (6144) 0.96, 0.92, batch 4 (3072) 1.16, 1.11; 512@28^2
#: batch 1 (3072) 1.32.  Counted in elements, not bytes: the choice does
#: not depend on the dtype (it is memoised without it).
WINOGRAD_MACS_MAX_FILTER_ELEMENTS_PER_POSITION = 3072

#: Input and output channels (per group) from which a 3x3 stride-1 layer
#: is *deep*: it runs Winograd from ``winograd_deep_min_positions`` output
#: positions over the batch, whatever its map's pixels (see that
#: threshold in the CPU's tuning).
WINOGRAD_DEEP_MIN_CHANNELS = 256

#: Input and output channels (per group) from which a 3x3 or 5x5
#: stride-1 layer runs Winograd from ``winograd_mid_min_positions``
#: output positions over the batch (on maps of ``winograd_min_pixels``),
#: even below ``winograd_min_channels``: 64, ResNet's and VGG's first
#: stage (see that threshold in the CPU's tuning).
WINOGRAD_MID_MIN_CHANNELS = 64

#: A strided layer with a kernel larger than 3x3 goes to im2col only with
#: at least this many input channels per group, whatever
#: ``im2col_min_depth_strided`` (calibrated on 3x3 layers) says; see the
#: rule in :func:`_model_choice`.
IM2COL_STRIDED_WIDE_MIN_CHANNELS = 96


def default_thresholds(backend="cpu"):
    """The backend's measured defaults (``NEUTRAL_THRESHOLDS`` if none)."""
    return dict(_backend_defaults(_dispatch.backend_tuning(backend))[0])


def machine_key(backend="cpu"):
    """The backend's machine fingerprint for calibration files."""
    return json.loads(_backend_defaults(_dispatch.backend_tuning(backend))[1])


def _complete(table):
    """A backend's thresholds with every rule's: a table written before a
    rule existed gets the neutral value, except the fully connected and
    pointwise limits (the general limit, the rule they refine), the 5x5
    channel limit (half the 3x3 one, as before it existed) and the FFT
    areas, which
    :func:`fft_min_area` interpolates between the points given."""
    if table is None:
        return dict(NEUTRAL_THRESHOLDS)
    out = dict(NEUTRAL_THRESHOLDS)
    for refined in ("direct_max_macs_fc", "direct_max_macs_pointwise"):
        out[refined] = table.get("direct_max_macs", out["direct_max_macs"])
    # 5x5 layers had half the 3x3 channel limit before they had their own.
    out["winograd_min_channels_5x5"] = table.get(
        "winograd_min_channels", out["winograd_min_channels"]) / 2
    for name in FFT_AREA_CHANNELS:
        out[name] = None
    out.update(table)
    return out


@functools.lru_cache(maxsize=32)
def _backend_defaults(tuning):
    """``(sorted threshold items, machine key as JSON)`` of a backend's
    ``_tuning`` module (None: none), computed once: "auto" asks for the
    thresholds on every call."""
    table = getattr(tuning, "AUTO_THRESHOLDS", None)
    key = getattr(tuning, "machine_key", None)
    return (tuple(sorted(_complete(table).items())),
            json.dumps({} if key is None else key(), sort_keys=True))


def _thresholds_in_force(backend):
    """:func:`thresholds` as sorted ``(name, value)`` items (hashable)."""
    defaults, machine = _backend_defaults(_dispatch.backend_tuning(backend))
    return load_thresholds(backend, defaults, machine)


def thresholds(backend="cpu"):
    """The thresholds in force: defaults, or this machine's calibration."""
    return dict(_thresholds_in_force(backend))


def thresholds_key(backend="cpu"):
    """The thresholds in force as sorted ``(name, value)`` items: the same
    object while they do not change (what a cache of choices made under
    them compares by identity)."""
    return _thresholds_in_force(backend)


def candidates(spec, backend="cpu"):
    """Built algorithms that support ``spec``, in ALGORITHMS order."""
    return [a for a in _dispatch.built_algorithms(backend)
            if _dispatch.unsupported_reason("conv2d", backend, a, spec) is None]


def _log_log_factor(points, at):
    """The factor at ``at`` of ``points`` ((x, factor), ...), interpolated
    linearly in log2(x) and log(factor), held at the ends."""
    xs = [np.log2(x) for x, _ in points]
    ys = [np.log(f) for _, f in points]
    return float(np.exp(np.interp(np.log2(max(at, 1)), xs, ys)))


def single_channel_size_factor(pixels):
    """Factor on the single-channel FFT area threshold for an image of
    ``pixels`` (see ``FFT_SINGLE_SIZE_FACTORS``)."""
    return _log_log_factor(FFT_SINGLE_SIZE_FACTORS, pixels)


def one_d_fft_factor(cg, kg, n_img, out_len):
    """Factor on a multi-channel 1-D problem's FFT area threshold (see
    ``ONE_D_FFT_CHANNEL_FACTORS`` and ``ONE_D_FFT_FIXED_SAMPLES``)."""
    channels = _log_log_factor(ONE_D_FFT_CHANNEL_FACTORS, cg * kg)
    samples = max(out_len, 1) * np.sqrt(max(n_img, 1))
    return channels * (1 + ONE_D_FFT_FIXED_SAMPLES / samples)


def fft_min_area(cg, kg, t):
    """Kernel area from which FFT is chosen, for ``cg`` input and ``kg``
    output channels per group, under thresholds ``t``.

    Per output point FFT pays transforms in proportion to C + K and a
    spectral product in proportion to C * K; direct pays C * K * area.
    So the area at which FFT wins falls from its single-channel value
    (transforms dominate) towards a many-channel floor (the spectral
    product dominates).  It is measured at three channel products
    (:data:`FFT_AREA_CHANNELS`: C = K = 1, 4 and 64) and interpolated
    linearly in log2(C * K) between them.  A single fixed
    "multi-channel" area sent C = K = 4 at 128^2 to FFT from k = 7 while
    direct was 2.4-3.2x faster there.
    """
    # Points a backend does not give (None) are left out; infinite ones
    # (no FFT by size) are not interpolated through.
    points = sorted((FFT_AREA_CHANNELS[name], t[name])
                    for name in FFT_AREA_CHANNELS if t.get(name) is not None)
    if not points:
        return float("inf")
    x = np.log2(max(1, cg * kg))
    xs = [np.log2(ck) for ck, _ in points]
    values = [area for _, area in points]
    if any(np.isinf(values)):
        i = int(np.argmin([abs(x - xi) for xi in xs]))
        return values[i]
    return float(np.interp(x, xs, values))


def _tiled_macs(macs, out_h, out_w, r):
    """``macs`` times the share of the outputs that Winograd's default
    tile for an r x r kernel computes which are real: a 14^2 map is
    covered by 16^2 of F(4,3)'s outputs, so its multiply-adds count 0.77
    of themselves."""
    m = DEFAULT_TILE_BY_KERNEL[r]
    return macs * (out_h * out_w) / (-(-out_h // m) * m * (-(-out_w // m) * m))


def _model_choice(cands, spec, t):
    n, c, h, w = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    stride, groups = spec.stride, spec.groups
    kg = k // groups
    area = kh * kw
    out_h, out_w = spec.out_hw
    macs = float(k) * cg * area * out_h * out_w      # per image
    # FFT splits a strided convolution into sh*sw stride-1 ones whose
    # kernels are that much smaller: judge it by that phase kernel (ResNet
    # conv1, 7x7/2: fft 2.1 ms against direct's 0.78).
    phase_area = area / (stride[0] * stride[1])
    fft_area = fft_min_area(cg, kg, t)
    if h == 1 and kh == 1 and cg * kg == 1:
        fft_area *= t["fft_1d_area_factor_single"]
    elif h == 1 and kh == 1:
        fft_area *= t["fft_1d_area_factor"] * one_d_fft_factor(cg, kg, n,
                                                                out_w)
    elif cg * kg == 1:
        fft_area *= single_channel_size_factor(h * w)
    if "fft" in cands and phase_area >= fft_area:
        return "fft"
    # A 1x1 kernel giving a 1x1 output (SE blocks' convs on pooled maps)
    # is a fully connected layer: a GEMM whose rows are the batch, and
    # direct's register tiles run along a one-pixel output row; such a
    # layer is small by its multiply-adds over the whole batch.  (LeNet's
    # C5, 5x5 on a 5x5 map at batch 64, stays direct: 0.91 ms vs im2col
    # 1.31, 15 repeats.)
    # Other 1x1 kernels (pointwise: MobileNet, bottlenecks) have their own
    # limit: a plain GEMM against direct's tiles, whose balance differs
    # from a 3x3 layer's with the SIMD width (on the AVX2 Zen 3, im2col
    # won MobileNet-v2's 1x1 layers from 2.4e6 multiply-adds, while direct
    # won 3x3 layers up to 1.9e7).
    fc = out_h * out_w == 1 and area == 1
    if fc:
        direct_small = n * macs <= t["direct_max_macs_fc"]
    elif area == 1:
        direct_small = macs <= t["direct_max_macs_pointwise"]
    else:
        direct_small = macs <= t["direct_max_macs"]
    if "direct" in cands and direct_small:
        return "direct"
    # Winograd for stride-1 layers with many output channels (its output
    # transform is amortised over them) on images that give enough tiles,
    # and as many input channels (the tuple GEMMs' depth): jet images'
    # 32 -> 64 3x3 layers at 25^2 and 33^2, large batches, ran direct
    # 1.22x-1.49x faster; half as many suffice on large images
    # (WINOGRAD_HALF_CHANNELS_MIN_PIXELS: the same layer at 64^2).
    # 3x3, U-Net 256^2 tiles at batch 4: K = 128 winograd 119 ms vs direct
    # 153 (C = 64), K = 64 direct 109 vs 185 and 251 vs 294.  5x5 saves
    # more multiplications (F(4,5): 6.25x, F(4,3): 4x) and won with half
    # as many on AVX2 and the Zen 4: C = K = 64 at 56^2, winograd 1.95 ms,
    # fft 2.58, direct 3.35 (winograd_min_channels_5x5).
    # Large layers (winograd_min_macs over the batch, counted on the share
    # of the tiles' outputs that are real) go to Winograd even below those
    # pixel and position limits, where their filters are few bytes per
    # output position: with 128 channels or more the crossover on the
    # AVX-512 Xeon VM followed the multiply-adds (docs/auto.md).
    # 5x5 layers have a channel limit of their own, not calibrated (the
    # calibration probes 3x3 layers): half the 3x3 default on AVX2, the
    # same on AVX-512, where direct's channel tile ran 32-channel 5x5
    # layers 1.6-2.5x faster than Winograd (winograd_min_channels_5x5).
    min_channels = t["winograd_min_channels_5x5" if kh == 5
                     else "winograd_min_channels"]
    width = k
    depth = c
    if kh == 3 and h * w >= WINOGRAD_HALF_CHANNELS_MIN_PIXELS:
        depth *= 2
    positions = n * out_h * out_w
    by_size = (h * w >= t["winograd_min_pixels"]
               and positions >= t["winograd_min_positions"]
               and (width >= 2 * min_channels
                    or positions >= t["winograd_narrow_min_positions"]))
    by_work = (kh == kw and kh in DEFAULT_TILE_BY_KERNEL
               and _tiled_macs(n * macs, out_h, out_w, kh)
               >= t["winograd_min_macs"]
               and h * w >= WINOGRAD_MACS_MIN_PIXELS
               and c * k * area
               <= WINOGRAD_MACS_MAX_FILTER_ELEMENTS_PER_POSITION * positions)
    # Deep 3x3 layers (WINOGRAD_DEEP_MIN_CHANNELS) with enough positions
    # go to Winograd on maps of any size: with few tiles it transforms
    # their filters inside its GEMMs instead of reading a large U
    # (kernels/cpu/_winograd_streamed.py).
    deep = (kh == 3 and min(c, k) >= WINOGRAD_DEEP_MIN_CHANNELS
            and positions >= t["winograd_deep_min_positions"])
    # Layers of WINOGRAD_MID_MIN_CHANNELS or more (3x3 or 5x5) go to
    # Winograd from their own number of positions, below the channel
    # limit: on AVX-512 the limit is 128 (direct's channel tile wins on
    # small maps) but 64-channel layers with many tiles run Winograd
    # faster (winograd_mid_min_positions in the CPU's tuning).
    mid = (min(c, k) >= WINOGRAD_MID_MIN_CHANNELS
           and h * w >= t["winograd_min_pixels"]
           and positions >= t["winograd_mid_min_positions"])
    if ("winograd" in cands and kh == kw and kh in (3, 5) and groups == 1
            and (mid or (depth >= min_channels and width >= min_channels
                         and (by_size or by_work or deep)))):
        return "winograd"
    # With few output channels the GEMM degenerates to matrix-vector
    # products, which the direct kernel's register tiles beat by 10x or more
    # (single-channel 1024^2 sweep: direct 3-35 ms, im2col 100-7000 ms).
    # A large product whose longer side (output positions or output
    # channels: the BLAS splits that one) is shorter than one BLAS piece
    # runs on one thread: direct, which uses them all, wins.  (MobileNet-
    # v1's last 1x1, 1024 -> 1024 at 7^2, 51 M multiply-adds: direct 1.06
    # ms, im2col 2.2, when the GEMM was split by its 49 columns only; split
    # by its 1024 rows since 2026-12-03: im2col 1.23 ms, direct 1.50, on
    # the Xeon VM.)
    # (Not a fully connected layer: its batch is the GEMM's columns, and
    # the merged 1x1 GEMM ran SE-ResNet-50's 32 x 2048 -> 128 in 0.57 ms
    # against direct's 2.5.)
    serial = (not fc
              and max(n * out_h * out_w, kg) < IM2COL_SERIAL_POSITIONS
              and n * macs > t["im2col_serial_max_macs"])
    # (One input channel to many outputs on a large image used to go to
    # im2col: U-Net's first layer, 572^2, im2col 17 ms against direct 33
    # on the Zen 4.  That was direct's scattered stores; since direct's
    # tasks run along column tiles (2026-12-02) the two are level: 572^2
    # direct 18.3, 18.7, 25.1 ms against im2col 22.5, 20.0, 23.8; 256^2 x 4
    # 13.6, 14.4, 14.2 against 14.5, 14.4, 13.6, three sweeps on the Zen 3.)
    # A 1x1 kernel is a plain GEMM (no patch copy) and wins even with few
    # output channels: U-Net's last layer, 64 -> 2 at 388^2, im2col
    # 3.05 ms vs direct 6.96.
    # A strided layer with a deep reduction (C/g kH kW) goes to im2col
    # whatever its kernel: direct's tiles read the input at the stride,
    # while im2col's gather copies it once and its GEMM runs at full
    # speed.  (ResNet-50's stride-2 3x3 layers on the Zen 3, direct over
    # im2col, batch 1: 128 at 56^2 1.06-1.07, 256 at 28^2 1.13-1.18, 512
    # at 14^2 1.30-1.76; 64 at 56^2 0.88-1.08.)
    # Larger strided kernels need more input channels (direct reads more
    # taps per packed input): 5x5/2 C = K = 64 at 56^2 ran direct 1.12x
    # faster, 96 level, 128 and 256 im2col 1.23x and 1.35x; 7x7/2 64
    # direct 1.27x faster, 96 level, 128 and 192 im2col 1.11x and 1.14x
    # (Zen 3, 2026-12-04, paired in one process).
    # With few output positions (N Ho Wo) the GEMM's columns are few and
    # direct keeps the lead (im2col_min_positions_strided: AVX-512 only).
    strided_deep = (stride[0] * stride[1] > 1
                    and cg * area >= t["im2col_min_depth_strided"]
                    and n * out_h * out_w >= t["im2col_min_positions_strided"]
                    and (area <= 9 or cg >= IM2COL_STRIDED_WIDE_MIN_CHANNELS))
    if ("im2col" in cands and cg * area >= 8 and not serial
            and (kg >= t["im2col_min_out_channels"] or area == 1)
            and (area <= t["im2col_max_area"] or strided_deep)):
        return "im2col"
    return "direct" if "direct" in cands else cands[0]


def _time_candidates(cands, spec, backend, repeats=3):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(spec.x_shape).astype(spec.dtype)
    w = rng.standard_normal(spec.w_shape).astype(spec.dtype)
    times = {}
    for algorithm in cands:
        run = _dispatch.load("conv2d", backend, algorithm).run
        if spec.is_empty():
            times[algorithm] = 0.0
            continue
        run(spec, x, w, None)  # compile, plan
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(spec, x, w, None)
            best = min(best, time.perf_counter() - t0)
        times[algorithm] = best
    return times


def _four_sided(padding, w_shape, stride, dilation):
    """(top, bottom, left, right) from that or from ``conv2d``'s forms."""
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        return tuple(int_tuple("padding", padding, 4, 0))
    try:
        pads = normalise_padding(padding, 2, tuple(w_shape[2:]),
                                 int_tuple("dilation", dilation, 2, 1),
                                 int_tuple("stride", stride, 2, 1))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{exc}; or a (top, bottom, left, right) tuple of "
                        f"4 ints") from None
    return pads[0] + pads[1]


def choose_algorithm(x_shape, w_shape, stride=(1, 1), padding=(0, 0, 0, 0),
                     dilation=(1, 1), groups=1, dtype=np.float32,
                     backend="cpu", measure=False):
    """Choose the algorithm for a normalised 2-D convolution problem.

    Parameters
    ----------
    x_shape : (N, C, H, W)
    w_shape : (K, C // groups, kH, kW)
    stride, dilation : int or (sh, sw), (dh, dw), as ``conv2d`` takes them
    padding : (top, bottom, left, right) zero padding
        Or as ``conv2d`` takes it: an int, a (pH, pW) pair, ``"valid"``
        or ``"same"``.
    groups : int
    dtype : float32 or float64
    backend : str
        One of ``kernels.BACKENDS`` (or a registered backend).
    measure : bool
        If True, run every candidate on random data of these shapes and
        return ``(best, times)`` with ``times`` a dict of seconds (best of
        three after a warm-up), like ``scipy.signal.choose_conv_method``.

    Returns
    -------
    algorithm : str, or (str, dict) with ``measure=True``
        Always built for ``backend`` and able to compute the problem.

    Notes
    -----
    Kernel rows or columns at the kernel's edges that only ever meet the
    zero padding (:func:`kernels.geometry.live_taps`) are left out: the
    choice is the one ``conv2d(..., algorithm="auto")`` makes for a finite
    filter, which it computes over the live taps only.

    Examples
    --------
    >>> import kernels
    >>> kernels.choose_algorithm((1, 1, 1024, 1024), (1, 1, 33, 33))
    'fft'
    """
    _dispatch.check_backend(backend)
    stride = int_tuple("stride", stride, 2, 1)
    dilation = int_tuple("dilation", dilation, 2, 1)
    padding = _four_sided(padding, w_shape, stride, dilation)
    spec = ConvSpec.from_config(x_shape, w_shape, stride, padding, dilation,
                                groups, dtype)
    # conv2d computes a finite filter's live taps only (ConvSpec.live_taps)
    if spec.live_taps is not None:
        spec = spec.live_taps[1]
    if measure:
        times = _time_candidates(_candidates_or_raise(spec, backend), spec,
                                 backend)
        return min(times, key=times.get), times
    return choose_for_spec(spec, backend)


def choose_for_spec(spec, backend):
    """:func:`choose_algorithm` for a :class:`ConvSpec` (the front ends')."""
    thresholds = _thresholds_in_force(backend)
    # The thresholds are the same object while nothing changed: one
    # identity test instead of hashing their ~40 items for the lru cache.
    recent = _recent_choices.get((spec, backend))
    if recent is not None and recent[0] is thresholds:
        return recent[1]
    algorithm = _cached_choice(spec.config(), backend, thresholds)
    if len(_recent_choices) >= 4096:
        _recent_choices.clear()
    _recent_choices[spec, backend] = (thresholds, algorithm)
    return algorithm


# (spec, backend) -> (thresholds, choice) of the last time it was asked.
_recent_choices = {}


def _candidates_or_raise(spec, backend):
    cands = candidates(spec, backend)
    if not cands and _dispatch.import_error(backend) is not None:
        raise _dispatch.import_error(backend)
    if not cands:
        raise NotImplementedError(
            f"no algorithm built for backend {backend!r} supports this "
            f"configuration (built: {_dispatch.built_algorithms(backend)})")
    return cands


@functools.lru_cache(maxsize=4096)
def _cached_choice(config, backend, frozen_thresholds):
    """The model's choice for a problem under given thresholds, memoised:
    "auto" asks on every call, and a layer's shapes repeat.  (The choice
    does not depend on the dtype.)"""
    spec = ConvSpec.from_config(*config)
    return _model_choice(_candidates_or_raise(spec, backend), spec,
                         dict(frozen_thresholds))


# --------------------------------------------------------------------------
# Transposed convolution
# --------------------------------------------------------------------------

# Algorithms that compute a transposed convolution through the forward
# convolution of the same name (stride-1 equivalent problem).
VIA_FORWARD = ("winograd", "fft")


def transposed_unsupported_reason(algorithm, spec, backend):
    """None when ``algorithm`` can compute the transposed ``spec``."""
    if algorithm not in VIA_FORWARD:
        if not _dispatch.is_built("conv_transpose2d", backend, algorithm):
            return f"no transposed {algorithm!r} kernel"
        return _dispatch.unsupported_reason("conv_transpose2d", backend,
                                            algorithm, spec)
    if not _dispatch.is_built("conv2d", backend, algorithm):
        return (f"it runs through the forward {algorithm!r} convolution, "
                f"which is not built for backend {backend!r}")
    if algorithm == "winograd" and tuple(spec.stride) != (1, 1):
        # The upsampled input would be mostly zeros: s^2 times the work,
        # and Winograd's tile-wide rounding would land on outputs that are
        # exactly zero, breaking its elementwise error bound.
        return (f"Winograd runs transposed convolutions of stride 1 only "
                f"(through the forward one), got stride={tuple(spec.stride)}")
    _, _, forward = spec.forward_problem()
    if min(forward.x_shape[2:]) < 1:
        return "the equivalent forward problem has an empty input"
    reason = _dispatch.unsupported_reason("conv2d", backend, algorithm, forward)
    if reason is not None:
        return f"the equivalent stride-1 forward problem is unsupported: {reason}"
    return None


def transposed_algorithms(backend="cpu"):
    """Algorithms that can compute a transposed convolution on ``backend``:
    its transposed kernels, and ``winograd``/``fft`` through the forward
    convolution when those are built (each still with its own rule)."""
    from ._validation import ALGORITHMS
    return tuple(a for a in ALGORITHMS
                 if _dispatch.is_built("conv_transpose2d", backend, a)
                 or (a in VIA_FORWARD
                     and _dispatch.is_built("conv2d", backend, a)))


def choose_transposed_algorithm(spec, backend="cpu"):
    """``algorithm="auto"`` for a transposed problem: ``(algorithm,
    through_forward)``.

    * Stride 1: the equivalent forward problem (flipped, channel-swapped
      kernel) has the same size as the transposed one, so
      :func:`choose_algorithm` picks and the problem runs through the
      forward convolution (``through_forward=True``), Winograd included.
    * Larger strides: the upsampled forward problem would do ``s^2``
      times the work, so the transposed kernels run: ``direct`` for small
      problems (fewer multiply-adds than ``direct_max_macs``), ``fft`` for
      large kernels (the FFT area thresholds) when it applies, else
      ``im2col`` (a GEMM and col2im, PyTorch's CPU order) when built.
    """
    if tuple(spec.stride) == (1, 1):
        _, _, forward = spec.forward_problem()
        if min(forward.x_shape[2:]) >= 1:
            return choose_for_spec(forward, backend), True
    t = thresholds(backend)
    area = spec.w_shape[2] * spec.w_shape[3]
    fft_area = fft_min_area(spec.w_shape[1], spec.x_shape[1] // spec.groups, t)
    if area >= fft_area and transposed_unsupported_reason("fft", spec,
                                                          backend) is None:
        return "fft", True
    native = [a for a in ("direct", "im2col")
              if _dispatch.is_built("conv_transpose2d", backend, a)]
    if not native:
        raise NotImplementedError(
            f"no transposed-convolution kernel is built for backend {backend!r}")
    if spec.macs() <= t["direct_max_macs"] and "direct" in native:
        return "direct", False
    return ("im2col" if "im2col" in native else native[0]), False
