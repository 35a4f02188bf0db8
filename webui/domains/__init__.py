"""Hosted domains (IDN stored as A-labels) and domain aliases."""
