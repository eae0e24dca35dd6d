"""Shared test set-up: the ``kernels`` import guard and hypothesis profiles.

Profiles (chosen by the environment variable ``HYPOTHESIS_PROFILE``):

``ci`` (default)
    derandomised, few examples, no deadline: the same bounded run on every
    machine, fast enough for a 2-core CI runner.
``thorough``
    many random examples, for a long local run.

``algorithm="auto"`` runs on the package's default thresholds in every
test: ``$CONVBENCH_CALIBRATION`` points to a file that does not exist, so
that the calibration file of the machine running the tests
(``~/.cache/convbench/calibration.json``) is never read; tests of the
calibration set their own path.

Tests that use the ``backend`` fixture (the property and operation tests,
through ``pytestmark = pytest.mark.usefixtures("backend")``) run once per
backend of ``kernels.BACKENDS`` that has an algorithm built
(``helpers.backends_under_test``); they call ``helpers.api.<function>``,
which passes that backend.  Tests parametrised over ``algorithm`` (any
name in ``kernels.ALGORITHMS``) are skipped, not failed, while that
algorithm is not built for the backend, so a new algorithm or backend
joins every such test as soon as its module exists.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO_ROOT = Path(__file__).resolve().parent.parent

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


_SHADOWED = """\
`import kernels` did not find this project's package ({found}).

An unrelated PyPI distribution is also named `kernels`; if it is installed
it shadows this project (so does a non-editable install of this project,
whose copy is not the working tree under test). Fix:

    pip uninstall kernels
    pip install -e .        # from {root}

then run the tests again with `python -m pytest` from {root}."""


def _check_kernels_is_this_project():
    spec = importlib.util.find_spec("kernels")
    origin = Path(spec.origin).resolve() if spec and spec.origin else None
    try:
        import kernels
    except Exception as exc:
        if origin is not None and REPO_ROOT in origin.parents:
            raise             # this project's own import error: show it
        pytest.exit(_SHADOWED.format(found=f"importing {origin} failed: {exc!r}",
                                     root=REPO_ROOT), returncode=4)
    location = Path(getattr(kernels, "__file__", "") or "").resolve()
    if not getattr(kernels, "__convbench__", False) or REPO_ROOT not in location.parents:
        pytest.exit(_SHADOWED.format(found=f"found {location}", root=REPO_ROOT),
                    returncode=4)


def pytest_configure(config):
    # Before any test module imports kernels (pytest.exit is clean here).
    _check_kernels_is_this_project()


@pytest.fixture(autouse=True, scope="session")
def _package_default_thresholds(tmp_path_factory):
    """No test reads this machine's calibration file (see the module's
    docstring): a test of the CPU defaults failed in CI after a local
    ``convbench calibrate`` had written another stride-2 threshold."""
    old = os.environ.get("CONVBENCH_CALIBRATION")
    missing = tmp_path_factory.mktemp("no-calibration") / "none.json"
    os.environ["CONVBENCH_CALIBRATION"] = str(missing)
    yield
    if old is None:
        os.environ.pop("CONVBENCH_CALIBRATION", None)
    else:
        os.environ["CONVBENCH_CALIBRATION"] = old


@pytest.fixture(autouse=True)
def _fresh_prepared_runners():
    """Each test starts without the front end's prepared runners
    (:func:`kernels._conv._prepared`): tests replace kernels' module
    internals with monkeypatch, which a runner prepared in an earlier
    test (the same problem and tunables) would not see."""
    from kernels import _conv
    _conv._PREPARED.clear()
    _conv._PLANS.clear()        # each plan keeps its problem's runner
    yield


def pytest_report_header(config):
    import kernels
    from helpers import backends_under_test
    built = "; ".join(f"{b}: {', '.join(kernels.built_algorithms(b)) or 'none'}"
                      for b in kernels.BACKENDS)
    return (f"kernels: {Path(kernels.__file__).parent}; built ({built}); "
            f"backends under test: {', '.join(backends_under_test())}; "
            f"hypothesis profile: {settings.get_current_profile_name()}")


def pytest_generate_tests(metafunc):
    """One run per backend under test for tests that use ``backend``."""
    if "backend" in metafunc.fixturenames:
        from helpers import backends_under_test
        metafunc.parametrize("backend", backends_under_test(), indirect=True)


@pytest.fixture
def backend(request):
    """The backend under test; ``helpers.api`` calls pass it."""
    import helpers
    previous = helpers.api.backend
    helpers.api.backend = request.param
    yield request.param
    helpers.api.backend = previous


def pytest_runtest_setup(item):
    """Skip a test parametrised with an algorithm that is not built yet."""
    import kernels
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return
    algorithm = callspec.params.get("algorithm")
    backend = callspec.params.get("backend", "cpu")
    if algorithm in kernels.ALGORITHMS and \
            algorithm not in kernels.built_algorithms(backend):
        pytest.skip(f"algorithm {algorithm!r} is not built for backend "
                    f"{backend!r} (no kernels/{backend}/{algorithm}.py)")


@pytest.fixture
def built_algorithms(request):
    """The algorithms built for the backend under test (cpu by default)."""
    import helpers
    import kernels
    return kernels.built_algorithms(helpers.api.backend)
