"""``python -m mta.queue``: run the queue daemon (see mta/queue/main.py)."""

import sys

from mta.queue.main import main

sys.exit(main())
