"""``python -m acceltcp.apps.lb``: check a configuration (`cli.main`)."""

import sys

from .cli import main

sys.exit(main())
