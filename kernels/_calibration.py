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


def calibration_path():
    env = os.environ.get("CONVBENCH_CALIBRATION")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "convbench" / "calibration.json"


def load_thresholds(defaults):
    thresholds = dict(defaults)
    try:
        data = json.loads(calibration_path().read_text())
    except (OSError, ValueError):
        return thresholds
    for key, value in data.get("thresholds", {}).items():
        if key in thresholds and isinstance(value, (int, float)):
            thresholds[key] = value
    return thresholds


def save_thresholds(thresholds, meta=None, path=None):
    path = Path(path) if path else calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"thresholds": thresholds, "meta": meta or {}},
                               indent=2))
    return path
