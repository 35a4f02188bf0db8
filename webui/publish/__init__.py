"""Publishing: rows -> control files, written atomically by a Celery task."""
