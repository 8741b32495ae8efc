"""`python -m adaloss ...`: see adaloss.cli."""

import sys

from .cli import main

sys.exit(main())
