"""``python -m distill.sweep ...``: the ``distill-sweep`` command."""

import sys

from distill.sweep.command import main

sys.exit(main())
