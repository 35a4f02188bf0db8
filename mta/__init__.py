"""Postern's mail transfer agent: the daemons and their libraries.

Nothing under ``mta`` imports Django, ``webui`` or ``appliance``; a test (import-linter)
enforces it. Each subpackage is one daemon (``smtpd``, ``queue``, ``send``, ``local``,
``remote``, ``clean``) or a library they share (``smtp`` the protocol, ``common`` the
mail-specific shared code, ``util`` what knows nothing of mail).
"""
