"""A real browser (Playwright driving Debian's Chromium) against the whole appliance
(``postern init`` + ``postern run``: gunicorn, the Celery worker and beat, every daemon):
log in, add a domain, a mailbox, an alias and a relay network, see each new generation
published, send a message over SMTP and watch it delivered in the delivery log and the
Maildir. Screenshots go to tests/artifacts/ (gitignored)."""

from __future__ import annotations

import mailbox
import re
import smtplib
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests import support
from tests.harness import ADMIN_PASSWORD, running_appliance

pytestmark = [pytest.mark.interop, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "webui"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update"]


def _generation(page) -> int:  # type: ignore[no-untyped-def]
    loc = page.locator("#generation")
    return int(loc.inner_text()) if loc.count() else 0


def _wait_published(page, after: int, url: str) -> int:  # type: ignore[no-untyped-def]
    def newer() -> int:
        page.goto(url)
        g = _generation(page)
        return g if g > after else 0
    return int(support.wait_for(newer, timeout=120, interval=0.5,
                                what=f"a generation after {after}"))


def test_admin_in_a_real_browser(tmp_path: Path) -> None:
    chromium = support.require("chromium", path="/usr/bin/chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with running_appliance(tmp_path) as app, sync_api.sync_playwright() as pw:
        host, port = app.listeners["web"]
        base = f"http://{host}:{port}"
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            page.screenshot(path=str(ARTIFACTS / "01-home.png"), full_page=True)
            gen = _generation(page)

            page.goto(f"{base}/domains/add/")
            page.fill("#id_name", "example.test")
            page.click("button:has-text('Save')")
            assert "Added example.test" in page.content()
            gen = _wait_published(page, gen, f"{base}/domains/")
            page.screenshot(path=str(ARTIFACTS / "02-domain.png"), full_page=True)

            page.goto(f"{base}/mailboxes/add/")
            page.fill("#id_local_part", "alice")
            page.select_option("#id_domain", label="example.test")
            page.fill("#id_password", "alice's password")
            page.fill("#id_quota", "100M")
            page.click("button:has-text('Save')")
            gen = _wait_published(page, gen, f"{base}/mailboxes/")
            assert "alice@example.test" in page.content()

            page.goto(f"{base}/aliases/add/")
            page.fill("#id_local_part", "team")
            page.select_option("#id_domain", label="example.test")
            page.fill("#id_targets", "alice@example.test")
            page.click("button:has-text('Save')")
            gen = _wait_published(page, gen, f"{base}/aliases/")

            page.goto(f"{base}/relay/add/")
            page.fill("#id_network", "192.0.2.0/24")
            page.click("button:has-text('Save')")
            gen = _wait_published(page, gen, f"{base}/relay/")
            page.screenshot(path=str(ARTIFACTS / "03-relay.png"), full_page=True)

            # a field error, shown next to the field, nothing saved
            page.goto(f"{base}/domains/add/")
            page.fill("#id_name", "bad_domain.example")
            page.click("button:has-text('Save')")
            assert page.locator(".has-error .errorlist").inner_text().startswith("not a valid")
            page.screenshot(path=str(ARTIFACTS / "04-field-error.png"), full_page=True)

            # the tester
            page.goto(f"{base}/access/?ip=192.0.2.7")
            assert 'RELAYCLIENT=""' in page.locator("#tester-result").inner_text()

            # mail: smtpd accepts for the published domain, local delivers to the Maildir
            msg = EmailMessage()
            msg["From"] = "sender@elsewhere.example"
            msg["To"] = "team@example.test"
            msg["Subject"] = "<b>hello</b> from the browser test"
            msg.set_content("Hello Alice.\n")
            smtp_host, smtp_port = app.listeners["smtp"]

            def send() -> bool:
                try:
                    with smtplib.SMTP(smtp_host, smtp_port, timeout=10) as s:
                        s.send_message(msg)
                    return True
                except smtplib.SMTPRecipientsRefused:
                    return False  # smtpd has not reloaded rcpthosts yet (≤ 1 s)
            support.wait_for(send, timeout=20, interval=0.5, what="smtpd to accept example.test")

            maildir = app.state.mail / "example.test" / "alice"
            support.wait_for(lambda: maildir.is_dir() and len(mailbox.Maildir(maildir,
                                                                              create=False)),
                             timeout=60, what="delivery to alice's Maildir")
            delivered = next(iter(mailbox.Maildir(maildir, create=False)))
            assert delivered["Subject"] == "<b>hello</b> from the browser test"

            def logged() -> bool:
                resp = page.goto(f"{base}/queue/log/?recipient=alice%40example.test"
                                 "&event=delivered")
                assert resp is not None and resp.status == 200, page.content()[:3000]
                # The web reads log/ whoever runs it: as root it is postern-web, a member
                # of postern-log (appliance/users.py); otherwise the one user of the tree.
                unreadable = page.locator("#log-unreadable")
                assert not unreadable.count(), unreadable.inner_text()
                return "alice@example.test" in page.locator("#delivery-log").inner_text()
            support.wait_for(logged, timeout=30, interval=0.5, what="the delivery in the log")
            row = page.locator("#delivery-log tbody tr", has_text="alice@example.test").first
            assert "delivered" in row.inner_text()
            page.screenshot(path=str(ARTIFACTS / "05-delivery-log.png"), full_page=True)

            page.goto(f"{base}/queue/")
            assert page.locator("#send-down").count() == 0
            assert re.fullmatch(r"\d+", page.locator("#queue-messages").inner_text())
            page.screenshot(path=str(ARTIFACTS / "06-queue.png"), full_page=True)
        except AssertionError as exc:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise AssertionError(f"{exc}\n--- appliance log ---\n{app.log()[-8000:]}") from exc
        finally:
            browser.close()
