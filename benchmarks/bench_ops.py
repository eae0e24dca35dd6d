"""Pooling, transposed convolution and backward passes, per workload.

The layers come from ``convbench.workloads``: ``Workload.other_ops()``
for the pooling and transposed-convolution layers (U-Net, LeNet-5,
MobileNet, SE-ResNet-50), ``common.representative_layers(count=1)`` for
the conv2d backward pass (the smallest conv layer of every workload).

``PoolingWorkloads``          max / avg / global-avg pooling: kernels
                              against torch.
``PoolingBackwardWorkloads``  max_pool2d_backward / avg_pool2d_backward
                              against torch's autograd-free gradients.
``TransposedWorkloads``       conv_transpose2d per algorithm, ``auto`` and
                              torch.
``Conv2dBackwardWorkloads``   conv2d_backward (grad x, grad w, grad bias)
                              per algorithm, ``auto`` and torch.

A combination that cannot run here raises NotImplementedError (asv:
skipped); every contender is called in ``setup`` (compilation untimed).
"""

from __future__ import annotations

import functools

import numpy as np

import kernels
from convbench.sweep import output_shape, zero_padding
from convbench.timing import seeded_normal

from .common import (ALGORITHMS, BACKENDS, SEED, make_data,
                     representative_layers, require_backend, skip_if_slow,
                     torch_available, warm_up, workloads)

POOL_OPS = ("max_pool2d", "avg_pool2d", "global_avg_pool2d")


def _distinct_ops():
    """{(workload, op): [OpCase, ...]} without repeated problems."""
    found = {}
    for name, wl in workloads.WORKLOADS.items():
        seen = set()
        for op in wl.other_ops():
            key = (op.op, op.x_shape, op.w_shape, op.kernel, op.stride,
                   op.padding)
            if key not in seen:
                seen.add(key)
                found.setdefault((name, op.op), []).append(op)
    return found


@functools.lru_cache(maxsize=None)
def workload_ops(ops, count=2):
    """``{"workload: label": OpCase}`` for the ops named in ``ops``: per
    workload and op the smallest and the largest (by FLOPs)."""
    chosen = {}
    for (name, op), cases in _distinct_ops().items():
        if op not in ops:
            continue
        cases = sorted(cases, key=lambda c: c.flops)
        for case in {cases[0].label: cases[0],
                     cases[-1].label: cases[-1]}.values():
            chosen[f"{name}: {case.label}"] = case
    return chosen


def _input(shape):
    return seeded_normal(shape, dtype=np.float32, seed=SEED,
                         draw_dtype=np.float32)[0]


def _torch():
    if not torch_available():
        raise NotImplementedError("torch is not installed")
    import torch
    return torch


def _pool_fn(op, backend):
    """Forward pooling of ``kernels`` as ``f(x, OpCase)``."""
    if op.op == "global_avg_pool2d":
        return lambda x: kernels.global_avg_pool2d(x, backend=backend)
    fn = getattr(kernels, op.op)
    return lambda x: fn(x, op.kernel, op.stride, op.padding, backend=backend)


def _torch_pool_fn(op):
    torch = _torch()
    F = torch.nn.functional
    if op.op == "global_avg_pool2d":
        return lambda x: F.adaptive_avg_pool2d(x, 1)
    fn = F.max_pool2d if op.op == "max_pool2d" else F.avg_pool2d
    return lambda x: fn(x, op.kernel, op.stride, op.padding)


class PoolingWorkloads:
    """Pooling layers of the workloads, float32: kernels against torch."""

    params = [["kernels", "torch"], BACKENDS, list(workload_ops(POOL_OPS))]
    param_names = ["implementation", "backend", "layer"]
    timeout = 120
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.0

    def setup(self, implementation, backend, layer):
        require_backend(backend)
        op = workload_ops(POOL_OPS)[layer]
        x = _input(op.x_shape)
        if implementation == "torch":
            if backend != "cpu":
                raise NotImplementedError("torch runs with backend='cpu'")
            torch = _torch()
            fn, tx = _torch_pool_fn(op), torch.from_numpy(x)

            def run():
                with torch.no_grad():
                    return fn(tx)
        else:
            fn = _pool_fn(op, backend)

            def run():
                return fn(x)
        self.run = run
        warm_up(run, 2)

    def time_pool(self, implementation, backend, layer):
        self.run()


