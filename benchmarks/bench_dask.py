"""Images larger than memory: ``kernels.dask`` on a LocalCluster (issue 13).

``DaskFilter`` filters a 16384^2 float32 image, generated chunk by chunk
(2048^2) on a ``distributed.LocalCluster`` of two one-thread worker
processes, with a 5x5 and a 31x31 Gaussian (``algorithm="auto"``); the
image is read from an array-like store (``source="stored"``: halos come
from the store) or computed by a task per chunk (``"computed"``: halos
are cut from the neighbouring chunks; ``"computed-split"``: the same with
``split_seams=True``, so that no block waits for its neighbour's chunk):
``track_megapixels_per_second`` (one timed run after a warm-up; asv's
``time_`` would repeat a multi-second run several times) and
``track_peak_memory_in_chunks`` (each worker's peak RSS above its RSS
after the warm-up, in units of one 16 MiB input chunk; the larger of the
two workers).  ``convbench dask`` measures the same with rounds, one
worker against two, and the in-memory kernel beside them
(``convbench.dask_bench``, docs/dask.md).

Skipped (``NotImplementedError``) without the ``dask`` extra.
"""

import time

SIZE = 16384
CHUNK = 2048


class DaskFilter:
    params = [[5, 31], ["stored", "computed", "computed-split"]]
    param_names = ["kernel", "source"]
    timeout = 900
    number = 1
    repeat = 1

    def setup(self, kernel, source):
        try:
            import distributed  # noqa: F401
            import psutil  # noqa: F401
            import kernels.dask  # noqa: F401
        except ImportError:
            raise NotImplementedError("needs the dask extra") from None
        from convbench import dask_bench
        self.bench = dask_bench
        self._client = dask_bench.local_cluster(2)
        self.client = self._client.__enter__()
        dask_bench.warm_up(self.client, [kernel])
        self.base = self.client.run(dask_bench.resident_memory)
        image = dask_bench.generated_image(SIZE, CHUNK,
                                           source.removesuffix("-split"))
        self.total = dask_bench.filtered(image, kernel,
                                         source.endswith("-split"))

    def teardown(self, kernel, source):
        self._client.__exit__(None, None, None)

    def track_megapixels_per_second(self, kernel, source):
        t0 = time.perf_counter()
        self.client.compute(self.total, sync=True)
        return SIZE * SIZE / 1e6 / (time.perf_counter() - t0)

    track_megapixels_per_second.unit = "MP/s"

    def track_peak_memory_in_chunks(self, kernel, source):
        self.client.compute(self.total, sync=True)
        memory = self.bench.peak_memory_increase(self.client, self.base, CHUNK)
        return max(m["increase_chunks"] for m in memory.values())

    track_peak_memory_in_chunks.unit = "chunks"
