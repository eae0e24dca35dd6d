"""Winograd minimal-filtering convolution F(m x m, r x r) on CUDA.

The mathematics (Lavin & Gray's ``y = A^T [(G g) * (B^T d)]``, generated
exactly by Cook-Toom; supported kernels, tiles, error constants) is
backend-neutral and lives in :mod:`kernels._winograd_math`: this module
uses the same transforms, tiles and applicability rule as the CPU's
:mod:`kernels.cpu.winograd` and holds only the CUDA kernels and drivers.

**Stages** (NNPACK style; each is a public function with its own test),
with ``P = alpha_h alpha_w`` tuple positions ``p = xi alpha_w + nu``,
``T`` tiles of the whole batch ``t = (n tiles_h + i) tiles_w + j`` and
groups ``g``:

1. :func:`transform_kernel`  ``U[g, p, k, c] = (G_h w[k, c] G_w^T)[xi, nu]``,
   in float64, rounded once (once per weight array: cached);
2. :func:`transform_input`   ``V[g, p, c, t] = (B_h^T d_{t,c} B_w)[xi, nu]``,
   one thread per (channel, tile), reading the zero-padded input
   directly (taps outside the input read as zero; no padded copy);
3. :func:`tuple_gemm`        ``M[g, p] = U[g, p] @ V[g, p]``, one launch of
   the GEMM core (:mod:`kernels.cuda._gemm`) batched over ``G P``
   row-major (Kg x Cg) @ (Cg x T) products;
4. :func:`transform_output`  ``y[n, k, i m_h + a, j m_w + b] =
   (A_h^T M_t A_w)[a, b] + bias[k]``, one thread per (filter, tile);
   rows and columns past the output (partial edge tiles) are not
   written, and outputs whose window lies wholly in the zero padding are
   set to the bias exactly (as the CPU does: Winograd would compute them
   as a sum that cancels only up to rounding).

t is the fastest index of V and M, so the warps of stages 2 and 4 read
and write them in unit-stride runs, and stage 3 reads V's and writes M's
columns as the GEMM core's B and C (its loaders for plain row-major
matrices).  Groups run in the same launches (g is part of the GEMM batch
index and of the transform threads' channel index).

**Unfused, and why.**  V and M round-trip global memory: alpha^2 / m^2
times the input and output each (F(4x4, 3x3): 2.25x).  For ResNet's
64@56^2, batch 1, F(4x4, 3x3) in float32 the stages move x 0.80 MB,
V 1.81 MB written + read, U 0.59 MB, M 1.81 MB written + read, y 0.80 MB:
9.4 MB against 2.2 MB (x, U, y) for a fully fused kernel, for 58 MFLOP
of tuple GEMMs; so the unfused form is memory-bound on an H100/H200
(3.3-4.8 TB/s, V and M partly served by the 50 MB L2).  It keeps each
stage simple and testable, and the GEMM is the shared, tested core.
Fusing stage 2 into the GEMM's B loader (each element would be
re-transformed per 64-filter block row, alpha times the loads) or stages
2-4 per block of tiles in shared memory (alpha^2 (Cg + Kg) values per
tile) is future work; no GPU was lent to measure either.

**Transform kernels** (stages 1, 2, 4) are generated per tile: the
transform matrices become literals in straight-line code (zero
coefficients dropped, +-1 as additions), so every value lives in a
register, no matrix is read from memory and no local array exists.
Each applies ``Y = L X R^T`` as two passes (along rows, then columns);
the output columns are split into chunks so that at most
``WINOGRAD.max_live_values`` intermediates are live per thread (rows of
X are re-read, from L1, per chunk).  :func:`kernel_source` shows the
generated source.  ptxas (sm_90, numba-cuda 0.30): no spills and no
stack frame for any tile; registers float32/float64 of the input,
output and kernel transforms: F(4x4, 3x3) 70/122, 64/88, 56/64;
F(2x2, 3x3) 48/56, 42/52, 39/40; alpha = 8 F(4x4, 5x5) and F(2x2, 7x7)
96/128, <= 64/94, 128/126: all <= 128, i.e. >= 25% occupancy at 256
threads.  Exceptions, tiles only reachable with ``use_tile``:
F(6x6, 3x3) output 168/238 and input 94/130, F(3x3, 6x6) input 94/130
(12.5% occupancy; chunking does not help the output there, ptxas keeps
the re-read rows live; staging the tile in shared memory is future
work).  The tuple GEMM: 71/99 registers, 9/17 KiB static shared.

**Launch shapes.**  Transform kernels: 1-D grids of
``WINOGRAD.threads`` threads, one thread per (k, c) filter (stage 1),
(c, t) (stage 2) or (k, t) (stage 4), t fastest.  Tuple GEMM: the GEMM
core's ``gemm_grid(Kg, T, G P)`` with ``GEMM.threads``.

**Tile.**  The one requested with ``use_tile``, else
:func:`~kernels._winograd_math.tile_for`'s default (F(4, 3), F(4, 5),
...), reduced to m = 2 when the batch has fewer than
``WINOGRAD.min_gemm_tiles`` tiles (see :func:`tile_for_problem`).

**Determinism.**  Every output element is written by exactly one thread,
each sum in a fixed order (the GEMM core's increasing k); no atomics.

**Accuracy.**  Same transforms, tiles and orders of magnitude of
rounding as the CPU: the normwise bound of :mod:`kernels.accuracy`
(c = 128 for "winograd") holds for the default tiles (their measured
constants are <= 60); the transform sums are evaluated left to right
(NVVM contracts products and sums to FMAs, no fastmath).  Inputs are
finite: the front ends send NaN/Inf to "direct".

**Weights.**  ``TransformedWeights.U`` is a device array of shape
``(groups, P, K // groups, C // groups)`` (the CPU's is ``(groups, P,
C // groups, K // groups)`` on the host; one of those passed to
:func:`conv2d_pretransformed` is transposed and copied to the device);
``.weights`` is the filters where they were given (host or device; the
front end runs non-finite inputs through "direct" with them).  ``conv2d`` with host filters caches the
transform in :data:`kernels._weight_cache.transformed_weights` (kind
"winograd", key ("cuda", tile, groups)); device filters are transformed
on every call (their bits cannot be compared without a copy).

**Scratch.**  V and M live in per-thread, per-stream device buffers that
grow as needed; ``winograd_clear_workspace`` drops them.
"""

