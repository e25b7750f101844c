"""`python -m grugctl.cli ...` runs the command line, as the grugctl script does."""

import sys

from grugctl.cli import app

sys.exit(app())
