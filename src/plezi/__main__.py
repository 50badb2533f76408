"""``python -m plezi``: the ``plezi`` command (``python -m plezi SCRIPT.py [flags]``)."""

import sys

from .launch.cli import main

sys.exit(main())
