"""convbench: the benchmark harness of the ``kernels`` package.

* :mod:`convbench.workloads`: layer shapes of LeNet-5, VGG-16, ResNet-18/50
  and the named benchmark workloads;
* :mod:`convbench.sweep`: interleaved timing, GFLOP/s and error (in bound
  units) of every algorithm and peer, and the result table;
* :mod:`convbench.timing`: seeded data and interleaved, seeded-order
  timing (the one helper of the sweep and the benchmark scripts);
* :mod:`convbench.crossover`: where one algorithm overtakes another;
* :mod:`convbench.machine`: CPU, threads, BLAS and the sgemm rate;
* :mod:`convbench.calibrate`: measure the thresholds of ``algorithm="auto"``;
* :mod:`convbench.autocheck`: ``auto``'s pick against the fastest, per layer;
* :mod:`convbench.report` (figures in :mod:`convbench.plots`): sweeps to
  ``report.md`` / ``report.html`` with PNG figures, asv history;
* :mod:`convbench.isolated` (workers: :mod:`convbench._worker`): each
  contender in its own process, or several in one with a chosen import
  order; :mod:`convbench.network`: a network's layers in sequence;
* :mod:`convbench.cuda_report`: registers, spills, occupancy, roofline;
* :mod:`convbench.cli`: the ``convbench`` command (``python -m convbench``).
"""

__version__ = "0.1.0"
