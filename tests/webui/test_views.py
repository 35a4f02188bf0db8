"""The web pages: login and its throttle, CRUD for every object with errors next to the
field, role checks (a domain admin cannot see, guess or edit another domain's objects),
CSRF on every form, escaping of everything a user typed, the audit log and publishing."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from webui.access.models import AccessRule
from webui.aliases.models import Alias
from webui.audit.models import AuditEntry
from webui.control.models import ControlSetting
from webui.domains.models import Domain, DomainAlias
from webui.mailboxes.models import Mailbox
from webui.publish.models import Generation
from webui.relay.models import RelayDomain, RelayNetwork

from .conftest import make_domain_admin

# Real commits: publishing is enqueued with delay_on_commit and must run after them.
pytestmark = pytest.mark.django_db(transaction=True)


# --- login --------------------------------------------------------------------------------

def test_pages_need_login(client: Client) -> None:
    for name in ("home", "domain-list", "mailbox-list", "queue-summary", "audit-list"):
        resp = client.get(reverse(name))
        assert resp.status_code == 302 and reverse("login") in resp["Location"]


def test_login_and_throttle(client: Client, superadmin, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    url = reverse("login")
    resp = client.post(url, {"username": "root", "password": "correct horse 1"})
    assert resp.status_code == 302
    client.post(reverse("logout"))
    for _ in range(5):
        resp = client.post(url, {"username": "root", "password": "wrong"})
        assert resp.status_code == 200 and b"Wrong username or password" in resp.content
    # Locked now, even with the right password.
    resp = client.post(url, {"username": "root", "password": "correct horse 1"})
    assert resp.status_code == 429 and b"Too many failed logins" in resp.content
    assert "_auth_user_id" not in client.session


def test_login_next_refuses_other_hosts(client: Client, superadmin, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    resp = client.post(reverse("login") + "?next=https://evil.example/",
                       {"username": "root", "password": "correct horse 1"})
    assert resp.status_code == 302 and resp["Location"] == "/"


def test_csrf_is_enforced(superadmin, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    c = Client(enforce_csrf_checks=True)
    c.force_login(superadmin)
    resp = c.post(reverse("domain-add"), {"name": "example.org", "enabled": "on"})
    assert resp.status_code == 403
    assert not Domain.objects.exists()
    page = c.get(reverse("domain-add"))
    token = page.cookies["csrftoken"].value
    resp = c.post(reverse("domain-add"), {"name": "example.org", "enabled": "on",
                                          "csrfmiddlewaretoken": token})
    assert resp.status_code == 302 and Domain.objects.filter(name="example.org").exists()


# --- CRUD ---------------------------------------------------------------------------------

def test_domain_crud_idn_and_publish(admin_client: Client, control_dir: Path) -> None:
    resp = admin_client.post(reverse("domain-add"), {"name": "Bücher.Example", "enabled": "on"})
    assert resp.status_code == 302
    d = Domain.objects.get()
    assert d.name == "xn--bcher-kva.example" and d.unicode_name == "bücher.example"
    # published on commit (eager Celery in the test settings)
    assert b"xn--bcher-kva.example" in (control_dir / "rcpthosts").read_bytes()
    gen = Generation.objects.get(ok=True)
    page = admin_client.get(reverse("domain-list"))
    assert f"Published generation <strong id=\"generation\">{gen.number}</strong>".encode() \
        in page.content
    assert "bücher.example" in page.content.decode()
    resp = admin_client.post(reverse("domain-edit", args=[d.pk]),
                             {"name": "bücher.example", "description": "books"})
    assert resp.status_code == 302
    d.refresh_from_db()
    assert d.description == "books" and d.enabled is False
    resp = admin_client.post(reverse("domain-delete", args=[d.pk]))
    assert resp.status_code == 302 and not Domain.objects.exists()
    assert (control_dir / "rcpthosts").read_bytes() == b""
    assert [e.action for e in AuditEntry.objects.order_by("id")] == ["create", "update", "delete"]


@pytest.mark.parametrize("name,message", [
    ("tenant.example\nvictim.example", "control character"),
    ("tenant.example\x00", "control character"),
    ("bad_domain.example", "not a valid domain"),
    ("example.org.", "trailing dot"),
    ("localhost", "two labels"),
])
def test_bad_domain_gets_a_message_next_to_the_field(admin_client: Client, control_dir: Path,
                                                     name: str, message: str) -> None:
    resp = admin_client.post(reverse("domain-add"), {"name": name, "enabled": "on"})
    assert resp.status_code == 200
    assert message in " ".join(resp.context["form"].errors["name"])
    assert not Domain.objects.exists() and not Generation.objects.exists()
    assert not (control_dir / "rcpthosts").exists()


def test_duplicate_domain_refused(admin_client: Client, control_dir: Path) -> None:
    Domain.objects.create(name="example.org")
    resp = admin_client.post(reverse("domain-add"), {"name": "EXAMPLE.org", "enabled": "on"})
    assert "already a hosted domain" in resp.content.decode()
    assert Domain.objects.count() == 1


def test_mailbox_crud_quota_password(admin_client: Client, control_dir: Path) -> None:
    from mta.common import passwd

    d = Domain.objects.create(name="example.org")
    resp = admin_client.post(reverse("mailbox-add"), {
        "local_part": "alice", "domain": d.pk, "password": "long enough", "quota": "500M",
        "enabled": "on"})
    assert resp.status_code == 302, resp.context["form"].errors
    m = Mailbox.objects.get()
    assert m.quota == 500 * 1024 * 1024 and passwd.verify(m.password_hash, "long enough")
    assert (control_dir / "mailboxes").read_text() == f"alice@example.org:quota={m.quota}\n"
    # edit without a password keeps the hash
    old = m.password_hash
    admin_client.post(reverse("mailbox-edit", args=[m.pk]),
                      {"local_part": "alice", "domain": d.pk, "quota": "", "enabled": "on"})
    m.refresh_from_db()
    assert m.password_hash == old and m.quota is None
    audit = AuditEntry.objects.filter(model="mailbox").order_by("id")
    assert all("$argon2" not in str(e.before) + str(e.after) for e in audit)
    for bad, field, message in [({"quota": "lots"}, "quota", "not a size"),
                                ({"local_part": "al ice"}, "local_part", "not a valid"),
                                ({"local_part": "ALICE"}, "local_part", "already exists")]:
        data = {"local_part": "bob", "domain": d.pk, "password": "long enough",
                "quota": "", "enabled": "on", **bad}
        resp = admin_client.post(reverse("mailbox-add"), data)
        assert message in " ".join(resp.context["form"].errors[field])
    assert Mailbox.objects.count() == 1


def test_alias_loop_refused_with_the_cycle_named(admin_client: Client, control_dir: Path) -> None:
    d = Domain.objects.create(name="example.org")
    resp = admin_client.post(reverse("alias-add"), {"local_part": "a", "domain": d.pk,
                                                    "targets": "b@example.org", "enabled": "on"})
    assert resp.status_code == 302
    resp = admin_client.post(reverse("alias-add"), {"local_part": "b", "domain": d.pk,
                                                    "targets": "c@example.org\na@example.org",
                                                    "enabled": "on"})
    errors = " ".join(resp.context["form"].errors["targets"])
    assert "loop" in errors and "b@example.org → a@example.org → b@example.org" in errors
    assert Alias.objects.count() == 1


def test_catch_all_and_domain_alias(admin_client: Client, control_dir: Path) -> None:
    d = Domain.objects.create(name="example.org")
    resp = admin_client.post(reverse("alias-add"), {"local_part": "", "domain": d.pk,
                                                    "targets": "boss@elsewhere.example",
                                                    "enabled": "on"})
    assert resp.status_code == 302
    resp = admin_client.post(reverse("domainalias-add"), {"name": "example.net", "target": d.pk})
    assert resp.status_code == 302
    aliases = (control_dir / "aliases").read_text()
    assert "@example.org: boss@elsewhere.example\n" in aliases
    assert "@example.net: @example.org\n" in aliases
    resp = admin_client.post(reverse("domainalias-add"), {"name": "example.org", "target": d.pk})
    assert "already a hosted domain" in resp.content.decode()


def test_relay_network_overlap_and_bad_input(admin_client: Client, control_dir: Path) -> None:
    resp = admin_client.post(reverse("relaynetwork-add"), {"network": "192.168.1."})
    assert resp.status_code == 302
    assert b'192.168.1.:allow,RELAYCLIENT=""' in (control_dir / "tcp.smtp").read_bytes()
    for bad, msg in [("192.168.1.128/25", "overlaps"), ("10.0.0.1/8", "host bits"),
                     ("10.0.0.0/33", "not"), ("example.org", "not an IP"),
                     ("10.0.0.0/8\n0.0.0.0/0", "control character")]:
        resp = admin_client.post(reverse("relaynetwork-add"), {"network": bad})
        assert msg in " ".join(resp.context["form"].errors["network"]), bad
    assert RelayNetwork.objects.count() == 1


def test_relay_domain_and_smarthost(admin_client: Client, control_dir: Path) -> None:
    resp = admin_client.post(reverse("relaydomain-add"), {"name": "backup.example",
                                                          "route_host": "mx.backup.example",
                                                          "route_port": "2525"})
    assert resp.status_code == 302
    resp = admin_client.post(reverse("smarthost"), {"enabled": "on", "host": "smart.example",
                                                    "port": "587", "username": "me",
                                                    "password": "pw pw"})
    assert resp.status_code == 302
    assert (control_dir / "smtproutes").read_text() == \
        "backup.example:mx.backup.example:2525\n:smart.example:587\n"
    assert b"backup.example" in (control_dir / "rcpthosts").read_bytes()
    assert RelayDomain.objects.count() == 1


def test_access_rules_order_and_tester(admin_client: Client, control_dir: Path) -> None:
    for pos, pattern, action, var in [(10, "", "allow", ""), (20, "10.", "allow",
                                                               'RELAYCLIENT=""'),
                                      (30, "10.1.2.3", "deny", ""),
                                      (40, "10.1.0.0/16", "allow", "RBLSMTPD=-go away")]:
        resp = admin_client.post(reverse("accessrule-add"), {
            "position": pos, "pattern": pattern, "action": action, "variables": var})
        assert resp.status_code == 302, resp.context["form"].errors
    page = admin_client.get(reverse("accessrule-list")).content.decode()
    page = page[page.index("<table"):]  # past the "Added ..." messages
    # shown in the order smtpd applies them: exact, longest network first, default last
    order = [page.index(s) for s in ("10.1.2.3:deny", "10.1.0.0/16:allow",
                                      '10.:allow,RELAYCLIENT=&quot;&quot;', ":allow</code>")]
    assert order == sorted(order)
    resp = admin_client.get(reverse("accessrule-list"), {"ip": "10.1.9.9"})
    assert resp.context["match"].source == "10.1.0.0/16"
    assert resp.context["matched_rule"].position == 40
    resp = admin_client.get(reverse("accessrule-list"), {"ip": "10.1.2.3"})
    assert resp.context["match"].allow is False
    assert b"refused" in resp.content
    resp = admin_client.get(reverse("accessrule-list"), {"ip": "192.0.2.1"})
    assert resp.context["match"].source == "" and resp.context["match"].allow


def test_access_rule_refusals(admin_client: Client, control_dir: Path) -> None:
    AccessRule.objects.create(position=10, pattern="10.", action="allow")
    for data, field, msg in [
        ({"pattern": "10."}, "pattern", "same address"),
        ({"pattern": "10.0.0.1/8"}, "pattern", "host bits"),
        ({"pattern": "999.1."}, "pattern", "not"),
        ({"pattern": "1.2.3.4", "action": "deny", "variables": 'RELAYCLIENT=""'}, "pattern",
         "deny rule sets no variables"),
        ({"pattern": "1.2.3.4", "variables": "NOT VALID"}, "variables", "expected NAME=value"),
    ]:
        post = {"position": 20, "action": "allow", "variables": "", **data}
        resp = admin_client.post(reverse("accessrule-add"), post)
        assert msg in " ".join(resp.context["form"].errors[field]), data
    assert AccessRule.objects.count() == 1


def test_settings_show_qmail_default_and_validate(admin_client: Client, control_dir: Path) -> None:
    page = admin_client.get(reverse("setting-list")).content.decode()
    assert "604800 (one week)" in page and "queuelifetime" in page
    resp = admin_client.post(reverse("setting-edit", args=["databytes"]), {"value": "12x"})
    assert "not a decimal number" in " ".join(resp.context["form"].errors["value"])
    resp = admin_client.post(reverse("setting-edit", args=["databytes"]), {"value": "١٢٣"})
    assert resp.status_code == 200 and not ControlSetting.objects.exists()
    resp = admin_client.post(reverse("setting-edit", args=["me"]),
                             {"value": "mail.example.org\nevil"})
    assert "control character" in " ".join(resp.context["form"].errors["value"])
    admin_client.post(reverse("setting-edit", args=["databytes"]), {"value": "2048"})
    assert (control_dir / "databytes").read_text() == "2048\n"
    admin_client.post(reverse("setting-edit", args=["databytes"]), {"value": "", "reset": "1"})
    assert not (control_dir / "databytes").exists()
    assert admin_client.get(reverse("setting-edit", args=["nosuch"])).status_code == 404


def test_list_search_and_pagination(admin_client: Client, control_dir: Path) -> None:
    d = Domain.objects.create(name="example.org")
    Mailbox.objects.bulk_create([Mailbox(domain=d, local_part=f"user{i:03d}") for i in range(120)])
    page = admin_client.get(reverse("mailbox-list"))
    assert page.context["page"].paginator.num_pages == 3
    assert len(page.context["rows"]) == 50
    page = admin_client.get(reverse("mailbox-list"), {"q": "user11", "page": "1"})
    assert [o.local_part for o, _ in page.context["rows"]] == [f"user11{i}" for i in range(10)]


# --- escaping -----------------------------------------------------------------------------

def test_everything_typed_is_escaped(admin_client: Client, control_dir: Path) -> None:
    d = Domain.objects.create(name="example.org", description="<script>alert(1)</script>")
    Mailbox.objects.create(domain=d, local_part="x", name="<img src=x onerror=alert(1)>")
    for name in ("domain-list", "mailbox-list", "audit-list"):
        body = admin_client.get(reverse(name)).content.decode()
        assert "<script>alert" not in body and "<img src=x" not in body
    body = admin_client.get(reverse("domain-list")).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# --- roles --------------------------------------------------------------------------------

@pytest.fixture
def two_tenants(transactional_db, control_dir):  # type: ignore[no-untyped-def]
    mine = Domain.objects.create(name="mine.example")
    theirs = Domain.objects.create(name="theirs.example")
    objs = {
        "domain": (mine, theirs),
        "mailbox": (Mailbox.objects.create(domain=mine, local_part="a"),
                    Mailbox.objects.create(domain=theirs, local_part="a")),
        "alias": (Alias.objects.create(domain=mine, local_part="x", targets=["a@mine.example"]),
                  Alias.objects.create(domain=theirs, local_part="x",
                                       targets=["a@theirs.example"])),
        "domainalias": (DomainAlias.objects.create(name="mine-alias.example", target=mine),
                        DomainAlias.objects.create(name="theirs-alias.example", target=theirs)),
    }
    user = make_domain_admin("tenant", mine)
    return user, objs


def test_domain_admin_sees_only_its_domains(client: Client, two_tenants) -> None:  # type: ignore[no-untyped-def]
    user, objs = two_tenants
    client.force_login(user)
    for name, (mine, theirs) in objs.items():
        body = client.get(reverse(f"{name}-list")).content.decode()
        assert "mine" in body and "theirs" not in body, name
        assert client.get(reverse(f"{name}-edit", args=[mine.pk])).status_code == 200
        # guessing the other tenant's ids: not found, for every verb
        for url in (reverse(f"{name}-edit", args=[theirs.pk]),
                    reverse(f"{name}-delete", args=[theirs.pk])):
            assert client.get(url).status_code == 404, url
            assert client.post(url, {"name": "x.example"}).status_code == 404, url
    assert Mailbox.objects.count() == 2 and Alias.objects.count() == 2
    assert Domain.objects.filter(name="theirs.example").exists()


def test_domain_admin_cannot_create_in_another_domain(client: Client, two_tenants) -> None:  # type: ignore[no-untyped-def]
    user, objs = two_tenants
    theirs = objs["domain"][1]
    client.force_login(user)
    resp = client.post(reverse("mailbox-add"), {"local_part": "new", "domain": theirs.pk,
                                                "password": "long enough", "enabled": "on"})
    assert "domain" in resp.context["form"].errors
    resp = client.post(reverse("alias-add"), {"local_part": "n", "domain": theirs.pk,
                                              "targets": "a@mine.example"})
    assert "domain" in resp.context["form"].errors
    resp = client.post(reverse("domainalias-add"), {"name": "sneaky.example",
                                                    "target": theirs.pk})
    assert "target" in resp.context["form"].errors
    # nor may it claim a new domain name as an alias of its own domain
    resp = client.post(reverse("domainalias-add"), {"name": "victim.example",
                                                    "target": objs["domain"][0].pk})
    assert "only a superadmin" in " ".join(resp.context["form"].errors["name"])
    assert not DomainAlias.objects.filter(name="victim.example").exists()
    resp = client.post(reverse("domain-add"), {"name": "new.example", "enabled": "on"})
    assert resp.status_code == 200 and not Domain.objects.filter(name="new.example").exists()
    # renaming its own domain is not allowed either (a superadmin's job)
    mine = objs["domain"][0]
    client.post(reverse("domain-edit", args=[mine.pk]), {"name": "stolen.example"})
    mine.refresh_from_db()
    assert mine.name == "mine.example"


def test_domain_admin_is_refused_global_pages(client: Client, two_tenants) -> None:  # type: ignore[no-untyped-def]
    user, _ = two_tenants
    RelayNetwork.objects.create(network="10.0.0.0/8")
    AccessRule.objects.create(position=1, pattern="10.", action="allow")
    client.force_login(user)
    for name in ("relaynetwork-list", "relaynetwork-add", "relaydomain-list", "smarthost",
                 "accessrule-list", "accessrule-add", "setting-list", "queue-summary",
                 "queue-list", "delivery-log"):
        assert client.get(reverse(name)).status_code == 403, name
    for name, pk in (("relaynetwork-edit", RelayNetwork.objects.get().pk),
                     ("accessrule-delete", AccessRule.objects.get().pk)):
        assert client.post(reverse(name, args=[pk])).status_code == 403
    assert client.get(reverse("setting-edit", args=["me"])).status_code == 403
    assert RelayNetwork.objects.exists() and AccessRule.objects.exists()


def test_audit_log_is_scoped(client: Client, two_tenants, superadmin) -> None:  # type: ignore[no-untyped-def]
    user, objs = two_tenants
    root = Client()
    root.force_login(superadmin)
    theirs = objs["mailbox"][1]
    root.post(reverse("mailbox-edit", args=[theirs.pk]), {
        "local_part": "secretname", "domain": theirs.domain.pk, "enabled": "on"})
    entry = AuditEntry.objects.get()
    assert entry.username == "root" and entry.before["address"] == "a@theirs.example"
    assert entry.after["address"] == "secretname@theirs.example"
    client.force_login(user)
    assert "secretname" not in client.get(reverse("audit-list")).content.decode()
    assert "secretname" in root.get(reverse("audit-list")).content.decode()


def test_totp_second_factor(client: Client, superadmin, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    from webui.accounts import totp
    from webui.accounts.models import AdminProfile

    secret = totp.new_secret()
    AdminProfile.objects.create(user=superadmin, totp_secret=secret)
    client.post(reverse("login"), {"username": "root", "password": "correct horse 1"})
    resp = client.get(reverse("domain-list"))
    assert resp.status_code == 302 and resp["Location"] == reverse("totp")
    resp = client.post(reverse("totp"), {"code": "000000" if totp.code_at(
        secret, int(time.time() // 30)) != "000000" else "111111"})
    assert b"Wrong code" in resp.content
    resp = client.post(reverse("totp"), {"code": totp.code_at(secret, int(time.time() // 30))})
    assert resp.status_code == 302
    assert client.get(reverse("domain-list")).status_code == 200


def test_totp_known_vector() -> None:
    from webui.accounts import totp
    import base64

    # RFC 6238 Appendix B, SHA-1, T = 59 s -> 94287082 (8 digits); we use the last 6.
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp.code_at(secret, 59 // 30) == "287082"
    assert totp.verify(secret, "287082", now=59)
    assert not totp.verify(secret, "287082", now=59 + 300)
    assert not totp.verify(secret, "２８７０８２", now=59)


def test_stylesheet_is_served_and_paths_stay_inside(client: Client) -> None:
    resp = client.get("/static/postern/style.css")
    assert resp.status_code == 200 and b"--accent" in b"".join(resp.streaming_content)
    for path in ("/static/../settings/base.py", "/static/postern/../../settings/base.py"):
        resp = client.get(path)
        assert resp.status_code in (400, 404) and b"SECRET" not in resp.content


def test_admin_accounts_and_tokens_pages(admin_client: Client, two_tenants) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from webui.accounts.models import ApiToken

    user, objs = two_tenants
    mine = objs["domain"][0]
    resp = admin_client.post(reverse("admin-add"), {"username": "helper", "is_active": "on",
                                                    "password": "a long password",
                                                    "domains": [mine.pk]})
    assert resp.status_code == 302, resp.context["form"].errors
    helper = get_user_model().objects.get(username="helper")
    assert not helper.is_superuser and list(helper.postern_profile.domains.all()) == [mine]
    resp = admin_client.post(reverse("token-list"), {"name": "ci", "read_only": "on",
                                                     "user": helper.pk})
    key = resp.context["new_key"]
    token = ApiToken.objects.get(user=helper)
    assert token.read_only and ApiToken.hash_key(key) == token.key_hash
    assert key not in admin_client.get(reverse("token-list")).content.decode()
    # the domain admin sees its own tokens only and cannot revoke others' or manage admins
    c = Client()
    c.force_login(user)
    assert c.get(reverse("admin-list")).status_code == 403
    assert "helper" not in c.get(reverse("token-list")).content.decode()
    assert c.post(reverse("token-revoke", args=[token.pk])).status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()
    assert admin_client.post(reverse("token-revoke", args=[token.pk])).status_code == 302
    assert not ApiToken.objects.filter(pk=token.pk).exists()


def test_publish_errors_are_shown_to_superadmins_only(admin_client: Client, two_tenants) -> None:  # type: ignore[no-untyped-def]
    user, objs = two_tenants
    # a row that slipped past the forms into the database: the publish is refused
    Mailbox.objects.filter(pk=objs["mailbox"][1].pk).update(local_part="bad\nrow")
    admin_client.post(reverse("publish-now"))
    gen = Generation.objects.order_by("-id").first()
    assert gen is not None and not gen.ok and "control character" in gen.error
    body = admin_client.get(reverse("publish-status")).content.decode()
    assert "control character" in body and 'id="publish-error"' in body
    c = Client()
    c.force_login(user)
    for name in ("home", "publish-status"):
        body = c.get(reverse(name)).content.decode()
        assert "last publish failed" in body or "not published" in body
        assert "theirs.example" not in body and "control character" not in body
