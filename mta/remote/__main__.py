"""``python -m mta.remote``: run the remote delivery daemon (see main.py)."""

import sys

from mta.remote.main import main

sys.exit(main())
