"""Queue pages through send's status.sock only: "send is down" said plainly; with the real
appliance running, the summary, the filtered list and one message's detail (a deferred
message, its Subject escaped); the sampling task; the delivery-log search."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from tests import support
from tests.harness import running_appliance
from webui.queue import status
from webui.queue.deliverylog import LogQuery, search
from webui.queue.models import QueueSample
from webui.queue.tasks import sample_queue_summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_pages_say_plainly_that_send_is_down(admin_client: Client) -> None:
    for name in ("queue-summary", "queue-list"):
        body = admin_client.get(reverse(name)).content.decode()
        assert 'id="send-down"' in body and "send is not running" in body
    body = admin_client.get(reverse("queue-message", args=["0123456789ABCDEF0"])).content.decode()
    assert "send is not running" in body
    assert sample_queue_summary.apply().get() is False
    assert QueueSample.objects.get().send_up is False


@pytest.mark.django_db
def test_delivery_log_search(admin_client: Client, control_dir: Path) -> None:
    log = control_dir.parent / "log"
    now = time.time()
    lines = [
        {"time": now - 100, "event": "received", "id": "AAA1", "sender": "x@a.example",
         "recipients": ["bob@b.example"]},
        {"time": now - 50, "event": "delivered", "id": "AAA1", "rcpt": "bob@b.example",
         "text": "2.0.0 ok <script>"},
        {"time": now - 10, "event": "deferred", "id": "BBB2", "rcpt": "carol@c.example",
         "text": "4.4.1 connection refused"},
    ]
    (log / "delivery.log.1").write_text(json.dumps(lines[0]) + "\nnot json\n")
    (log / "delivery.log").write_text("".join(json.dumps(r) + "\n" for r in lines[1:]))
    assert [r["id"] for r in search(log, LogQuery())] == ["BBB2", "AAA1", "AAA1"]
    assert [r["event"] for r in search(log, LogQuery(recipient="BOB@"))] == ["delivered",
                                                                            "received"]
    # the sender is only in "received"; the delivery of the same message is found too
    assert [r["event"] for r in search(log, LogQuery(sender="x@a"))] == ["delivered",
                                                                         "received"]
    assert [r["id"] for r in search(log, LogQuery(event="deferred"))] == ["BBB2"]
    assert [r["id"] for r in search(log, LogQuery(since=now - 60, until=now - 20))] == ["AAA1"]
    body = admin_client.get(reverse("delivery-log"), {"queue_id": "aaa1"}).content.decode()
    assert "&lt;script&gt;" in body and "<script>" not in body and "BBB2" not in body


def test_queue_pages_against_the_real_send(tmp_path: Path, settings,  # type: ignore[no-untyped-def]
                                           transactional_db) -> None:
    closed = support.free_port()  # nothing listens here: remote defers
    with running_appliance(tmp_path, web=False) as app:
        env_state = str(app.state.root)
        out = subprocess.run([sys.executable, "-m", "appliance.cli", "--state", env_state,
                              "relay", "smarthost", f"127.0.0.1:{closed}"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        msg = EmailMessage()
        msg["From"] = "sender@example.net"
        msg["To"] = "someone@elsewhere.example"
        msg["Subject"] = "<script>alert(1)</script> deferred"
        msg.set_content("body\n")
        host, port = app.listeners["smtp"]

        def sent() -> bool:
            try:
                with smtplib.SMTP(host, port, timeout=10) as s:
                    s.send_message(msg)
                return True
            except smtplib.SMTPRecipientsRefused:
                return False
        support.wait_for(sent, timeout=20, what="smtpd to relay for 127.0.0.1")
        sock = app.state.status_socket

        def deferred() -> list[dict[str, object]]:
            return status.listing(socket_path=sock, state="deferred")["messages"]
        found = support.wait_for(deferred, timeout=60, what="the message to be deferred")
        qid = found[0]["id"]  # type: ignore[index]
        summary = status.summary(socket_path=sock)
        assert summary["messages"] >= 1 and summary["states"]["deferred"] >= 1
        assert summary["domains"].get("elsewhere.example", 0) >= 1

        settings.POSTERN_STATUS_SOCKET = sock
        from django.contrib.auth import get_user_model

        root = get_user_model().objects.create_superuser("queue-root", "", "pw pw pw pw")
        c = Client()
        c.force_login(root)
        body = c.get(reverse("queue-summary")).content.decode()
        assert "send-down" not in body and "elsewhere.example" in body
        body = c.get(reverse("queue-list"), {"state": "deferred",
                                             "recipient": "someone@"}).content.decode()
        assert qid in body and "someone@elsewhere.example" in body
        body = c.get(reverse("queue-list"), {"domain": "nowhere.example"}).content.decode()
        assert qid not in body
        body = c.get(reverse("queue-message", args=[qid])).content.decode()
        assert "&lt;script&gt;alert(1)&lt;/script&gt; deferred" in body
        assert "<script>alert" not in body
        assert "connect" in body.lower() or "refused" in body.lower()
        # send refuses what is not a queue id; the page says so (404), nothing read
        resp = c.get(reverse("queue-message", args=["..%2F..%2Fetc%2Fpasswd"]))
        assert resp.status_code == 404 and "send-down" not in resp.content.decode()
        assert "root:" not in resp.content.decode()
        assert sample_queue_summary.apply().get() is True
        assert QueueSample.objects.order_by("-at").first().total >= 1
