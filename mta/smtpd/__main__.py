"""``python -m mta.smtpd``: see ``main.py``."""

import sys

from mta.smtpd.main import main

sys.exit(main())
