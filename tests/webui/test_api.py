"""The provisioning API: Bearer tokens (read-only / read-write), scoping to the user's
domains (guessing keys of another domain finds nothing), idempotent PUT, the documented
paths and fields, CSV export/import, the queue summary, and the schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from webui.accounts.models import ApiToken
from webui.aliases.models import Alias
from webui.audit.models import AuditEntry
from webui.domains.models import Domain
from webui.mailboxes.models import Mailbox
from webui.relay.models import RelayNetwork

from .conftest import make_domain_admin

pytestmark = pytest.mark.django_db(transaction=True)


class Api:
    def __init__(self, key: str) -> None:
        self.c = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    def get(self, path: str):  # type: ignore[no-untyped-def]
        return self.c.get(f"/api/v1/{path}")

    def post(self, path: str, data: object):  # type: ignore[no-untyped-def]
        return self.c.post(f"/api/v1/{path}", json.dumps(data), content_type="application/json")

    def put(self, path: str, data: object):  # type: ignore[no-untyped-def]
        return self.c.put(f"/api/v1/{path}", json.dumps(data), content_type="application/json")

    def delete(self, path: str):  # type: ignore[no-untyped-def]
        return self.c.delete(f"/api/v1/{path}")


@pytest.fixture
def root_api(superadmin, control_dir: Path) -> Api:  # type: ignore[no-untyped-def]
    _, key = ApiToken.issue(superadmin)
    return Api(key)


def test_no_token_or_bad_token_is_refused(transactional_db, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    assert Client().get("/api/v1/domains/").status_code in (401, 403)
    resp = Api("pst_nope").get("domains/")
    assert resp.status_code == 401 and resp["WWW-Authenticate"] == "Bearer"
    assert Client(HTTP_AUTHORIZATION="Bearer a b").get("/api/v1/domains/").status_code == 401


def test_provisioning_flow_and_idempotent_put(root_api: Api, control_dir: Path) -> None:
    assert root_api.post("domains/", {"name": "Example.ORG"}).status_code == 201
    assert root_api.post("domains/", {"name": "example.org"}).status_code == 409
    for _ in range(2):  # a provider re-runs its script: same result, no error
        resp = root_api.put("domains/example.org/", {"name": "example.org", "description": "d"})
        assert resp.status_code == 200 and resp.json()["name"] == "example.org"
        resp = root_api.put("mailboxes/alice@example.org/",
                            {"password": "long enough", "quota": 1000})
        assert resp.status_code in (200, 201), resp.content
        assert resp.json() == {"address": "alice@example.org", "quota": 1000, "enabled": True,
                               "name": ""}
        assert "password" not in resp.json()
        resp = root_api.put("aliases/team@example.org/", {"targets": ["alice@example.org"]})
        assert resp.status_code in (200, 201), resp.content
        resp = root_api.put("relay-networks/10.0.0.0/8/", {})
        assert resp.status_code in (200, 201), resp.content
        resp = root_api.put("access-rules/10/", {"rule": "192.0.2.:deny"})
        assert resp.status_code in (200, 201), resp.content
    assert Mailbox.objects.count() == 1 and Alias.objects.count() == 1
    assert RelayNetwork.objects.count() == 1
    assert root_api.get("access-rules/").json()["results"] == [
        {"rule": "192.0.2.:deny", "position": 10, "comment": ""}]
    assert root_api.get("aliases/").json()["results"] == [
        {"source": "team@example.org", "targets": ["alice@example.org"], "enabled": True}]
    assert (control_dir / "mailboxes").read_text() == "alice@example.org:quota=1000\n"
    assert "192.0.2.:deny\n10.0.0.0/8:allow" in (control_dir / "tcp.smtp").read_text()
    assert AuditEntry.objects.filter(via="api").exists()
    assert root_api.delete("aliases/team@example.org/").status_code == 204
    assert root_api.delete("aliases/team@example.org/").status_code == 404
    assert root_api.delete("relay-networks/10.0.0.0/8/").status_code == 204


def test_bad_input_is_refused_with_the_field_named(root_api: Api, control_dir: Path) -> None:
    root_api.post("domains/", {"name": "example.org"})
    resp = root_api.post("domains/", {"name": "tenant.example\nvictim.example"})
    assert resp.status_code == 400 and "name" in resp.json()
    resp = root_api.post("mailboxes/", {"address": "a@example.org\nb@example.org",
                                        "password": "long enough"})
    assert resp.status_code == 400 and "address" in resp.json()
    resp = root_api.post("mailboxes/", {"address": "a@example.org"})
    assert resp.status_code == 400 and "password" in resp.json()
    root_api.put("aliases/a@example.org/", {"targets": ["b@example.org"]})
    resp = root_api.put("aliases/b@example.org/", {"targets": ["a@example.org"]})
    assert resp.status_code == 400 and "loop" in json.dumps(resp.json())
    resp = root_api.post("access-rules/", {"rule": "10.0.0.1/8:allow", "position": 5})
    assert resp.status_code == 400 and "rule" in resp.json()
    resp = root_api.post("relay-networks/", {"network": "10.0.0.0/8\n0.0.0.0/0"})
    assert resp.status_code == 400
    assert not (control_dir / "rcpthosts").read_text().count("victim")


def test_read_only_token(superadmin, control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    Domain.objects.create(name="example.org")
    _, key = ApiToken.issue(superadmin, read_only=True)
    api = Api(key)
    assert api.get("domains/").status_code == 200
    assert api.post("domains/", {"name": "new.example"}).status_code == 403
    assert api.put("domains/example.org/", {"description": "x"}).status_code == 403
    assert api.delete("domains/example.org/").status_code == 403
    assert Domain.objects.get().description == ""


def test_tenant_token_cannot_see_guess_or_touch_another_domain(transactional_db,
                                                               control_dir: Path) -> None:  # type: ignore[no-untyped-def]
    mine = Domain.objects.create(name="mine.example")
    theirs = Domain.objects.create(name="theirs.example")
    Mailbox.objects.create(domain=theirs, local_part="boss")
    Alias.objects.create(domain=theirs, local_part="x", targets=["boss@theirs.example"])
    RelayNetwork.objects.create(network="10.0.0.0/8")
    user = make_domain_admin("tenant", mine)
    _, key = ApiToken.issue(user)
    api = Api(key)
    assert [d["name"] for d in api.get("domains/").json()["results"]] == ["mine.example"]
    assert api.get("mailboxes/").json()["results"] == []
    for path in ("domains/theirs.example/", "mailboxes/boss@theirs.example/",
                 "aliases/x@theirs.example/"):
        assert api.get(path).status_code == 404, path
        assert api.delete(path).status_code == 404, path
    resp = api.put("mailboxes/boss@theirs.example/", {"password": "long enough"})
    assert resp.status_code == 400 and "not one of your domains" in json.dumps(resp.json())
    resp = api.put("mailboxes/new@nonexistent.example/", {"password": "long enough"})
    assert "not one of your domains" in json.dumps(resp.json())  # same answer: nothing to probe
    resp = api.post("aliases/", {"source": "@theirs.example", "targets": ["a@mine.example"]})
    assert resp.status_code == 400
    assert api.post("domains/", {"name": "new.example"}).status_code == 403
    assert api.put("domains/theirs.example/", {}).status_code == 403
    for path in ("relay-networks/", "access-rules/"):
        assert api.get(path).status_code == 403
        assert api.post(path, {"network": "192.168.0.0/16", "rule": ":allow",
                               "position": 1}).status_code == 403
    assert api.delete("relay-networks/10.0.0.0/8/").status_code == 403
    assert Mailbox.objects.get().local_part == "boss" and RelayNetwork.objects.exists()
    # its own domain works
    assert api.put("mailboxes/me@mine.example/", {"password": "long enough"}).status_code == 201


def test_csv_export_and_all_or_nothing_import(root_api: Api, control_dir: Path) -> None:
    root_api.post("domains/", {"name": "example.org"})
    csv_body = ("address,password,quota,enabled\n"
                "a@example.org,long enough,100,yes\n"
                "b@example.org,long enough,,no\n")
    resp = root_api.c.post("/api/v1/mailboxes/import/", csv_body, content_type="text/csv")
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"created": 2, "updated": 0}
    resp = root_api.c.post("/api/v1/mailboxes/import/", csv_body, content_type="text/csv")
    assert resp.json() == {"created": 0, "updated": 2}
    bad = "address,password\nc@example.org,long enough\nnot an address,long enough\n"
    resp = root_api.c.post("/api/v1/mailboxes/import/", bad, content_type="text/csv")
    assert resp.status_code == 400 and "line 3" in resp.json()["errors"]
    assert not Mailbox.objects.filter(local_part="c").exists()
    export = root_api.get("mailboxes/export/")
    assert export["Content-Type"].startswith("text/csv")
    assert export.content.decode().splitlines() == [
        "address,password,quota,enabled,name", "a@example.org,,100,yes,", "b@example.org,,,no,"]
    resp = root_api.c.post("/api/v1/aliases/import/",
                           "source,targets\nteam@example.org,a@example.org b@example.org\n"
                           "@example.org,a@example.org\n", content_type="text/csv")
    assert resp.json() == {"created": 2, "updated": 0}
    lines = root_api.get("aliases/export/").content.decode().splitlines()
    assert "team@example.org,a@example.org b@example.org,yes" in lines
    assert "@example.org,a@example.org,yes" in lines


def test_queue_summary_says_send_is_down(root_api: Api, control_dir: Path) -> None:
    resp = root_api.get("queue/summary")
    assert resp.status_code == 503 and "send is not running" in resp.json()["detail"]


def test_schema_is_published(transactional_db) -> None:  # type: ignore[no-untyped-def]
    resp = Client().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert resp.status_code == 200
    schema = json.loads(resp.content)
    for path in ("/api/v1/domains/", "/api/v1/mailboxes/", "/api/v1/aliases/",
                 "/api/v1/relay-networks/", "/api/v1/access-rules/", "/api/v1/queue/summary"):
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    props = schema["components"]["schemas"]["MailboxRequest"]["properties"]
    assert {"address", "password", "quota"} <= set(props)
