"""Aliases, forwards and catch-alls: a source and its targets; loops refused."""
