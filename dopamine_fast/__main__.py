"""``python -m dopamine_fast``: the same command line as ``dopamine-fast``."""

import sys

from .cli import main

sys.exit(main())
