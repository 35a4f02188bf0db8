"""Login throttling: after LOGIN_MAX_FAILURES failures for one username, or from one client
address, within LOGIN_FAILURE_WINDOW, further attempts are refused until the window passes.

Called by the login view with the username typed and the TCP peer address (REMOTE_ADDR;
X-Forwarded-For is not trusted). Failures are rows in the database, so every web worker
and every node shares them.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from webui.accounts.models import LoginFailure


def is_locked(username: str, remote_addr: str) -> bool:
    since = timezone.now() - settings.LOGIN_FAILURE_WINDOW
    recent = LoginFailure.objects.filter(at__gte=since)
    by_user = recent.filter(username=username[:150]).count()
    by_addr = recent.filter(remote_addr=remote_addr[:45]).count()
    return by_user >= settings.LOGIN_MAX_FAILURES or by_addr >= settings.LOGIN_MAX_FAILURES


def record_failure(username: str, remote_addr: str) -> None:
    LoginFailure.objects.create(username=username[:150], remote_addr=remote_addr[:45])


def clear(username: str) -> None:
    since = timezone.now() - settings.LOGIN_FAILURE_WINDOW
    LoginFailure.objects.filter(Q(username=username[:150]) & Q(at__gte=since)).delete()
