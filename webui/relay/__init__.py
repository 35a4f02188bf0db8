"""Relay rules: networks allowed to relay, relay (backup MX) domains, the smarthost."""
