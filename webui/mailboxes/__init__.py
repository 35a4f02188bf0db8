"""Mailboxes: address, hashed password, quota, enabled."""
