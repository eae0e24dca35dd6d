"""The peers of every op (torch, SciPy), from a plain description.

:func:`convbench.ops.peer_spec` turns a :class:`~convbench.problems.Problem`
into a dict of plain values (the op and its geometry, as the peers take
them); the runners here build a peer's call from that dict alone.  Only
NumPy is imported at module level, and torch or SciPy when a runner is
built: a timing worker that runs only torch (``convbench._worker``) uses
this module without importing ``kernels``, whose import sets the OpenMP
runtime's wait policy for the process.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["torch_runner", "scipy_runner"]


def _pick(spec, key):
    """``spec[key]`` as the peer takes it: the second value of a 1-D op's
    pair, else a tuple."""
    value = spec[key]
    if isinstance(value, str):
        return value
    return value[1] if spec["one_d"] else tuple(value)


def torch_runner(spec, data):
    """A zero-argument callable running ``spec`` through torch on the
    arrays ``data`` (``x``, ``w``, ``grad_out``), returning NumPy."""
    import torch
    import torch.nn.functional as F
    t = {name: torch.from_numpy(a) for name, a in data.items()}
    x, op = t["x"], spec["op"]
    stride, padding, dilation = (_pick(spec, "stride"), _pick(spec, "padding"),
                                 _pick(spec, "dilation"))
    groups = spec["groups"]
    if op in ("conv1d", "conv2d"):
        call = functools.partial(getattr(F, op), x, t["w"], None, stride,
                                 padding, dilation, groups)
    elif op in ("conv_transpose1d", "conv_transpose2d"):
        call = functools.partial(getattr(F, op), x, t["w"], None, stride,
                                 padding, _pick(spec, "output_padding"),
                                 groups, dilation)
    elif op == "conv2d_backward_data":
        call = functools.partial(torch.nn.grad.conv2d_input, x.shape, t["w"],
                                 t["grad_out"], stride, padding, dilation,
                                 groups)
    elif op == "conv2d_backward_weights":
        call = functools.partial(torch.nn.grad.conv2d_weight, x, t["w"].shape,
                                 t["grad_out"], stride, padding, dilation,
                                 groups)
    else:
        call = _pool_call(spec, t, torch, F)

    def run():
        with torch.no_grad():
            return call().numpy()
    return run


def _pool_call(spec, t, torch, F):
    x, op = t["x"], spec["op"]
    kernel, stride = tuple(spec["kernel"]), tuple(spec["stride"])
    pads, dilation = tuple(spec["padding"]), tuple(spec["dilation"])
    if op == "global_avg_pool2d":
        return functools.partial(F.adaptive_avg_pool2d, x, 1)
    if op == "max_pool2d":
        return functools.partial(F.max_pool2d, x, kernel, stride, pads,
                                 dilation)
    if op == "avg_pool2d":
        return functools.partial(F.avg_pool2d, x, kernel, stride, pads)
    aten = torch.ops.aten
    if op == "max_pool2d_backward":
        # autograd keeps the forward's argmax: computed here, untimed.
        _, indices = aten.max_pool2d_with_indices(x, kernel, stride, pads,
                                                  dilation, False)
        return functools.partial(aten.max_pool2d_with_indices_backward,
                                 t["grad_out"], x, kernel, stride, pads,
                                 dilation, False, indices)
    return functools.partial(aten.avg_pool2d_backward, t["grad_out"], x,
                             kernel, stride, pads, False, True, None)


def scipy_runner(name, spec, data):
    """``scipy.signal`` (``scipy-direct``, ``scipy-fft``: ``correlate``;
    ``scipy-oa``: ``oaconvolve`` with the flipped filter) on each image
    of a single-channel convolution ``spec``."""
    import scipy.signal
    (pt, pb), (pl, pr) = spec["pads"]
    n, h, w = spec["n"], spec["h"], spec["w"]
    x = data["x"].reshape(n, h, w)
    filt = data["w"].reshape(tuple(spec["kernel"]))
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr))) if any((pt, pb, pl, pr)) \
        else x
    if spec["one_d"]:
        xp, filt = xp[:, 0], filt[0]
    if name == "scipy-oa":
        flipped = np.ascontiguousarray(filt[::-1, ::-1] if filt.ndim == 2
                                       else filt[::-1])

        def one(image):
            return scipy.signal.oaconvolve(image, flipped, mode="valid")
    else:
        method = "direct" if name == "scipy-direct" else "fft"

        def one(image):
            return scipy.signal.correlate(image, filt, mode="valid",
                                          method=method)
    shape = tuple(spec["out_shape"])

    def run():
        return np.stack([one(image) for image in xp]).reshape(shape)
    return run
