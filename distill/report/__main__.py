"""``python -m distill.report SWEEP_DIR [--baseline NAME]``."""

import sys

from distill.report.command import main

sys.exit(main())
