"""``python -m mta.clean``: see ``main.py``."""

import sys

from mta.clean.main import main

sys.exit(main())
