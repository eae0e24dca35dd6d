"""Task-parallel path of the CPU FFT convolution (few channels).

With few channels (frequency-lane contraction) every block of tiles goes
through all four stages on its own: pad its input window, forward
transforms, multiply, inverse transforms, scatter.  Blocks are tasks
pulled by Python threads from a shared counter, each stage single-threaded
(one-thread FFTW plans, serial Numba kernels that release the GIL).
Measured on the 2-vCPU development VM, 1024^2 image, one channel: the
staged path (each stage spread over both threads by FFTW, prange or BLAS)
took 3.5 ms back to back but 4.3-6.4 ms right after a 14 ms
single-threaded call and 6.7 ms after 14 ms asleep: a vCPU that idled
runs slowly for milliseconds, and every stage waited for it.  Tasks let
the fast thread take more blocks, wake the pool once per call instead of
once per stage, and keep a block's buffers in L2 between its stages.

The cut into blocks follows FFTTuning (kernels/cpu/_tuning.py): a block's
buffers (input window, spectra, output tiles) fit in task_bytes, and a
problem is cut into at least tasks_per_thread blocks per thread
(block_shape_threads()), when it has enough tiles, so that a slow thread
holds up the call by a fraction of a block, unless that leaves a block
less than min_task_seconds of work (cost model): a block costs ~20 us of
Python (with the GIL held) on top.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import OrderedDict

import numba
import numpy as np

from .. import _fft_geometry
from .._fft_geometry import overlapping_tiles, input_window
from . import _blas, _tuning
from ._fft_kernels import (scatter_tiles_serial, fill_window, lane_product,
                           phase_info)
from ._fft_model import per_tile_seconds
from ._fft_plans import aligned_width, empty_aligned, fftw_plan, transform_axes

__all__ = ["task_blocks"]


def task_blocks(geom, tuning=None):
    """Cut the tiles of every image into blocks (the tasks).

    :func:`kernels._fft_geometry.task_blocks` with the budgets of
    ``tuning`` (default ``_tuning.current().fft``), the block-shape thread
    count :func:`_tuning.block_shape_threads` (fixed per process: results
    must not change with ``numba.set_num_threads``) and the cost model's
    time per tile.
    """
    if tuning is None:
        tuning = _tuning.current().fft
    return _fft_geometry.task_blocks(
        geom, tuning.task_bytes, tuning.tasks_per_thread,
        tuning.min_task_seconds, _tuning.block_shape_threads(),
        per_tile_seconds(geom))


class WeightSpectra:
    """Filter spectra that one task worker computes while the others start.

    With a cache miss, worker 0 transforms the filters (single-threaded)
    before its first block, while the other workers pad and transform
    their first blocks' inputs; every worker waits only when it reaches
    its first contraction.  The 576^2 tiles of a 1024^2 image with a 63^2
    kernel spent 0.3 ms (of 4.5) in the filter transform before any block
    could start.

    ``spectra(slot)`` returns them: looked up in the weight cache, or
    transformed with worker ``slot``'s single-threaded plans.
    """

    def __init__(self, geom, spectra):
        self.geom, self._spectra = geom, spectra
        self.error = None
        self.ready = threading.Event()

    def _publish(self, spectra):
        spectra = np.ascontiguousarray(spectra)
        self.w3 = spectra.reshape(spectra.shape[0], self.geom.k, -1).view(
            self.geom.dtype)
        self.ready.set()

    def compute(self, slot):
        """Look them up or compute them (worker ``slot``); never raises."""
        try:
            self._publish(self._spectra(slot))
        except BaseException as exc:   # re-raised by every waiting worker
            self.error = exc
            self.ready.set()

    def get(self):
        """The (Cg', K, 2F) real view, waiting for it if needed."""
        self.ready.wait()
        if self.error is not None:
            raise self.error
        return self.w3


class _Scratch:
    """One worker's buffers, sized for the largest block, reused per block."""

    def __init__(self, geom, block):
        self.block = block
        t0, t1 = geom.tile_shape
        f0, f1h = geom.spectrum_shape
        m, c, k = block.tiles, geom.channels, geom.k
        rows, cols = input_window(geom, block.rows, block.cols)
        self.width = aligned_width(cols, geom.dtype)
        self.window = empty_aligned(block.images * c * rows * self.width, geom.dtype)
        self.x_spec = empty_aligned(m * c * f0 * f1h, geom.complex_dtype)
        self.y_spec = (self.x_spec if c == 1 and k == 1
                       else empty_aligned(m * k * f0 * f1h, geom.complex_dtype))
        self.tiles = empty_aligned(m * k * t0 * t1, geom.dtype)
        self.nbytes = sum(a.nbytes for a in {id(a): a for a in (
            self.window, self.x_spec, self.y_spec, self.tiles)}.values())

    def views(self, geom, shape):
        """(window, tile view, X, Y, output tiles) for blocks of ``shape``.

        ``shape`` is a block's (images, rows, cols); the views of every
        block of one shape are the same memory.
        """
        images, n_rows, n_cols = shape
        t0, t1 = geom.tile_shape
        f0, f1h = geom.spectrum_shape
        m, c, k = images * n_rows * n_cols, geom.channels, geom.k
        rows = input_window(geom, n_rows, n_cols)[0]
        window = self.window[:images * c * rows * self.width].reshape(
            images, c, rows, self.width)
        tiles = overlapping_tiles(window, geom, n_rows, n_cols)
        x_spec = self.x_spec[:m * c * f0 * f1h].reshape(
            (images, n_rows, n_cols, c, f0, f1h))
        y_spec = self.y_spec[:m * k * f0 * f1h].reshape(m, k, f0, f1h)
        z = self.tiles[:m * k * t0 * t1].reshape(m, k, t0, t1)
        return window, tiles, x_spec, y_spec, z


class _Worker:
    """One task worker slot's buffers, plans and views (kept per geometry).

    Each block shape gets the views of this worker's scratch and the
    worker slot's forward and inverse plans; :meth:`bound` holds the plans
    (their locks) with these arrays bound, so that a block only runs
    ``execute``: no per-block array checks.
    """

    def __init__(self, geom, blocks, slot):
        self.geom = geom
        self.scratch = _Scratch(geom, blocks[0])
        real = geom.dtype
        self.shapes = {}
        for shape in dict.fromkeys(b.shape for b in blocks):
            window, tiles, x_spec, y_spec, z = self.scratch.views(geom, shape)
            fwd, inv = self._plans(shape, tiles, x_spec, y_spec, z, slot)
            m = z.shape[0]
            self.shapes[shape] = dict(
                window=window, tiles=tiles, x_spec=x_spec, y_spec=y_spec, z=z,
                fwd=fwd, inv=inv,
                x3=x_spec.reshape(m, geom.channels, -1).view(real),
                y3=y_spec.reshape(m, geom.k, -1).view(real))

    def _plans(self, shape, tiles, x_spec, y_spec, z, slot):
        geom = self.geom

        # Planning overwrites its arrays: plan on a twin of the scratch.
        def twin():
            return _Scratch(geom, self.scratch.block).views(geom, shape)

        fwd = fftw_plan(tiles, x_spec, transform_axes(6, geom.tile_shape),
                    "FFTW_FORWARD", lambda: twin()[1:3], slot)
        inv = fftw_plan(y_spec, z, transform_axes(4, geom.tile_shape),
                    "FFTW_BACKWARD", lambda: twin()[3:5], slot)
        return fwd, inv

    @contextlib.contextmanager
    def bound(self):
        """Hold this worker's plans, bound to its arrays."""
        views = self.shapes.values()
        pairs = [(v["fwd"], v["tiles"], v["x_spec"]) for v in views]
        pairs += [(v["inv"], v["y_spec"], v["z"]) for v in views]
        with contextlib.ExitStack() as stack:
            # One global order (by identity), so concurrent calls whose
            # workers share plans cannot deadlock.
            for plan, src, dst in sorted(pairs, key=lambda p: id(p[0])):
                stack.enter_context(plan.lock)
                plan.fftw.update_arrays(src, dst)
            yield

    def run(self, x, weights, bias, y, block, info):
        """All four stages for the tiles of ``block`` (single-threaded).

        Call inside :meth:`bound`.  ``weights``: a :class:`WeightSpectra`;
        ``info``: :func:`~kernels.cpu._fft_kernels.phase_info`.
        """
        geom = self.geom
        rows, cols = geom.rows, geom.cols
        v = self.shapes[block.shape]
        fill_window(x[block.n0:block.n0 + block.images], v["window"], geom,
                    block.i0 * rows.b, block.j0 * cols.b, info, serial=True)
        v["fwd"].fftw.execute()
        lane_product(v["x3"], weights.get(), v["y3"], geom.groups,
                     serial=True)
        v["inv"].fftw.execute()
        scatter_tiles_serial(v["z"], y, bias, 0, block.n0, block.i0,
                              block.j0, block.rows, block.cols, rows.b,
                              cols.b)


class _TaskPlan:
    """What the task path needs for one geometry, kept across calls.

    The blocks, the phase tables and each worker slot's buffers and bound
    plans: building them took ~0.15 ms per call (two workers), 4 % of a
    1024^2 convolution.  A worker is only used inside its ``bound()``
    (which holds its plans' locks); each thread that runs a slot gets its
    own worker, so concurrent calls of one geometry do not take turns.
    """

    def __init__(self, geom, tuning):
        self.geom = geom
        self.blocks = task_blocks(geom, tuning)
        self.phase_info = phase_info(geom)
        self._workers = {}
        self._lock = threading.Lock()
        self.nbytes = 0

    def worker(self, slot):
        """The calling thread's buffers and plans (made for ``slot`` the
        first time): concurrent calls from several threads share none."""
        key = threading.get_ident()
        with self._lock:
            w = self._workers.get(key)
            if w is None:
                w = self._workers[key] = _Worker(self.geom, self.blocks, slot)
                self.nbytes += w.scratch.nbytes
            return w


# (geometry, tunables of the cut into blocks) -> _TaskPlan; kept (least
# recently used first out) while their buffers total at most
# FFTTuning.task_plan_bytes.
_task_plans = OrderedDict()
_task_plans_lock = threading.Lock()


def _task_plan(geom, tuning):
    key = (geom, tuning.task_bytes, tuning.tasks_per_thread,
           tuning.min_task_seconds)
    with _task_plans_lock:
        plan = _task_plans.get(key)
        if plan is None:
            plan = _task_plans[key] = _TaskPlan(geom, tuning)
        _task_plans.move_to_end(key)
        total = sum(p.nbytes for p in _task_plans.values())
        while total > tuning.task_plan_bytes and len(_task_plans) > 1:
            _, old = _task_plans.popitem(last=False)
            total -= old.nbytes
    return plan


def conv2d_tasks(x, weights, bias, geom, tuning):
    """The FFT convolution as tasks over blocks of tiles (few channels).

    ``weights`` is a :class:`WeightSpectra`, ``tuning`` the call's
    FFTTuning (the worker threads read no tunables: the blocks are cut
    here).
    """
    plan = _task_plan(geom, tuning)
    blocks, phase_info = plan.blocks, plan.phase_info
    n_workers = max(1, min(numba.get_num_threads(), len(blocks)))
    y = np.empty(geom.out_shape, dtype=geom.dtype)
    if bias is None:
        bias = np.zeros(geom.k, geom.dtype)
    counter = itertools.count()

    def work(slot):
        if slot == 0:
            weights.compute(slot)
        worker = plan.worker(slot)
        with worker.bound():
            for t in iter(counter.__next__, None):
                if t >= len(blocks):
                    return
                worker.run(x, weights, bias, y, blocks[t], phase_info)

    if n_workers == 1:
        work(0)
        return y
    pool = _blas.thread_pool(n_workers - 1)
    futures = [pool.submit(work, slot) for slot in range(1, n_workers)]
    try:
        work(0)
    finally:
        for future in futures:
            future.result()
    return y


def clear_task_plans():
    """Forget every task plan."""
    with _task_plans_lock:
        _task_plans.clear()


def task_plan_info():
    """(task plans held, bytes of their buffers)."""
    with _task_plans_lock:
        return (len(_task_plans),
                sum(p.nbytes for p in _task_plans.values()))