class PoolingBackwardWorkloads:
    """Gradients of the max and average pooling layers of the workloads."""

    OPS = ("max_pool2d", "avg_pool2d")
    params = [["kernels", "torch"], BACKENDS, list(workload_ops(OPS))]
    param_names = ["implementation", "backend", "layer"]
    timeout = 120
    number = 1
    repeat = (3, 10, 10.0)
    warmup_time = 0.0

    def setup(self, implementation, backend, layer):
        require_backend(backend)
        op = workload_ops(self.OPS)[layer]
        x = _input(op.x_shape)
        gy = _input(op.out_shape)
        geometry = (op.kernel, op.stride, op.padding)
        if implementation == "torch":
            if backend != "cpu":
                raise NotImplementedError("torch runs with backend='cpu'")
            torch = _torch()
            fn = _torch_pool_fn(op)
            tx = torch.from_numpy(x).requires_grad_()
            tgy = torch.from_numpy(gy)

            def run():
                tx.grad = None
                fn(tx).backward(tgy)
                return tx.grad
        else:
            backward = getattr(kernels, op.op + "_backward")

            def run():
                return backward(gy, x, *geometry, backend=backend)
        self.run = run
        warm_up(run, 2)

    def time_pool_backward(self, implementation, backend, layer):
        self.run()


TRANSPOSED_CONTENDERS = ALGORITHMS + ["auto", "torch"]


class TransposedWorkloads:
    """Transposed convolutions (U-Net up-convolutions) of the workloads."""

    params = [TRANSPOSED_CONTENDERS, BACKENDS,
              list(workload_ops(("conv_transpose2d",)))]
    param_names = ["algorithm", "backend", "layer"]
    timeout = 300
    number = 1
    repeat = (2, 5, 10.0)
    warmup_time = 0.0

    def setup(self, algorithm, backend, layer):
        require_backend(backend)
        op = workload_ops(("conv_transpose2d",))[layer]
        x, w = make_data(op.x_shape, op.w_shape)
        if algorithm == "torch":
            if backend != "cpu":
                raise NotImplementedError("torch runs with backend='cpu'")
            torch = _torch()
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)

            def run():
                with torch.no_grad():
                    return torch.nn.functional.conv_transpose2d(
                        tx, tw, None, op.stride, op.padding)
        else:
            if (algorithm in ALGORITHMS
                    and algorithm not in kernels.built_algorithms(backend)):
                raise NotImplementedError(f"{algorithm} is not built")

            def run():
                return kernels.conv_transpose2d(x, w, None, op.stride,
                                                op.padding,
                                                algorithm=algorithm,
                                                backend=backend)
        try:
            run()
        except kernels.UnsupportedConfiguration as exc:
            raise NotImplementedError(str(exc)) from None
        self.run = run
        skip_if_slow(run)

    def time_conv_transpose2d(self, algorithm, backend, layer):
        self.run()


def _backward_layers():
    return representative_layers(count=1)


class Conv2dBackwardWorkloads:
    """conv2d_backward (input, weight and bias gradients) on the smallest
    conv layer of every workload, float32."""

    params = [ALGORITHMS + ["auto", "torch"], BACKENDS,
              list(_backward_layers())]
    param_names = ["algorithm", "backend", "layer"]
    timeout = 300
    number = 1
    repeat = (2, 5, 10.0)
    warmup_time = 0.0

    def setup(self, algorithm, backend, layer):
        require_backend(backend)
        case = _backward_layers()[layer]
        x, w = make_data(case.x_shape, case.w_shape)
        gy = _input(output_shape(case))
        if algorithm == "torch":
            run = self._torch_runner(case, x, w, gy, backend)
        else:
            if (algorithm in ALGORITHMS
                    and algorithm not in kernels.built_algorithms(backend)):
                raise NotImplementedError(f"{algorithm} is not built")

            def run():
                return kernels.conv2d_backward(
                    gy, x, w, case.stride, case.padding, groups=case.groups,
                    algorithm=algorithm, backend=backend)
        try:
            run()
        except kernels.UnsupportedConfiguration as exc:
            raise NotImplementedError(str(exc)) from None
        self.run = run
        skip_if_slow(run)

    @staticmethod
    def _torch_runner(case, x, w, gy, backend):
        if backend != "cpu":
            raise NotImplementedError("torch runs with backend='cpu'")
        torch = _torch()
        pt, pb, pl, pr = zero_padding(case)
        if (pt, pl) != (pb, pr):
            raise NotImplementedError("asymmetric padding")
        grad = torch.nn.grad
        tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
        conf = dict(stride=case.stride, padding=(pt, pl), groups=case.groups)

        def run():
            gx = grad.conv2d_input(tx.shape, tw, tgy, **conf)
            gw = grad.conv2d_weight(tx, tw.shape, tgy, **conf)
            return gx, gw, tgy.sum(dim=(0, 2, 3))
        return run

    def time_conv2d_backward(self, algorithm, backend, layer):
        self.run()
