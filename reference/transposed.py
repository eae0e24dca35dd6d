"""Float64 ground truth for transposed convolution: the scatter definition.

Never imports ``kernels``.  ``conv_transpose1d``/``conv_transpose2d``
follow ``torch.nn.functional.conv_transpose1d/2d``: every input pixel
``(ih, iw)`` adds its kernel-weighted patch into the full output,

    full[n, g Co + o, ih sh + kh dh, iw sw + kw dw]
        += x[n, g Ci + c, ih, iw] * w[g Ci + c, o, kh, kw],

(``Ci = C_in / groups``, ``Co = w.shape[1]``) and the result is
``full`` with ``padding`` cropped from both ends of each spatial axis,
extended by ``output_padding`` at the high end (those positions receive
no patch; they hold the bias), plus ``bias``.  The loop runs over input
positions; each step is one ``einsum`` over the batch and channels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["conv_transpose1d", "conv_transpose2d"]


def _as_tuple(value, nsp):
    if isinstance(value, (tuple, list)):
        if len(value) != nsp:
            raise ValueError(f"expected {nsp} values, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * nsp


def conv_transpose2d(x, w, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """Transposed 2-D convolution of ``(N, C_in, H, W)`` (or unbatched) in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    sh, sw = _as_tuple(stride, 2)
    ph, pw = _as_tuple(padding, 2)
    oph, opw = _as_tuple(output_padding, 2)
    dh, dw = _as_tuple(dilation, 2)
    n, c_in, h, wd = x.shape
    _, c_out_g, kh, kw = w.shape
    c_in_g = c_in // groups
    ext_h, ext_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    full_h = (h - 1) * sh + ext_h + oph
    full_w = (wd - 1) * sw + ext_w + opw
    full = np.zeros((n, groups, c_out_g, full_h, full_w))
    xg = x.reshape(n, groups, c_in_g, h, wd)
    wg = w.reshape(groups, c_in_g, c_out_g, kh, kw)
    for ih in range(h):
        for iw in range(wd):
            patch = np.einsum("ngc,gcokl->ngokl", xg[:, :, :, ih, iw], wg)
            full[:, :, :, ih * sh:ih * sh + ext_h:dh,
                 iw * sw:iw * sw + ext_w:dw] += patch
    out_h = full_h - 2 * ph
    out_w = full_w - 2 * pw
    if out_h < 1 or out_w < 1:
        raise ValueError(f"output size ({out_h}, {out_w}) is not positive")
    y = full[:, :, :, ph:ph + out_h, pw:pw + out_w].reshape(
        n, groups * c_out_g, out_h, out_w)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return y[0] if unbatched else y


def conv_transpose1d(x, w, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1):
    """Transposed 1-D convolution of ``(N, C_in, L)`` (or unbatched) in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    y = conv_transpose2d(x[..., None, :], w[:, :, None, :], bias,
                         (1, _as_tuple(stride, 1)[0]),
                         (0, _as_tuple(padding, 1)[0]),
                         (0, _as_tuple(output_padding, 1)[0]), groups,
                         (1, _as_tuple(dilation, 1)[0]))
    return y[..., 0, :]
