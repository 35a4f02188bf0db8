#!/usr/bin/env python3
"""Django's command-line utility for Postern (``python manage.py migrate`` and friends).

Uses the embedded settings unless ``DJANGO_SETTINGS_MODULE`` says otherwise.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webui.settings.embedded")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
