"""``python -m plezi``: the ``plezi`` command (``python -m plezi SCRIPT.py [flags]``)."""

import sys

from .cli import main

sys.exit(main())
