"""`python -m weightpress ...`: the weightpress command without the installed script."""

import sys

from .cli import main

sys.exit(main())
