"""Beat task: sample send's queue summary every minute into QueueSample (the graph), and
count deliveries since the previous sample from the delivery log. Idempotent enough: a
duplicate sample only adds a point."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def sample_queue_summary() -> bool:
    from django.conf import settings

    from webui.queue import status
    from webui.queue.deliverylog import LogQuery, LogUnreadable, search
    from webui.queue.models import QueueSample

    last = QueueSample.objects.order_by("-at").first()
    since = last.at.timestamp() if last else None
    try:
        delivered = len(search(settings.POSTERN_LOG_DIR, LogQuery(event="delivered", since=since),
                               limit=1_000_000)) if since else 0
    except LogUnreadable:
        delivered = 0
    try:
        s = status.summary()
    except status.SendDown:
        QueueSample.objects.create(send_up=False, total=0, by_state={}, delivered=delivered)
        return False
    QueueSample.objects.create(send_up=True, total=int(s.get("messages", 0)),
                               by_state=dict(s.get("states", {})), delivered=delivered)
    return True
