"""``python -m convbench.problem_files [--check]``."""

from . import main

raise SystemExit(main())
