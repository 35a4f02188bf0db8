"""The queue, read-only, through send's status.sock; samples; the delivery log."""