from __future__ import annotations

import functools
import linecache
import threading

import numpy as np

from .._dispatch import Kernel
from .._weight_cache import transformed_weights
from .._winograd_math import (Tile, TransformedWeights, requested_tile,
                              tile_counts, tile_for, transform_matrices,
                              unsupported_reason)
from ..geometry import conv_output_size
from ._gemm import batched_matmul, gemm_kernel, matrix_loaders
from ._runtime import (ReportEntry, cuda, device_entry, grid,
                       is_device_array, numba_type, require_device,
                       to_device)
from ._tuning import GEMM, WINOGRAD

__all__ = ["KERNELS", "REPORT", "clear_workspace", "conv2d",
           "conv2d_transformed", "kernel_source", "tile_for_problem",
           "transform_input", "transform_kernel", "transform_output",
           "transform_weights", "tuple_gemm", "unsupported_reason"]


# --------------------------------------------------------------------------
# Kernel generation: Y = L X R^T as straight-line code with literal
# coefficients
# --------------------------------------------------------------------------

def _linear_combination(coeffs, names, cast):
    """Source of ``sum_j coeffs[j] * names[j]``, zero terms dropped, +-1
    as additions, constants cast to the kernel's type, left to right."""
    terms = []
    for c, name in zip(coeffs, names):
        c = float(c)
        if c == 0:
            continue
        magnitude = name if abs(c) == 1 else f"{cast}({abs(c)!r}) * {name}"
        terms.append(("-" if c < 0 else "+", magnitude))
    if not terms:
        return f"{cast}(0.0)"
    # Start with the first positive term (a - b rather than -(b) + a).
    lead = next((i for i, (sign, _) in enumerate(terms) if sign == "+"), 0)
    sign, first = terms.pop(lead)
    expr = first if sign == "+" else f"-({first})"
    for sign, term in terms:
        expr += f" {sign} {term}"
    return expr


