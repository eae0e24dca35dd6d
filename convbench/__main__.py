"""``python -m convbench``: the ``convbench`` command line."""

import sys

from .cli import main

sys.exit(main())
