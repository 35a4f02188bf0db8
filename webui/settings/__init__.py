"""Layered Django settings (STYLE.md §5, Zulip style): ``base`` holds what every deployment
shares, then ``embedded`` (SQLite + kombu's filesystem broker in the state directory; the
default), ``production`` (PostgreSQL + Redis/RabbitMQ from the environment, secure cookies,
HSTS) or ``test``. Pick one with ``DJANGO_SETTINGS_MODULE``.
"""
