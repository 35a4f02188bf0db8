"""Shared pieces of the web admin: validators, domain scoping, list/edit views, audit hooks."""
