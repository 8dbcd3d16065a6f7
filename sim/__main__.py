"""`python -m sim ...`: the same as `sluice sim ...`."""

import sys

from .cli import main

sys.exit(main())
