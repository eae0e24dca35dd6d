"""asv benchmarks of convbench's kernels (``asv run``, ``asv dev``)."""
