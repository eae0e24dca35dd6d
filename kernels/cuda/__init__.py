"""numba.cuda kernels, one module per algorithm, mirroring kernels/cpu.

No CUDA kernel is built yet: ``backend="cuda"`` raises NotImplementedError.
"""
