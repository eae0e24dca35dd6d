"""Calibration file for ``algorithm="auto"``.

``convbench calibrate`` measures the crossovers on this machine and writes
them as JSON to ``$CONVBENCH_CALIBRATION`` or
``~/.cache/convbench/calibration.json``; :func:`load_thresholds` merges
them over the defaults.  A missing or unreadable file means defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _path_text():
    """The calibration file's path as a string (cheap: no pathlib)."""
    env = os.environ.get("CONVBENCH_CALIBRATION")
    if env:
        return env
    return os.path.join(os.path.expanduser("~"), ".cache", "convbench",
                        "calibration.json")


def calibration_path():
    return Path(_path_text())


# (path, file state, defaults) -> thresholds: algorithm="auto" consults
# them on every call, and reading the file each time cost 11 us of the
# 21 us a choice took (enough for an idle worker's CPU to halt before the
# kernel's launch on a 2-vCPU VM: +100-200 us per call).
_cache = {}


def _file_state(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def load_thresholds(defaults):
    path = _path_text()
    key = (path, _file_state(path), tuple(sorted(defaults.items())))
    hit = _cache.get(key)
    if hit is not None:
        return dict(hit)
    thresholds = dict(defaults)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        data = {}
    for name, value in data.get("thresholds", {}).items():
        if name in thresholds and isinstance(value, (int, float)):
            thresholds[name] = value
    if len(_cache) > 64:
        _cache.clear()
    _cache[key] = thresholds
    return dict(thresholds)


def save_thresholds(thresholds, meta=None, path=None):
    path = Path(path) if path else calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"thresholds": thresholds, "meta": meta or {}},
                               indent=2))
    return path
