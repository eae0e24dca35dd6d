"""Images larger than memory: kernels.dask on a LocalCluster (issue 13).

``convbench dask`` measures megapixels per second of single-channel
filters (5x5 and 31x31 by default, ``algorithm="auto"``, zero ``same``
padding) over a ``size``-square float32 image that is generated chunk by
chunk on the workers and never held whole in one process (read from a
:class:`GeneratedImage` store through ``dask.array.from_array``, or with
``source="computed"`` made by a task per chunk): the graph ends
in a sum of the output, so only one number comes back.  Each run is
timed on a ``distributed.LocalCluster`` of 1 and of ``workers`` worker
processes with one thread each, and against the in-memory kernel on a
``reference``-square image in this process (Numba's default threads, and
one thread).

Each graph runs once untimed first (its time is kept as
``first_seconds``: FFTW plans and weight transforms for each block shape
are made then, in every worker), then ``rounds`` timed runs.  The same
graphs also run on Dask's threaded scheduler in this process (``workers``
threads, one kernel thread each), for comparison.

Reported per filter: the median MP/s and its min-max over ``rounds``,
the generation alone (the same graph with the filter left out, so what
the filter costs can be read off), the scaling efficiency ``MP/s(w
workers) / (w MP/s(1 worker))``, the ratio to the in-memory kernel, and
each worker's peak resident memory (``getrusage``'s high-water mark) less
its resident memory after the warm-up, in units of one input chunk, the
same for the timed runs of each filter alone (polled, :func:`sampled_rss`),
and the peak of Dask-managed memory (task results held; one more run
sampled every 5 ms) per worker.  ``saturation`` sets the scheduler's
``worker-saturation`` (Dask's default: None).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import threading
import time

import numpy as np

__all__ = ["GeneratedImage", "generated_image", "gaussian", "checksum",
           "filtered", "local_cluster", "warm_up", "resident_memory",
           "sampled_rss", "peak_memory_increase", "measure",
           "format_results", "run"]


def _values(r0, r1, c0, c1):
    """A smooth test pattern plus a fine texture, float32 (cheap to make:
    the costly functions run on one row and one column)."""
    rows = np.arange(r0, r1, dtype=np.float64)
    cols = np.arange(c0, c1, dtype=np.float64)
    a = (np.sin(rows * 0.0123) + 0.25 * np.cos(rows * 0.71)).astype(np.float32)
    b = (np.cos(cols * 0.0071) + 0.25 * np.sin(cols * 0.53)).astype(np.float32)
    return np.multiply.outer(a, b)


def _block(block_info=None):
    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    return _values(r0, r1, c0, c1)


class GeneratedImage:
    """A ``size``-square float32 image that makes any region when it is
    read, as a file or a Zarr store gives it: ``dask.array.from_array``
    reads its chunks (and ``kernels.dask`` its halos) from it."""

    def __init__(self, size):
        self.shape, self.dtype, self.ndim = (size, size), np.dtype("f4"), 2

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            index = (index,)
        index += (slice(None),) * (2 - len(index))
        if len(index) != 2 or not all(isinstance(i, slice) and
                                      i.step in (None, 1) for i in index):
            raise IndexError(f"GeneratedImage takes two slices, not {index}")
        (r0, r1, _), (c0, c1, _) = (i.indices(n) for i, n in
                                     zip(index, self.shape))
        return _values(r0, max(r0, r1), c0, max(c0, c1))

    def __reduce__(self):
        return GeneratedImage, (self.shape[0],)


def generated_image(size, chunk, source="stored"):
    """A lazy (1, 1, size, size) float32 Dask array made chunk by chunk;
    ``chunk``: a side, or (rows, columns).

    ``source="stored"``: read from a :class:`GeneratedImage` through
    ``dask.array.from_array`` (as an image in a file or Zarr store is);
    ``"computed"``: each chunk is the result of a task
    (``dask.array.map_blocks``), so halos must come from the neighbouring
    chunks.
    """
    import dask.array as da
    rows, cols = _rows_cols(chunk)
    chunks = (_chunks(size, rows), _chunks(size, cols))
    name = f"convbench-image-{source}-{size}-{rows}x{cols}"
    if source == "stored":
        image = da.from_array(GeneratedImage(size), chunks=chunks, name=name,
                              meta=np.empty((0, 0), np.float32))
    elif source == "computed":
        image = da.map_blocks(_block, chunks=chunks, dtype=np.float32,
                              name=name)
    else:
        raise ValueError(f"source must be 'stored' or 'computed', "
                         f"not {source!r}")
    return image[None, None]


def _chunks(size, chunk):
    return (chunk,) * (size // chunk) + ((size % chunk,) if size % chunk else ())


def checksum(y):
    """A number that needs every block of ``y`` but costs little more than
    computing it: the sum of a sparse sample (a full float64 sum of a
    float32 image took as long as generating it)."""
    return y[..., ::97, ::89].sum(dtype=np.float64)


def gaussian(k):
    """A normalised Gaussian of width k / 6 (any values would do)."""
    r = np.arange(k) - (k - 1) / 2
    g = np.exp(-0.5 * (r / max(k / 6, 0.5)) ** 2)
    return (np.outer(g, g) / g.sum() ** 2).astype(np.float32)[None, None]


def resident_memory():
    import psutil
    return psutil.Process().memory_info().rss


def _peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def sampled_rss(pids, interval=0.005):
    """Peak RSS of each process of ``pids`` while the ``with`` body runs.

    A thread of this process polls the others every ``interval`` seconds
    (the workers' own threads may hold their GIL for a whole block).
    Yields ``{pid: peak bytes}``, filled when the body ends.  Unlike the
    high-water mark of ``getrusage`` it leaves out what happened before,
    such as a graph's first run (FFTW plans for every block shape).
    """
    import psutil
    procs = {pid: psutil.Process(pid) for pid in pids}
    peaks = {pid: proc.memory_info().rss for pid, proc in procs.items()}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for pid, proc in procs.items():
                peaks[pid] = max(peaks[pid], proc.memory_info().rss)
            stop.wait(interval)

    poller = threading.Thread(target=poll, name="convbench-rss", daemon=True)
    poller.start()
    try:
        yield peaks
    finally:
        stop.set()
        poller.join()


def _timed(func, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return times


def _span(times, megapixels):
    rates = sorted(megapixels / t for t in times)
    return {"median": statistics.median(rates), "min": rates[0],
            "max": rates[-1], "seconds": sorted(times)}


def _in_memory(kernel_sizes, reference, rounds):
    """MP/s of kernels.conv2d on a reference^2 image in this process."""
    import numba
    import kernels
    x = _values(0, reference, 0, reference)[None, None]
    out = {}
    for k in kernel_sizes:
        w = gaussian(k)
        call = lambda: kernels.conv2d(x, w, padding="same")  # noqa: E731
        call()
        default = _span(_timed(call, rounds), reference ** 2 / 1e6)
        before = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            call()
            single = _span(_timed(call, rounds), reference ** 2 / 1e6)
        finally:
            numba.set_num_threads(before)
        out[k] = {"threads": before, "default": default, "one_thread": single}
    return out


@contextlib.contextmanager
def local_cluster(n_workers, saturation=None):
    """A Client of a LocalCluster: processes of one thread, loopback only.

    ``saturation``: the scheduler's ``worker-saturation`` (how many root
    tasks, here chunk generations, a worker gets per thread ahead of
    need; None: Dask's default, 1.1 in 2026.8).
    """
    import dask
    import distributed
    config = ({} if saturation is None else
              {"distributed.scheduler.worker-saturation": saturation})
    with dask.config.set(config), \
            distributed.LocalCluster(n_workers=n_workers,
                                     threads_per_worker=1, processes=True,
                                     host="127.0.0.1", dashboard_address=None,
                                     silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def filtered(image, k, split_seams=False):
    """The lazy checksum of ``image`` filtered by a k x k Gaussian
    (``split_seams``: as :func:`kernels.dask.conv2d`)."""
    import kernels.dask as kd
    return checksum(kd.conv2d(image, gaussian(k), padding="same",
                              split_seams=split_seams))


def warm_up(client, kernel_sizes):
    """Compile every filter's kernels in every worker (a small image)."""
    small = generated_image(4 * max(kernel_sizes), 2 * max(kernel_sizes))
    for k in kernel_sizes:
        client.compute(filtered(small, k), sync=True)


def peak_memory_increase(client, base, chunk):
    """Per worker: peak RSS, and its rise over ``base`` in chunks."""
    peaks = client.run(_peak_rss)
    return {addr: {"base": base[addr], "peak": peaks[addr],
                   "increase_chunks": (peaks[addr] - base[addr])
                   / _chunk_bytes(chunk)}
            for addr in peaks}


def _managed_peak(client, func):
    """Run ``func``; the peak of Dask-managed memory on the cluster (bytes
    of task results held, all workers together), sampled every 5 ms."""
    from distributed.diagnostics import MemorySampler
    sampler = MemorySampler()
    with sampler.sample("m", client=client, measure="managed", interval=0.005):
        func()
    return max(v for _, v in sampler.samples["m"])


def _on_cluster(n_workers, kernel_sizes, size, chunk, rounds,
                saturation=None, source="stored", split_seams=False):
    with local_cluster(n_workers, saturation) as client:
        warm_up(client, kernel_sizes)
        base = client.run(resident_memory)
        image = generated_image(size, chunk, source)
        megapixels = size * size / 1e6
        result = {"workers": n_workers, "generation": _span(_timed(
            lambda: client.compute(checksum(image), sync=True),
            rounds), megapixels)}
        pids = client.run(os.getpid)
        for k in kernel_sizes:
            total = filtered(image, k, split_seams)
            first = _timed(lambda: client.compute(total, sync=True), 1)[0]
            with sampled_rss(pids.values()) as peaks:
                result[k] = _span(_timed(
                    lambda: client.compute(total, sync=True), rounds),
                    megapixels)
            result[k]["first_seconds"] = first
            result[k]["steady_rss_chunks"] = {
                addr: (peaks[pid] - base[addr]) / _chunk_bytes(chunk)
                for addr, pid in pids.items()}
            result[k]["managed_chunks_per_worker"] = _managed_peak(
                client, lambda: client.compute(total, sync=True)) / (
                    n_workers * _chunk_bytes(chunk))
        result["memory"] = peak_memory_increase(client, base, chunk)
        return result


def _threaded(n_threads, kernel_sizes, size, chunk, rounds,
              source="stored", split_seams=False):
    """The same graphs on Dask's threaded scheduler in this process."""
    import dask
    image = generated_image(size, chunk, source)
    megapixels = size * size / 1e6
    result = {"threads": n_threads}
    with dask.config.set(scheduler="threads", num_workers=n_threads):
        for k in kernel_sizes:
            total = filtered(image, k, split_seams)
            first = _timed(total.compute, 1)[0]
            result[k] = _span(_timed(total.compute, rounds), megapixels)
            result[k]["first_seconds"] = first
    return result


def _rows_cols(chunk):
    """A chunk side, or (rows, columns) -> (rows, columns)."""
    return (chunk, chunk) if np.isscalar(chunk) else tuple(chunk)


def _chunk_bytes(chunk):
    rows, cols = _rows_cols(chunk)
    return rows * cols * 4


def measure(kernel_sizes=(5, 31), size=16384, chunk=2048, workers=2,
            reference=4096, rounds=3, saturation=None, source="stored",
            split_seams=False):
    """Every figure of the module docstring, as a dict."""
    results = {"cpus": os.cpu_count(), "size": size, "chunk": chunk,
               "reference": reference, "saturation": saturation,
               "rounds": rounds, "kernels": list(kernel_sizes),
               "in_memory": _in_memory(kernel_sizes, reference, rounds),
               "source": source, "split_seams": split_seams,
               "clusters": [_on_cluster(n, kernel_sizes, size, chunk, rounds,
                                        saturation, source, split_seams)
                            for n in sorted({1, workers})],
               "threaded": _threaded(workers, kernel_sizes, size, chunk,
                                     rounds, source, split_seams)}
    one, many = results["clusters"][0], results["clusters"][-1]
    results["scaling_efficiency"] = {
        k: many[k]["median"] / (many["workers"] * one[k]["median"])
        for k in kernel_sizes}
    return results


def _rate(span):
    return f"{span['median']:.0f} ({span['min']:.0f}-{span['max']:.0f})"


def format_results(r):
    """A plain-text table of :func:`measure`'s results."""
    lines = [f"image {r['size']}^2 float32 in chunks of {r['chunk']} "
             f"(generated on the workers, {r.get('source', 'computed')}"
             f"{', seams split' if r.get('split_seams') else ''}); "
             f"in memory: {r['reference']}^2; "
             f"MP/s median (min-max) over {r['rounds']} rounds", ""]
    head = (f"{'filter':>7}  {'in memory':>16}  {'in memory 1 thr':>16}  "
            + "  ".join(f"{str(c['workers']) + ' worker(s)':>16}"
                        for c in r["clusters"])
            + f"  efficiency  dask/in-memory  "
              f"{str(r['threaded']['threads']) + ' threads':>16}")
    lines += [head, "-" * len(head)]
    many = r["clusters"][-1]
    for k in r["kernels"]:
        mem = r["in_memory"][k]
        row = (f"{str(k) + 'x' + str(k):>7}  {_rate(mem['default']):>16}  "
               f"{_rate(mem['one_thread']):>16}  "
               + "  ".join(f"{_rate(c[k]):>16}" for c in r["clusters"])
               + f"  {r['scaling_efficiency'][k]:10.2f}"
               + f"  {many[k]['median'] / mem['default']['median']:14.2f}"
               + f"  {_rate(r['threaded'][k]):>16}")
        lines.append(row)
    lines.append("")
    lines.append("first (untimed) run, s: " + "; ".join(
        f"{k}x{k}: " + ", ".join(f"{c[k]['first_seconds']:.2f}"
                                 for c in r["clusters"])
        for k in r["kernels"]))
    lines.append("Dask-managed memory at its peak (one extra run), mean per "
                 "worker, in input chunks: " + "; ".join(
                     f"{k}x{k}: " + ", ".join(
                         f"{c[k]['managed_chunks_per_worker']:.2f}"
                         for c in r["clusters"])
                     for k in r["kernels"]))
    lines.append("per worker, peak RSS during the timed runs (polled every "
                 "5 ms) above the warmed-up RSS, in input chunks: " + "; ".join(
                     f"{k}x{k}: " + " / ".join(
                         ", ".join(f"{v:.2f}" for v in
                                   c[k]["steady_rss_chunks"].values())
                         for c in r["clusters"])
                     for k in r["kernels"]))
    for c in r["clusters"]:
        lines.append(f"{c['workers']} worker(s): generation alone "
                     f"{_rate(c['generation'])} MP/s; per worker, peak RSS "
                     f"above the warmed-up RSS, in input chunks "
                     f"({_chunk_bytes(r['chunk']) / 2**20:.0f} MiB): "
                     + ", ".join(f"{m['increase_chunks']:.2f} "
                                 f"(peak {m['peak'] / 2**20:.0f} MiB)"
                                 for m in c["memory"].values()))
    return "\n".join(lines)


def run(args):
    """``convbench dask``: measure, print, optionally save JSON."""
    results = measure(tuple(args.kernels), args.size, args.chunk,
                      args.workers, args.reference, args.rounds,
                      args.worker_saturation, args.source, args.split_seams)
    print(format_results(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
        print(f"\nwrote {args.json}")
    return 0

