"""Pooling (issue 4): names reserved until built."""


def _not_built(name):
    def f(*args, **kwargs):
        raise NotImplementedError(f"kernels.{name} is not built yet (issue 4)")
    f.__name__ = name
    return f


max_pool1d = _not_built("max_pool1d")
max_pool2d = _not_built("max_pool2d")
avg_pool1d = _not_built("avg_pool1d")
avg_pool2d = _not_built("avg_pool2d")
global_avg_pool2d = _not_built("global_avg_pool2d")
max_pool2d_backward = _not_built("max_pool2d_backward")
avg_pool2d_backward = _not_built("avg_pool2d_backward")
