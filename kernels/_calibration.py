"""Calibration file for ``algorithm="auto"``, keyed by backend and machine.

``convbench calibrate`` measures the crossovers on this machine and writes
them as JSON to ``$CONVBENCH_CALIBRATION`` or
``~/.cache/convbench/calibration.json``::

    {"format": 3,
     "backends": {"cpu": {"machine": {...}, "thresholds": {...}, "meta": {...}}}}

:func:`load_thresholds` merges a backend's thresholds over its defaults
when the entry's ``machine`` equals this machine's key (the backend's
``_tuning.machine_key()``: for the CPU its model name, family, model
number and widest SIMD, core count and the versions of NumPy, Numba and
pyFFTW), so a file copied from another
machine, or left from before an upgrade, is not trusted.  A missing file
means defaults, silently; an unreadable, corrupt or incompatible file, or
one from another machine, means defaults and one
:class:`CalibrationWarning` per file state, never an exception inside
``conv2d``.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from pathlib import Path

# 3: the FFT area thresholds are points of a curve over C*K (single,
# few = 16, multi = 256) instead of single / any other; new thresholds
# direct_max_macs_fc and im2col_serial_max_macs; meta records which
# thresholds were pinned down.  Files of format 2 are ignored (with a
# CalibrationWarning) and the defaults used.
FORMAT = 3

__all__ = ["CalibrationWarning", "FORMAT", "calibration_path",
           "load_thresholds", "save_thresholds"]


class CalibrationWarning(UserWarning):
    """The calibration file was ignored (the message says why)."""


def _path_text():
    """The calibration file's path as a string (cheap: no pathlib)."""
    env = os.environ.get("CONVBENCH_CALIBRATION")
    if env:
        return env
    return _default_path(os.environ.get("HOME"))


@functools.lru_cache(maxsize=8)
def _default_path(home):
    """``~/.cache/convbench/calibration.json`` for this ``$HOME``:
    ``expanduser`` and ``join`` took 4 of the 9 us "auto" spent choosing."""
    return os.path.join(os.path.expanduser("~"), ".cache", "convbench",
                        "calibration.json")


def calibration_path():
    return Path(_path_text())


# (path, file state, backend, machine, defaults) -> sorted threshold items:
# algorithm="auto" consults them on every call, and reading the file each
# time cost 11 us of the 21 us a choice took.
_cache = {}
_warned = set()

# The file's state is looked at again at most this often (seconds): a
# ``stat`` after every kernel costs ~8 us (the kernel has evicted what it
# touches), and with the rest of the choice ~50 us of each call of a
# ResNet-50 pass at batch 1, 5 % of it (docs/performance.md, section AH).
# A file rewritten by another process is seen within this time;
# :func:`save_thresholds` and a change of path are seen at once.
RECHECK_SECONDS = 1.0

# backend -> (path, defaults, machine, recheck time, thresholds) of the
# last full lookup.
_recent = {}


def _file_state(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _warn_once(key, message):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, CalibrationWarning, stacklevel=4)


def _read(path):
    """The file's backends table, or (None, why it was ignored)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        return None, f"cannot read it ({exc.strerror or exc})"
    except ValueError as exc:
        return None, f"it is not valid JSON ({exc})"
    if not isinstance(data, dict) or data.get("format") != FORMAT \
            or not isinstance(data.get("backends"), dict):
        return None, (f"it is not a format-{FORMAT} calibration file "
                      f"(written by another version of convbench)")
    return data["backends"], None


def _merged(entry, machine, defaults):
    """Thresholds of one backend entry over the defaults, or (None, why)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("thresholds"), dict):
        return None, "its entry has no thresholds table"
    if entry.get("machine") != machine:
        return None, ("it was measured on another machine or with other "
                      "library versions")
    thresholds = dict(defaults)
    for name, value in entry["thresholds"].items():
        if name in thresholds and isinstance(value, (int, float)) \
                and not isinstance(value, bool) \
                and not _not_measured(entry, name):
            thresholds[name] = value
    return thresholds, None


def _not_measured(entry, name):
    """Whether the entry's meta says ``name`` was not measured: a default
    of the package that wrote the file, which the installed package's
    defaults replace (files from before 2026-12-04 stored them all)."""
    meta = entry.get("meta")
    table = meta.get("thresholds") if isinstance(meta, dict) else None
    record = table.get(name) if isinstance(table, dict) else None
    return isinstance(record, dict) and record.get("status") == "default"


def load_thresholds(backend, defaults, machine):
    """``defaults`` overridden by the file's entry for ``backend`` on
    ``machine``, when there is one that applies.

    ``defaults`` is a sorted tuple of ``(name, value)`` items and
    ``machine`` the machine key as JSON text (``sort_keys=True``), so that
    the per-call cache key costs nothing to build; the result is a sorted
    tuple of items too.
    """
    path = _path_text()
    recent = _recent.get(backend)
    if (recent is not None and recent[0] == path and recent[1] is defaults
            and recent[2] is machine and time.monotonic() < recent[3]):
        return recent[4]
    thresholds = _looked_up(path, backend, defaults, machine)
    _recent[backend] = (path, defaults, machine,
                        time.monotonic() + RECHECK_SECONDS, thresholds)
    return thresholds


def _looked_up(path, backend, defaults, machine):
    """:func:`load_thresholds` from the file at ``path`` as it is now."""
    state = _file_state(path)
    key = (path, state, backend, machine, defaults)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    thresholds = defaults
    if state is not None:
        table, why = _read(path)
        if table is not None and backend in table:
            merged, why = _merged(table[backend], json.loads(machine),
                                  dict(defaults))
            if merged is not None:
                thresholds = tuple(sorted(merged.items()))
        if why is not None:
            _warn_once((path, state, backend, why),
                       f"ignoring the calibration file {path} for backend "
                       f"{backend!r}: {why}; algorithm='auto' uses its "
                       f"defaults. Run `convbench calibrate` to measure "
                       f"this machine.")
    if len(_cache) > 64:
        _cache.clear()
    _cache[key] = thresholds
    return thresholds


def save_thresholds(backend, thresholds, machine, meta=None, path=None):
    """Write ``backend``'s entry, keeping other backends' valid entries."""
    path = Path(path) if path else calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    table = {}
    if path.exists():
        existing, _ = _read(path)
        table = existing or {}
    table[backend] = {"machine": machine, "thresholds": dict(thresholds),
                      "meta": meta or {}}
    path.write_text(json.dumps({"format": FORMAT, "backends": table},
                               indent=2, sort_keys=True))
    _recent.clear()
    return path
