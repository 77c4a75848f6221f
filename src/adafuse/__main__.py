"""``python -m adafuse`` is the ``adafuse`` command."""

import sys

from adafuse.cli import main

sys.exit(main())
