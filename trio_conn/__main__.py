"""``python -m trio_conn``: the trio-conn command."""

import sys

from .cli import main

sys.exit(main())
