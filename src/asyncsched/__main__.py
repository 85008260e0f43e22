"""``python -m asyncsched`` is the ``asyncsched`` command."""

import sys

from .cli import main

sys.exit(main())
