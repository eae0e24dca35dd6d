"""Backward-pass kernels of the 2-D convolution (CPU).

The front-end :mod:`kernels._backward` validates the arguments and builds
``dL/dx`` and, for most algorithms, ``dL/dw`` from the forward and
transposed convolutions; what is specific to the backward pass lives here.
"""

from __future__ import annotations

import numpy as np

from .. import _threads
from .._dispatch import Kernel
from . import _blas, im2col

__all__ = ["weight_gradient_im2col", "KERNELS"]


def weight_gradient_im2col(grad_out, x, w_shape, stride, padding, dilation,
                           groups):
    """dL/dw as one GEMM per chunk: ``(P_g (C/G kH kW, cols) @ gy_g^T)^T``.

    ``P`` is the forward im2col patch matrix of ``x``, gathered by
    :func:`kernels.cpu.im2col.fill_patches` in the chunks planned by
    :func:`kernels.cpu.im2col.plan_chunks` (bounded scratch); this is
    PyTorch's order, and it keeps the long ``N Ho Wo`` sum inside BLAS.
    (The swapped forward problem of
    :func:`kernels._backward.weight_gradient_problem` has a ``(Ho, Wo)``
    kernel and a ``(kH, kW)`` output: many skinny GEMMs for im2col.)

    Parameters
    ----------
    grad_out : ndarray (N, K, Ho, Wo), C-contiguous
    x : ndarray (N, C, H, W), same dtype
    w_shape : (K, C // groups, kH, kW)
    stride, dilation : (sh, sw), (dh, dw)
    padding : (top, bottom, left, right)
    groups : int

    Returns
    -------
    grad_w : ndarray of shape ``w_shape``, x's dtype
    """
    n, c, _, _ = x.shape
    k, c_g, kh, kw = w_shape
    g = groups
    sh, sw = stride
    pt, _, pl, _ = padding
    dh, dw = dilation
    ho, wo = grad_out.shape[2:]
    positions = ho * wo
    rows = c * kh * kw
    item = x.dtype.itemsize
    # As many columns per GEMM as the scratch allows (whole images merged):
    # the GEMM's output is only (K, C/G kH kW), its inner dimension is the
    # chunk, and few large BLAS calls avoid waking BLAS's threads per call
    # (each wake-up cost a 4 ms scheduler tick on the loaded 2-core
    # machine: 40 ms per small GEMM instead of 0.4 ms).
    limit = im2col.get_scratch_limit()
    chunks = im2col.plan_chunks(n, positions, rows * item,
                                (rows + k) * item, limit,
                                merge_below=positions + 1, target=limit)
    gather = (im2col.fill_patches
              if _threads.prange_beside_blas_is_safe()
              else im2col.fill_patches_serial)
    x = np.ascontiguousarray(x)
    gy = grad_out.reshape(n, k, positions)
    grad_w_t = np.zeros((g, c_g * kh * kw, k // g), dtype=x.dtype)
    product = np.empty_like(grad_w_t)
    max_cols = max((ch.n1 - ch.n0) * (ch.p1 - ch.p0) for ch in chunks)
    buffer = np.empty(rows * max_cols, dtype=x.dtype)
    for n0, n1, p0, p1 in chunks:
        cols = (n1 - n0) * (p1 - p0)
        patches = buffer[:rows * cols].reshape(rows, cols)
        gather(x, n0, n1, p0, p1, kh, kw, sh, sw, pt, pl, dh, dw, wo, patches)
        # A contiguous copy: NumPy's matmul of the strided view (leading
        # dimension Ho Wo) with patches^T was measured 60x slower.
        if n1 - n0 == 1:
            gy_chunk = np.ascontiguousarray(gy[n0, :, p0:p1])
        else:  # columns ordered (image, position), as the patches
            gy_chunk = gy[n0:n1].transpose(1, 0, 2).reshape(k, cols)
        # Computed as P_g @ gy_g^T, (C/G kH kW, Kg): OpenBLAS ran this
        # orientation ~10x faster than gy_g @ P_g^T for the long inner
        # dimension (measured 32 ms vs 456 ms CPU, 64 ch at 56x56, N=8).
        grad_w_t += _blas.matmul(patches.reshape(g, c_g * kh * kw, cols),
                                 gy_chunk.reshape(g, k // g, cols)
                                 .transpose(0, 2, 1),
                                 product, split="rows")
    return np.ascontiguousarray(
        grad_w_t.transpose(0, 2, 1)).reshape(w_shape)


def _run_weight_gradient(spec, grad_out, x):
    """The contract's ``run(spec, grad_out, x)`` of ``conv2d_weight_grad``."""
    return weight_gradient_im2col(grad_out, x, spec.w_shape, spec.stride,
                                  spec.padding, spec.dilation, spec.groups)


KERNELS = {("conv2d_weight_grad", "im2col"): Kernel(_run_weight_gradient)}
