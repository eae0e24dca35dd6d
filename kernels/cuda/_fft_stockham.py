"""Batched complex FFTs of power-of-two lengths: Stockham autosort, radix 4/2.

The FFT that :mod:`kernels.cuda.fft` builds its convolution on (no cuFFT).
Like the GEMM core (:mod:`kernels.cuda._gemm`) it is a kernel *template*:
where a pass reads its transforms from and where it writes them to are the
caller's device functions, so that the first pass can read the
zero-padded, phase-split input straight out of ``x`` (no padded copy) and
the last one can scatter the valid outputs into ``y``::

    kernel = fft_kernel(load, store, dtype)
    run_pass(load, store, src, dst, aux_i, aux_f, geom, nbatch, length,
             inverse, stream)

``load(src, aux_i, aux_f, geom, bt, l, zero) -> (re, im)`` returns element
``l`` of transform ``bt`` (``bt < nbatch``, ``l < length``; ``zero`` is a
0 of the kernel's dtype, for the loader to return where it has no data),
and ``store(dst, aux_i, aux_f, geom, bt, l, re, im)`` receives element
``l`` of the transform of ``bt``.  ``aux_i`` (int32, 3-D) and ``aux_f``
(the dtype, 1-D) are extra arrays the pair interprets (index maps, bias);
``geom`` a tuple of integers.

The transform: ``Y[f] = sum_l X[l] exp(-+2 pi i f l / length)``
(forward: ``-``, as ``numpy.fft.fft``; inverse: ``+`` and *unnormalised*,
``length * numpy.fft.ifft``).  ``length`` a power of two.

How a block works.  It holds ``FFT.shared_length`` (``CH``) complex values
in shared memory (real and imaginary parts in two arrays): ``G = CH /
length`` transforms at once, element ``l`` of transform ``g`` at ``l G +
g``, so that the consecutive threads of a warp touch consecutive
addresses (no bank conflicts) and, in the loaders, consecutive ``bt``
(the callers number transforms so that consecutive ``bt`` are consecutive
in memory).  Stockham stages run in place in that one buffer: every
thread reads its butterflies' inputs into registers, the block
synchronises, every thread writes its outputs, the block synchronises.
Radix-4 stages while ``4 Ns <= length``, then one radix-2 stage when
``log2(length)`` is odd; stage ``Ns`` butterfly ``j`` reads ``x[j + r
length/R]``, multiplies by ``w^(r (j mod Ns))`` with ``w = exp(-+2 pi i /
(R Ns))``, does an ``R``-point DFT and writes ``y[(j div Ns) R Ns + j mod
Ns + r Ns]`` (Govindaraju et al., "High performance discrete Fourier
transforms on graphics processors", SC 2008): the output is in natural
order, no bit reversal.  Each thread does ``CH / (4 threads)`` radix-4 or
``CH / (2 threads)`` radix-2 butterflies per stage; twiddles come from a
float64-computed table ``exp(-+2 pi i t / length)`` rounded once to the
dtype (:func:`twiddles`), so they carry one rounding each.

Lengths above ``CH`` (transforms that do not fit a block) run through
global memory: a gather kernel (the loader into a split-complex scratch
``(2, nbatch, length)``), one radix-2 Stockham stage per launch between
two scratch buffers (one thread per butterfly), a scatter kernel (the
store).  Only problems whose phase kernel is longer than ``CH / 2`` taps
need it.

Determinism: every output element is written by one thread, in a fixed
order of operations; no atomics.  Accuracy: a radix-2/4 FFT in floating
point has a normwise error of about ``c log2(length) u ||x||`` (twiddle
rounding included); see :mod:`kernels.cuda.fft` for the measured
convolution constants.
"""

from __future__ import annotations

import functools

import numpy as np

from ._runtime import cuda, numba_type
from ._tuning import FFT

__all__ = ["fft_kernel", "global_kernels", "run_pass", "twiddles",
           "fft_columns", "column_loaders", "dummy_aux", "SHARED_LENGTH",
           "THREADS"]

THREADS = FFT.threads
SHARED_LENGTH = _CH = FFT.shared_length
if _CH % (4 * THREADS):
    raise ValueError("FFTTuning.shared_length must be a multiple of "
                     "4 * FFTTuning.threads")
_T = THREADS
_PER4 = _CH // (4 * _T)     # radix-4 butterflies per thread per stage
_PER2 = _CH // (2 * _T)     # radix-2 butterflies per thread per stage
_REG = _CH // _T            # complex values a thread holds between phases


