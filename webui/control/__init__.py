"""Settings that map to one-value control files (me, databytes, ...), qmail defaults shown."""