def _separable(left, right, load, store, cast, max_live):
    """Lines computing ``Y = left @ X @ right.T``.

    ``X`` (q x t) element (i, j) is the expression ``load(i, j)``; each
    ``Y[a, b]`` (p x s) is passed as a variable name to ``store(a, b,
    name)``, which returns lines.  Pass 1 along rows ``h[i, b] = sum_j
    right[b, j] X[i, j]``, pass 2 along columns ``Y[a, b] = sum_i left[a,
    i] h[i, b]``, over chunks of output columns b such that at most
    ``max_live`` values h are live (X's rows are re-read per chunk).
    """
    p, q = left.shape
    s, t = right.shape
    rows = [i for i in range(q) if np.any(left[:, i] != 0)]
    chunk = max(1, min(s, max_live // max(1, len(rows))))
    lines = []
    for b0 in range(0, s, chunk):
        cols = range(b0, min(s, b0 + chunk))
        needed = [j for j in range(t) if np.any(right[list(cols), j] != 0)]
        for i in rows:
            for j in needed:
                lines.append(f"x_{i}_{j} = {load(i, j)}")
            for b in cols:
                lines.append(f"h_{i}_{b} = " + _linear_combination(
                    right[b], [f"x_{i}_{j}" for j in range(t)], cast))
        for a in range(p):
            for b in cols:
                lines.append(f"y_{a}_{b} = " + _linear_combination(
                    left[a], [f"h_{i}_{b}" for i in range(q)], cast))
                lines += store(a, b, f"y_{a}_{b}")
    return lines


_SOURCES = {}


def _compile(name, template, body, namespace):
    """``cuda.jit`` of ``template`` with ``{body}`` filled in (indented);
    the source is registered with linecache for tracebacks."""
    source = template.replace("{body}", "\n".join("    " + line for line in body))
    filename = f"<winograd-cuda {name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True),
                                 filename)
    _SOURCES[name] = source
    scope = {"cuda": cuda, **namespace}
    exec(compile(source, filename, "exec"), scope)  # noqa: S102 - generated here
    return cuda.jit(scope[template.split("(")[0].split()[-1]])


def kernel_source(stage, tile, dtype):
    """The generated source of a transform kernel: ``stage`` is "kernel",
    "input" or "output" (builds it if needed)."""
    build = {"kernel": _kernel_transform_kernel, "input": _input_kernel,
             "output": _output_kernel}[stage]
    build(tile, np.dtype(dtype))
    return _SOURCES[_kernel_name(stage, tile, dtype)]


def _kernel_name(stage, tile, dtype):
    return (f"{stage}_{tile.m_h}x{tile.m_w}_{tile.r_h}x{tile.r_w}_"
            f"{np.dtype(dtype).name}")


# ---- stage 1: kernel transform ------------------------------------------

_KERNEL_TEMPLATE = '''\
def winograd_kernel_transform(w, u, groups):
    """u[g, p, kl, c] = (G_h w[k, c] G_w^T)[p], float64, one thread per (k, c)."""
    idx = cuda.grid(1)
    K = w.shape[0]
    C = w.shape[1]
    if idx >= K * C:
        return
    k = idx // C
    c = idx - k * C
    kg = K // groups
    g = k // kg
    kl = k - g * kg
{body}
'''


@functools.lru_cache(maxsize=None)
def _kernel_transform_kernel(tile, dtype):
    _, G_h, _ = transform_matrices(tile.m_h, tile.r_h)
    _, G_w, _ = transform_matrices(tile.m_w, tile.r_w)
    a_w = tile.alpha_w
    body = _separable(
        G_h, G_w, lambda i, j: f"F64(w[k, c, {i}, {j}])",
        lambda a, b, v: [f"u[g, {a * a_w + b}, kl, c] = OUT({v})"],
        "F64", WINOGRAD.max_live_values)
    from numba import float64
    return _compile(_kernel_name("kernel", tile, dtype), _KERNEL_TEMPLATE,
                    body, {"F64": float64, "OUT": numba_type(dtype)})


# ---- stage 2: input transform ---------------------------------------------

_INPUT_TEMPLATE = '''\
def winograd_input_transform(x, v, groups, tiles_h, tiles_w, top, left):
    """v[g, p, cl, t] = (B_h^T d B_w)[p], one thread per (c, t)."""
    idx = cuda.grid(1)
    C = x.shape[1]
    H = x.shape[2]
    W = x.shape[3]
    per_image = tiles_h * tiles_w
    T = x.shape[0] * per_image
    if idx >= C * T:
        return
    c = idx // T
    t = idx - c * T
    cg = C // groups
    g = c // cg
    cl = c - g * cg
    n = t // per_image
    ti = (t - n * per_image) // tiles_w
    tj = t - n * per_image - ti * tiles_w
    r0 = ti * M_H - top
    c0 = tj * M_W - left
{body}
'''


@functools.lru_cache(maxsize=None)
def _input_kernel(tile, dtype):
    _, _, BT_h = transform_matrices(tile.m_h, tile.r_h)
    _, _, BT_w = transform_matrices(tile.m_w, tile.r_w)
    a_h, a_w = tile.alpha_h, tile.alpha_w
    inside = ([f"in_r{i} = r0 + {i} >= 0 and r0 + {i} < H" for i in range(a_h)]
              + [f"in_c{j} = c0 + {j} >= 0 and c0 + {j} < W" for j in range(a_w)])
    body = inside + _separable(
        BT_h, BT_w,
        lambda i, j: f"x[n, c, r0 + {i}, c0 + {j}] if in_r{i} and in_c{j} else DT(0.0)",
        lambda a, b, val: [f"v[g, {a * a_w + b}, cl, t] = {val}"],
        "DT", WINOGRAD.max_live_values)
    return _compile(_kernel_name("input", tile, dtype), _INPUT_TEMPLATE, body,
                    {"DT": numba_type(dtype), "M_H": tile.m_h, "M_W": tile.m_w})


# ---- stage 4: output transform ---------------------------------------------

_OUTPUT_TEMPLATE = '''\
def winograd_output_transform(m, bias, y, has_bias, tiles_h, tiles_w,
                              row_lo, row_hi, col_lo, col_hi):
    """y[n, k, tile] = A_h^T m[.., kl, t] A_w + bias[k], one thread per (k, t).

    Outputs outside rows row_lo..row_hi or columns col_lo..col_hi see
    only zero padding: they get the bias exactly."""
    idx = cuda.grid(1)
    K = y.shape[1]
    Ho = y.shape[2]
    Wo = y.shape[3]
    per_image = tiles_h * tiles_w
    T = y.shape[0] * per_image
    if idx >= K * T:
        return
    k = idx // T
    t = idx - k * T
    kg = m.shape[2]
    g = k // kg
    kl = k - g * kg
    n = t // per_image
    ti = (t - n * per_image) // tiles_w
    tj = t - n * per_image - ti * tiles_w
    r0 = ti * M_H
    c0 = tj * M_W
    shift = bias[k] if has_bias else DT(0.0)
{body}
'''


@functools.lru_cache(maxsize=None)
def _output_kernel(tile, dtype):
    AT_h, _, _ = transform_matrices(tile.m_h, tile.r_h)
    AT_w, _, _ = transform_matrices(tile.m_w, tile.r_w)
    a_w = tile.alpha_w
    flags = ([f"out_r{a} = r0 + {a} < Ho" for a in range(tile.m_h)]
             + [f"out_c{b} = c0 + {b} < Wo" for b in range(tile.m_w)]
             + [f"win_r{a} = r0 + {a} >= row_lo and r0 + {a} <= row_hi"
                for a in range(tile.m_h)]
             + [f"win_c{b} = c0 + {b} >= col_lo and c0 + {b} <= col_hi"
                for b in range(tile.m_w)])

    def store(a, b, val):
        return [f"if out_r{a} and out_c{b}:",
                f"    if win_r{a} and win_c{b}:",
                f"        y[n, k, r0 + {a}, c0 + {b}] = {val} + shift",
                "    else:",
                f"        y[n, k, r0 + {a}, c0 + {b}] = shift"]

    body = flags + _separable(
        AT_h, AT_w, lambda i, j: f"m[g, {i * a_w + j}, kl, t]", store, "DT",
        WINOGRAD.max_live_values)
    return _compile(_kernel_name("output", tile, dtype), _OUTPUT_TEMPLATE, body,
                    {"DT": numba_type(dtype), "M_H": tile.m_h, "M_W": tile.m_w})


# --------------------------------------------------------------------------
# Scratch: V and M per thread and stream
# --------------------------------------------------------------------------

class _Workspace(threading.local):
    def __init__(self):
        self.buffers = {}


_workspace = _Workspace()


def _scratch(name, shape, dtype, stream):
    """A device array of ``shape`` viewing a kept buffer (grown as needed).

    Kept per thread and per stream: work queued on one stream never sees
    its scratch overwritten by another stream's."""
    size = int(np.prod(shape))
    key = (name, np.dtype(dtype).str, id(stream) if stream else 0)
    buf = _workspace.buffers.get(key)
    if buf is None or buf.size < size:
        buf = cuda.device_array(size, dtype, stream=stream)
        _workspace.buffers[key] = buf
    return buf[:size].reshape(shape)


def clear_workspace():
    """Drop the calling thread's device scratch (V and M buffers)."""
    _workspace.buffers.clear()


# --------------------------------------------------------------------------
# Stage drivers
# --------------------------------------------------------------------------

def _launch(kernel, items, stream, *args):
    kernel[grid(items, WINOGRAD.threads), WINOGRAD.threads, stream](*args)


def transform_kernel(w, tile, groups=1, stream=0):
    """Stage 1: filters ``w`` (K, C // groups, r_h, r_w) -> device ``U``
    (groups, alpha_h alpha_w, K // groups, C // groups), computed in
    float64 and rounded once to ``w``'s dtype."""
    w = to_device(w, stream)
    K, cg = w.shape[:2]
    u = cuda.device_array((groups, tile.alpha_h * tile.alpha_w, K // groups,
                           cg), w.dtype, stream=stream)
    _launch(_kernel_transform_kernel(tile, np.dtype(w.dtype)), K * cg, stream,
            w, u, groups)
    return u


def transform_input(x, tile, padding, out_hw, groups=1, out=None, stream=0):
    """Stage 2: ``V[g, p, cl, t] = (B_h^T d B_w)[p]`` for every tile.

    ``x`` (N, C, H, W); ``padding`` (top, bottom, left, right) zeros;
    ``out_hw`` the output size.  ``d`` is the alpha_h x alpha_w patch of
    the padded channel ``g C/groups + cl`` whose top-left corner is at
    padded (i m_h, j m_w) for tile ``t = (n tiles_h + i) tiles_w + j``.
    Returns ``out`` (allocated when None), a device array (groups,
    alpha_h alpha_w, C // groups, T).
    """
    x = to_device(x, stream)
    n_img, C = x.shape[:2]
    tiles_h, tiles_w = tile_counts(out_hw, tile)
    T = n_img * tiles_h * tiles_w
    if out is None:
        out = cuda.device_array((groups, tile.alpha_h * tile.alpha_w,
                                 C // groups, T), x.dtype, stream=stream)
    _launch(_input_kernel(tile, np.dtype(x.dtype)), C * T, stream, x, out,
            groups, tiles_h, tiles_w, padding[0], padding[2])
    return out


def tuple_gemm(U, V, out=None, stream=0):
    """Stage 3: ``M[g, p] = U[g, p] @ V[g, p]``, (Kg x Cg) @ (Cg x T) for
    every group and tuple position, one batched GEMM-core launch.
    Returns ``out`` (allocated when None), (groups, P, Kg, T)."""
    U = to_device(U, stream)
    V = to_device(V, stream)
    groups, n_pos, kg, cg = U.shape
    T = V.shape[3]
    if out is None:
        out = cuda.device_array((groups, n_pos, kg, T), V.dtype, stream=stream)
    batched_matmul(U.reshape(groups * n_pos, kg, cg),
                   V.reshape(groups * n_pos, cg, T),
                   out.reshape(groups * n_pos, kg, T), stream=stream)
    return out


def transform_output(M, tile, out_shape, bias=None, in_hw=None,
                     padding=(0, 0, 0, 0), out=None, stream=0):
    """Stage 4: ``y[n, k, i m_h + a, j m_w + b] = (A_h^T M_t A_w)[a, b] +
    bias[k]``, with ``M_t[xi, nu] = M[g, xi alpha_w + nu, kl, t]``, ``k = g
    Kg + kl``; partial edge tiles cropped to ``out_shape`` (N, K, Ho, Wo).

    With ``in_hw`` (the input's (H, W)) and ``padding``, outputs whose
    window holds only padding are the bias exactly.  Returns ``out``
    (allocated when None), a device array.
    """
    M = to_device(M, stream)
    n_img, K, Ho, Wo = out_shape
    if out is None:
        out = cuda.device_array(tuple(out_shape), M.dtype, stream=stream)
    if in_hw is None:
        rows, cols = (0, Ho - 1), (0, Wo - 1)
    else:
        # Output i sees padded positions i .. i + r - 1; real ones lo .. lo + n - 1.
        rows = (max(0, padding[0] - tile.r_h + 1), padding[0] + in_hw[0] - 1)
        cols = (max(0, padding[2] - tile.r_w + 1), padding[2] + in_hw[1] - 1)
    has_bias = bias is not None
    bias = (to_device(bias, stream) if has_bias
            else cuda.device_array(1, M.dtype, stream=stream))
    tiles_h, tiles_w = tile_counts((Ho, Wo), tile)
    _launch(_output_kernel(tile, np.dtype(M.dtype)),
            K * n_img * tiles_h * tiles_w, stream, M, bias, out,
            int(has_bias), tiles_h, tiles_w, rows[0], rows[1], cols[0], cols[1])
    return out


# --------------------------------------------------------------------------
# Convolution drivers
# --------------------------------------------------------------------------

def tile_for_problem(kernel_hw, out_hw, n_img, tuning=WINOGRAD):
    """The default tile: :func:`tile_for`'s, or m = 2 (where smaller) when
    the batch has fewer than ``tuning.min_gemm_tiles`` tiles."""
    tile = tile_for(kernel_hw)
    tiles_h, tiles_w = tile_counts(out_hw, tile)
    if n_img * tiles_h * tiles_w >= tuning.min_gemm_tiles:
        return tile
    return tile._replace(m_h=min(tile.m_h, 2), m_w=min(tile.m_w, 2))


def _tile(spec):
    if requested_tile() is not None:
        return tile_for(spec.w_shape[2:], requested_tile())
    return tile_for_problem(spec.w_shape[2:], spec.out_hw, spec.x_shape[0])


def conv2d_transformed(x, U, tile, bias, padding, stream=0):
    """Stride-1 convolution of device ``x`` (N, C, H, W) with device ``U``
    (groups, P, Kg, Cg) from :func:`transform_kernel`: stages 2-4.
    Returns a new device array (N, groups Kg, Ho, Wo)."""
    n_img, C, H, W = x.shape
    groups, n_pos, kg, cg = U.shape
    Ho, Wo = (conv_output_size(n, r, padding=pads) for n, r, pads in
              ((H, tile.r_h, padding[:2]), (W, tile.r_w, padding[2:])))
    tiles_h, tiles_w = tile_counts((Ho, Wo), tile)
    T = n_img * tiles_h * tiles_w
    V = transform_input(x, tile, padding, (Ho, Wo), groups,
                        _scratch("V", (groups, n_pos, cg, T), x.dtype, stream),
                        stream)
    M = tuple_gemm(U, V, _scratch("M", (groups, n_pos, kg, T), x.dtype, stream),
                   stream)
    y = cuda.device_array((n_img, groups * kg, Ho, Wo), x.dtype, stream=stream)
    return transform_output(M, tile, y.shape, bias, (H, W), padding, y, stream)


def _device_U(transformed, stream):
    """U on the device in this module's layout; a CPU-made (host,
    (groups, P, Cg, Kg)) U is transposed and copied."""
    if is_device_array(transformed.U):
        return transformed.U
    U = np.ascontiguousarray(np.swapaxes(transformed.U, 2, 3))
    return to_device(U, stream)


# --------------------------------------------------------------------------
# The backend contract (kernels._dispatch)
# --------------------------------------------------------------------------

def transform_weights(w, tile, groups=1, stream=0):
    """``winograd_transform_weights``: a :class:`TransformedWeights` whose
    ``U`` is on the device (see the module docstring) and whose
    ``weights`` is ``w`` itself, host or device array (a reference: pass a
    private copy if the caller may modify it; the front end does)."""
    require_device()
    U = transform_kernel(w, tile, int(groups), stream)
    return TransformedWeights(U, w, tile, int(groups))


def _conv2d_pretransformed(spec, x, transformed, bias, stream=0):
    return conv2d_transformed(x, _device_U(transformed, stream),
                              transformed.tile, bias, spec.padding, stream)


conv2d_pretransformed = device_entry(_conv2d_pretransformed)


def conv2d(spec, x, w, bias, stream=0):
    """``conv2d``: the tile from ``use_tile`` or :func:`tile_for_problem`;
    host filters' transforms are cached (the weight cache, kind
    "winograd", key ("cuda", tile, groups)), device filters' are not.
    Host ``x`` gives a host result, device ``x`` a device array."""
    require_device()
    reason = unsupported_reason(*spec.config())
    if reason is not None:
        raise ValueError(reason)
    tile = _tile(spec)
    if is_device_array(w):
        U = transform_kernel(w, tile, spec.groups, stream)
    else:
        def transform(own):
            U = transform_kernel(own, tile, spec.groups, stream)
            if stream:       # cached: complete before another stream uses it
                stream.synchronize()
            return TransformedWeights(U, own, tile, spec.groups)
        U = transformed_weights.get(np.ascontiguousarray(w), "winograd",
                                    ("cuda", tile, spec.groups), transform).U
    return _conv2d_with_U(spec, x, U, tile, bias, stream=stream)


def _conv2d_with_U_inner(spec, x, U, tile, bias, stream=0):
    return conv2d_transformed(x, U, tile, bias, spec.padding, stream)


_conv2d_with_U = device_entry(_conv2d_with_U_inner)


def _unsupported(spec):
    return unsupported_reason(*spec.config())


KERNELS = {
    ("conv2d", "winograd"): Kernel(conv2d, _unsupported),
    ("winograd_transform_weights", "winograd"): Kernel(transform_weights),
    ("conv2d_pretransformed", "winograd"): Kernel(conv2d_pretransformed),
    ("winograd_clear_workspace", "winograd"): Kernel(clear_workspace),
}


# --------------------------------------------------------------------------
# What the compilation report builds
# --------------------------------------------------------------------------

# The default 3x3 tile, and an alpha = 8 one (the most live values).
_REPORT_TILES = (Tile(4, 4, 3, 3), Tile(4, 4, 5, 5))


def _signature(*dims):
    def signature(dtype):
        from numba import types
        t = numba_type(dtype)
        arrays = [t[(slice(None),) * (d - 1) + (slice(None, None, 1),)]
                  if d else types.int64 for d in dims]
        return tuple(arrays)
    return signature


def _gemm_signature(dtype):
    from numba import types
    arr = numba_type(dtype)[:, :, ::1]
    return (arr, arr, arr, types.UniTuple(types.int64, 1), types.int64,
            types.int64, types.int64)


def _report_entries():
    entries = []
    for tile in _REPORT_TILES:
        f = f"F({tile.m_h}x{tile.m_w}, {tile.r_h}x{tile.r_w})"
        entries += [
            ReportEntry("winograd", f"kernel_transform {f}",
                        functools.partial(_kernel_transform_kernel, tile),
                        _signature(4, 4, 0), WINOGRAD.threads,
                        note="stage 1, float64 arithmetic"),
            ReportEntry("winograd", f"input_transform {f}",
                        functools.partial(_input_kernel, tile),
                        _signature(4, 4, 0, 0, 0, 0, 0), WINOGRAD.threads,
                        note="stage 2"),
            ReportEntry("winograd", f"output_transform {f}",
                        functools.partial(_output_kernel, tile),
                        _signature(4, 1, 4, *(0,) * 7), WINOGRAD.threads,
                        note="stage 4"),
        ]
    entries.append(ReportEntry(
        "winograd", "tuple_gemm",
        lambda dtype: gemm_kernel(*matrix_loaders(), np.dtype(dtype)),
        _gemm_signature, GEMM.threads, note="stage 3: GEMM core, row-major"))
    return entries


REPORT = _report_entries()
