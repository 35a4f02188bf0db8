"""``python -m mta.send``: see ``main.py``."""

import sys

from mta.send.main import main

sys.exit(main())
