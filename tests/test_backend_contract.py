"""The backend contract, checked by a backend written from scratch.

``docs/design.md`` says how to add a backend: a package whose modules export
``KERNELS`` (see :mod:`kernels._dispatch`).  This test does exactly that in
a temporary directory (a NumPy direct convolution, nothing else), registers
it, and runs the conv property suite (tests/test_conv_properties.py) on it
through the public API in a fresh process: if the contract or the design
document leaves out something a backend needs, this fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kernels
from kernels import _dispatch
from helpers import EXTRA_BACKEND_VAR

REPO_ROOT = Path(__file__).resolve().parent.parent

FAKE_DIRECT = '''
"""A NumPy direct convolution: one contraction per kernel tap."""
import numpy as np

from kernels._dispatch import Kernel


def conv2d(spec, x, w, bias):
    n, c, h, wd = spec.x_shape
    k, cg, kh, kw = spec.w_shape
    pt, pb, pl, pr = spec.padding
    (sh, sw), (dh, dw), g = spec.stride, spec.dilation, spec.groups
    ho, wo = spec.out_hw
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n, k, ho, wo), x.dtype)
    kg = k // g
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        wg = w[gi * kg:(gi + 1) * kg]
        for i in range(kh):
            for j in range(kw):
                taps = xs[:, :, i * dh:i * dh + sh * (ho - 1) + 1:sh,
                          j * dw:j * dw + sw * (wo - 1) + 1:sw]
                y[:, gi * kg:(gi + 1) * kg] += np.einsum(
                    "nchw,kc->nkhw", taps, wg[:, :, i, j])
    if bias is not None:
        y += bias[None, :, None, None]
    return y


KERNELS = {("conv2d", "direct"): Kernel(conv2d)}
'''


@pytest.fixture
def fake_backend(tmp_path):
    package = tmp_path / "fakebackend"
    package.mkdir()
    (package / "__init__.py").write_text('"""A throwaway backend."""\n')
    (package / "direct.py").write_text(FAKE_DIRECT)
    sys.path.insert(0, str(tmp_path))
    _dispatch.register_backend("fake", "fakebackend")
    yield "fake", "fakebackend", str(tmp_path)
    _dispatch.unregister_backend("fake")
    sys.path.remove(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("fakebackend")]:
        del sys.modules[name]


def test_a_registered_backend_serves_the_public_api(fake_backend):
    import reference
    assert kernels.built_algorithms("fake") == ("direct",)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 2))
    y = kernels.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2),
                       groups=2, backend="fake")       # auto -> direct
    y_ref = reference.conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2),
                             groups=2)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(NotImplementedError, match="fake"):
        kernels.conv2d(x, w, groups=2, algorithm="fft", backend="fake")
    with pytest.raises(NotImplementedError, match="fake"):
        kernels.max_pool2d(x, 2, backend="fake")
    with pytest.raises(ValueError, match="backend"):
        kernels.conv2d(x, w, backend="nonesuch")


def test_a_tuning_module_added_at_run_time_counts_after_reload(fake_backend):
    # "auto" looks the backend's _tuning module up once; reload_registry,
    # documented for changed backend files, must forget it.
    from kernels._choose import NEUTRAL_THRESHOLDS, thresholds
    name, _, directory = fake_backend
    assert thresholds(name) == dict(NEUTRAL_THRESHOLDS)
    (Path(directory) / "fakebackend" / "_tuning.py").write_text(
        "AUTO_THRESHOLDS = {'direct_max_macs': 123.0}\n")
    _dispatch.reload_registry()
    assert thresholds(name)["direct_max_macs"] == 123.0


def test_the_property_suite_passes_on_a_backend_written_from_the_contract(
        fake_backend):
    name, package, directory = fake_backend
    env = dict(os.environ, **{EXTRA_BACKEND_VAR: f"{name}:{package}:{directory}",
                              "HYPOTHESIS_PROFILE": "ci"})
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/test_conv_properties.py", "-rs"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = textwrap.shorten(result.stdout[-3000:], 3000)
    assert result.returncode == 0, tail
    assert " passed" in result.stdout, tail
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q",
         "-p", "no:cacheprovider", "tests/test_conv_properties.py",
         "-k", "direct"], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=300)
    assert "-fake]" in collected.stdout or "[fake-" in collected.stdout, \
        collected.stdout[-2000:]
