"""Libraries that know nothing of mail: atomic files, safe opens, privilege drop."""
