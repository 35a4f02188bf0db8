"""``python -m mta.local``: see ``main.py``."""

import sys

from mta.local.main import main

sys.exit(main())