@functools.lru_cache(maxsize=None)
def _twiddles_host(length, dtype, inverse):
    t = np.arange(length, dtype=np.float64)
    angle = (2.0 if inverse else -2.0) * np.pi * t / length
    re, im = np.cos(angle), np.sin(angle)
    # Exact values where they are exact (cos(pi/2) is 6e-17 in float64).
    if length % 4 == 0:
        q = length // 4
        re[q::2 * q] = 0.0
        im[::2 * q] = 0.0
    elif length == 2:
        im[1] = 0.0
    return np.ascontiguousarray(np.stack([re, im]).astype(dtype))


@functools.lru_cache(maxsize=None)
def twiddles(length, dtype, inverse):
    """Device table (2, length): ``exp(-+2 pi i t / length)`` (``+`` when
    ``inverse``), computed in float64 and rounded once to ``dtype``."""
    return cuda.to_device(_twiddles_host(int(length), np.dtype(dtype),
                                         bool(inverse)))


@functools.lru_cache(maxsize=None)
def dummy_aux(dtype):
    """``(aux_i, aux_f)`` placeholders for passes that use neither."""
    return (cuda.to_device(np.zeros((1, 1, 1), np.int32)),
            cuda.to_device(np.zeros(1, np.dtype(dtype))))


# --------------------------------------------------------------------------
# Shared-memory kernel: a whole transform per block (length <= CH)
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def fft_kernel(load, store, dtype):
    """The batched FFT pass over ``load``/``store`` for ``dtype`` (cached).

    Launch: ``ceil(nbatch / (CH / length))`` blocks of ``THREADS``;
    arguments ``(src, dst, aux_i, aux_f, geom, nbatch, length, inverse,
    tw)`` with ``tw = twiddles(length, dtype, inverse)``.
    """
    nbtype = numba_type(dtype)

    @cuda.jit
    def fft_pass(src, dst, aux_i, aux_f, geom, nbatch, length, inverse, tw):
        # One line per shared array: the simulator aliases two on a line.
        sh_re = cuda.shared.array(_CH, nbtype)
        sh_im = cuda.shared.array(_CH, nbtype)
        o_re = cuda.local.array(_REG, nbtype)
        o_im = cuda.local.array(_REG, nbtype)
        zero = nbtype(0)
        tid = cuda.threadIdx.x
        groups = _CH // length
        bt0 = cuda.blockIdx.x * groups

        for r in range(_REG):
            e = tid + r * _T
            bt = bt0 + e % groups
            re = zero
            im = zero
            if bt < nbatch:
                re, im = load(src, aux_i, aux_f, geom, bt, e // groups, zero)
            sh_re[e] = re
            sh_im[e] = im
        cuda.syncthreads()

        ns = 1
        while ns < length:
            if 4 * ns <= length:
                quarter = length // 4
                step = length // (4 * ns)
                for r in range(_PER4):
                    q = tid + r * _T
                    g = q % groups
                    j = q // groups
                    k = j % ns
                    _radix4(sh_re, sh_im, tw, o_re, o_im, 4 * r,
                            j * groups + g, quarter * groups, k * step,
                            inverse)
                cuda.syncthreads()
                for r in range(_PER4):
                    q = tid + r * _T
                    g = q % groups
                    j = q // groups
                    k = j % ns
                    base = ((j // ns) * 4 * ns + k) * groups + g
                    for rr in range(4):
                        sh_re[base + rr * ns * groups] = o_re[4 * r + rr]
                        sh_im[base + rr * ns * groups] = o_im[4 * r + rr]
                cuda.syncthreads()
                ns *= 4
            else:
                half = length // 2
                step = length // (2 * ns)
                for r in range(_PER2):
                    q = tid + r * _T
                    g = q % groups
                    j = q // groups
                    k = j % ns
                    _radix2(sh_re, sh_im, tw, o_re, o_im, 2 * r,
                            j * groups + g, half * groups, k * step)
                cuda.syncthreads()
                for r in range(_PER2):
                    q = tid + r * _T
                    g = q % groups
                    j = q // groups
                    k = j % ns
                    base = ((j // ns) * 2 * ns + k) * groups + g
                    sh_re[base] = o_re[2 * r]
                    sh_im[base] = o_im[2 * r]
                    sh_re[base + ns * groups] = o_re[2 * r + 1]
                    sh_im[base + ns * groups] = o_im[2 * r + 1]
                cuda.syncthreads()
                ns *= 2

        for r in range(_REG):
            e = tid + r * _T
            bt = bt0 + e % groups
            if bt < nbatch:
                store(dst, aux_i, aux_f, geom, bt, e // groups, sh_re[e],
                      sh_im[e])

    return fft_pass


@cuda.jit(device=True, inline="always")
def _radix4(sh_re, sh_im, tw, o_re, o_im, o, i0, stride, t, inverse):
    """One radix-4 butterfly: inputs at i0 + r stride, twiddles tw[r t]."""
    v0r = sh_re[i0]
    v0i = sh_im[i0]
    a_re = sh_re[i0 + stride]
    a_im = sh_im[i0 + stride]
    w_re = tw[0, t]
    w_im = tw[1, t]
    v1r = a_re * w_re - a_im * w_im
    v1i = a_re * w_im + a_im * w_re
    a_re = sh_re[i0 + 2 * stride]
    a_im = sh_im[i0 + 2 * stride]
    w_re = tw[0, 2 * t]
    w_im = tw[1, 2 * t]
    v2r = a_re * w_re - a_im * w_im
    v2i = a_re * w_im + a_im * w_re
    a_re = sh_re[i0 + 3 * stride]
    a_im = sh_im[i0 + 3 * stride]
    w_re = tw[0, 3 * t]
    w_im = tw[1, 3 * t]
    v3r = a_re * w_re - a_im * w_im
    v3i = a_re * w_im + a_im * w_re
    sr = v0r + v2r
    si = v0i + v2i
    dr = v0r - v2r
    di = v0i - v2i
    tr = v1r + v3r
    ti = v1i + v3i
    ur = v1r - v3r
    ui = v1i - v3i
    o_re[o] = sr + tr
    o_im[o] = si + ti
    o_re[o + 2] = sr - tr
    o_im[o + 2] = si - ti
    # y1 = d -+ i u, y3 = d +- i u (forward: -i, inverse: +i)
    if inverse:
        o_re[o + 1] = dr - ui
        o_im[o + 1] = di + ur
        o_re[o + 3] = dr + ui
        o_im[o + 3] = di - ur
    else:
        o_re[o + 1] = dr + ui
        o_im[o + 1] = di - ur
        o_re[o + 3] = dr - ui
        o_im[o + 3] = di + ur


@cuda.jit(device=True, inline="always")
def _radix2(sh_re, sh_im, tw, o_re, o_im, o, i0, stride, t):
    """One radix-2 butterfly: inputs at i0 and i0 + stride, twiddle tw[t]."""
    ar = sh_re[i0]
    ai = sh_im[i0]
    b_re = sh_re[i0 + stride]
    b_im = sh_im[i0 + stride]
    w_re = tw[0, t]
    w_im = tw[1, t]
    br = b_re * w_re - b_im * w_im
    bi = b_re * w_im + b_im * w_re
    o_re[o] = ar + br
    o_im[o] = ai + bi
    o_re[o + 1] = ar - br
    o_im[o + 1] = ai - bi


# --------------------------------------------------------------------------
# Global-memory path: lengths longer than a block holds
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def global_kernels(load, store, dtype):
    """``(gather, stage, scatter)`` kernels of the global-memory path.

    ``gather[grid(nbatch * length), THREADS](src, aux_i, aux_f, geom,
    nbatch, length, scratch)``; ``stage[grid(nbatch * length / 2),
    THREADS](a, b, nbatch, length, ns, tw)`` (one radix-2 Stockham stage
    from a to b); ``scatter[grid(nbatch * length), THREADS](scratch, dst,
    aux_i, aux_f, geom, nbatch, length)``.  Scratch arrays are
    ``(2, nbatch, length)``.
    """
    nbtype = numba_type(dtype)

    @cuda.jit
    def gather(src, aux_i, aux_f, geom, nbatch, length, scratch):
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if e < nbatch * length:
            bt = e // length
            l = e % length
            re, im = load(src, aux_i, aux_f, geom, bt, l, nbtype(0))
            scratch[0, bt, l] = re
            scratch[1, bt, l] = im

    @cuda.jit
    def stage(a, b, nbatch, length, ns, tw):
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        half = length // 2
        if e < nbatch * half:
            bt = e // half
            j = e % half
            k = j % ns
            t = k * (length // (2 * ns))
            ar = a[0, bt, j]
            ai = a[1, bt, j]
            b_re = a[0, bt, j + half]
            b_im = a[1, bt, j + half]
            w_re = tw[0, t]
            w_im = tw[1, t]
            br = b_re * w_re - b_im * w_im
            bi = b_re * w_im + b_im * w_re
            base = (j // ns) * 2 * ns + k
            b[0, bt, base] = ar + br
            b[1, bt, base] = ai + bi
            b[0, bt, base + ns] = ar - br
            b[1, bt, base + ns] = ai - bi

    @cuda.jit
    def scatter(scratch, dst, aux_i, aux_f, geom, nbatch, length):
        e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        if e < nbatch * length:
            bt = e // length
            l = e % length
            store(dst, aux_i, aux_f, geom, bt, l, scratch[0, bt, l],
                  scratch[1, bt, l])

    return gather, stage, scatter


def _blocks(n, per_block):
    return max(1, -(-n // per_block))


def run_pass(load, store, src, dst, aux_i, aux_f, geom, nbatch, length,
             inverse, dtype, stream=0, force_global=False):
    """Launch one batched FFT pass of ``nbatch`` transforms of ``length``.

    Shared-memory kernel when ``length <= SHARED_LENGTH`` (and not
    ``force_global``, which tests use to reach the global-memory path with
    small lengths), else gather / stages / scatter.
    """
    length, nbatch = int(length), int(nbatch)
    if length < 1 or length & (length - 1):
        raise ValueError(f"FFT length must be a power of two, got {length}")
    if nbatch == 0:
        return
    dtype = np.dtype(dtype)
    tw = twiddles(length, dtype, inverse)
    geom = tuple(int(v) for v in geom)
    if length <= _CH and not force_global:
        kernel = fft_kernel(load, store, dtype)
        kernel[_blocks(nbatch, _CH // length), _T, stream](
            src, dst, aux_i, aux_f, geom, nbatch, length, int(bool(inverse)),
            tw)
        return
    gather, stage, scatter = global_kernels(load, store, dtype)
    a = cuda.device_array((2, nbatch, length), dtype, stream=stream)
    b = cuda.device_array((2, nbatch, length), dtype, stream=stream)
    whole = _blocks(nbatch * length, _T)
    gather[whole, _T, stream](src, aux_i, aux_f, geom, nbatch, length, a)
    ns = 1
    while ns < length:
        stage[_blocks(nbatch * length // 2, _T), _T, stream](
            a, b, nbatch, length, ns, tw)
        a, b = b, a
        ns *= 2
    scatter[whole, _T, stream](a, dst, aux_i, aux_f, geom, nbatch, length)


# --------------------------------------------------------------------------
# In place along the middle axis of a split-complex (2, length, I) array
# --------------------------------------------------------------------------

@cuda.jit(device=True, inline="always")
def _load_columns(src, aux_i, aux_f, geom, bt, l, zero):
    return src[0, l, bt], src[1, l, bt]


@cuda.jit(device=True, inline="always")
def _store_columns(dst, aux_i, aux_f, geom, bt, l, re, im):
    dst[0, l, bt] = re
    dst[1, l, bt] = im


def column_loaders():
    """``(load, store)`` of :func:`fft_columns`."""
    return _load_columns, _store_columns


def fft_columns(buf, inverse=False, stream=0, force_global=False):
    """In-place FFT along axis 1 of a split-complex device array.

    ``buf`` (2, L, I): ``buf[0] + 1j buf[1]`` is replaced by its
    ``numpy.fft.fft(..., axis=0)`` (``inverse``: ``L * ifft``), ``I``
    transforms of length ``L`` (a power of two).  Returns ``buf``.
    """
    _, length, inner = buf.shape
    if length > 1:
        aux_i, aux_f = dummy_aux(buf.dtype)
        run_pass(_load_columns, _store_columns, buf, buf, aux_i, aux_f, (0,),
                 inner, length, inverse, buf.dtype, stream, force_global)
    return buf


def _signature(dtype):
    from numba import types
    t = numba_type(dtype)
    arr3 = t[:, :, ::1]
    return (arr3, arr3, types.int32[:, :, ::1], t[::1],
            types.UniTuple(types.int64, 1), types.int64, types.int64,
            types.int64, t[:, ::1])


def _report_entries():
    from ._runtime import ReportEntry
    return [ReportEntry("_fft_stockham", "fft_columns",
                        lambda dtype: fft_kernel(_load_columns, _store_columns,
                                                 dtype),
                        _signature, _T,
                        note="shared-memory Stockham radix-4/2, in place")]


REPORT = _report_entries()
