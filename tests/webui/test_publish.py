"""The publisher: database rows -> control/ written atomically, validated by the daemons'
parsers, generation stamp last; refused sets write nothing; reruns write nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mta.common import addressbook, passwd, tcprules
from webui.aliases.models import Alias
from webui.control.models import ControlSetting
from webui.domains.models import Domain
from webui.mailboxes.models import Mailbox
from webui.publish.models import ConfigVersion, Generation
from webui.publish import publisher
from webui.publish.publisher import publish
from webui.publish.tasks import publish_control_files, publish_if_stale
from webui.relay.models import RelayNetwork, Smarthost

pytestmark = pytest.mark.django_db


def _populate() -> None:
    d = Domain.objects.create(name="example.org")
    Mailbox.objects.create(domain=d, local_part="alice",
                           password_hash=passwd.hash_password("s3cret-pass"), quota=1000)
    Alias.objects.create(domain=d, local_part="team", targets=["alice@example.org"])
    RelayNetwork.objects.create(network="10.0.0.0/8")
    ControlSetting.objects.create(name="databytes", value="1000000")


def test_publish_writes_every_file_and_the_generation_last(control_dir: Path) -> None:
    _populate()
    gen = publish()
    assert gen.ok and gen.number == 1 and gen.error == ""
    names = {p.name for p in control_dir.iterdir()}
    assert {"rcpthosts", "locals", "mailboxes", "passwd", "aliases", "tcp.smtp", "smtproutes",
            "relayauth", "databytes", "generation"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    stamp = (control_dir / "generation").read_text()
    assert stamp.startswith("1 ")
    # generation is the newest file: written after every other one
    newest = max(control_dir.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert newest.name == "generation"
    accounts = passwd.parse((control_dir / "passwd").read_bytes())
    assert accounts is not None
    assert passwd.verify((control_dir / "passwd").read_text().split(":")[1], "s3cret-pass")
    # relayauth: only remote may read it; privilege-separated (its group exists and we may
    # give files to it), through remote's group, else nobody but us (issue 7).
    relayauth = (control_dir / "relayauth").stat()
    remote_gid = publisher._ownership(control_dir, "relayauth")[1]
    if remote_gid == -1:
        assert oct(relayauth.st_mode & 0o777) == "0o600"
    else:
        assert (oct(relayauth.st_mode & 0o777), relayauth.st_gid) == ("0o640", remote_gid)
    book = addressbook.parse_mailboxes((control_dir / "mailboxes").read_bytes())
    assert [(m.address, m.quota) for m in book] == [("alice@example.org", 1000)]
    rules = tcprules.parse((control_dir / "tcp.smtp").read_bytes())
    assert rules.lookup("10.9.9.9").env == {"RELAYCLIENT": ""}


def test_rerun_with_nothing_changed_writes_nothing(control_dir: Path) -> None:
    _populate()
    first = publish()
    before = {p.name: p.stat().st_mtime_ns for p in control_dir.iterdir()}
    again = publish()
    assert again.pk == first.pk and again.number == 1
    after = {p.name: p.stat().st_mtime_ns for p in control_dir.iterdir()}
    assert before == after


def test_change_makes_a_new_generation_and_unchanged_files_keep_their_inode(
        control_dir: Path) -> None:
    _populate()
    publish()
    inode = (control_dir / "tcp.smtp").stat().st_ino
    Domain.objects.create(name="second.example")
    gen = publish()
    assert gen.number == 2
    assert b"second.example" in (control_dir / "rcpthosts").read_bytes()
    assert (control_dir / "tcp.smtp").stat().st_ino == inode


def test_a_bad_row_refuses_the_whole_publish_and_changes_nothing(control_dir: Path) -> None:
    _populate()
    publish()
    snapshot = {p.name: p.read_bytes() for p in control_dir.iterdir()}
    # Straight into the database, past every form: the renderer must still refuse it.
    Domain.objects.create(name="tenant.example\nvictim.example")
    Mailbox.objects.create(domain=Domain.objects.get(name="example.org"), local_part="zed")
    gen = publish()
    assert not gen.ok and gen.number is None
    assert "control character" in gen.error
    assert {p.name: p.read_bytes() for p in control_dir.iterdir()} == snapshot


def test_an_alias_loop_that_slipped_into_the_database_is_refused_by_sends_parser(
        control_dir: Path) -> None:
    d = Domain.objects.create(name="example.org")
    Alias.objects.create(domain=d, local_part="a", targets=["b@example.org"])
    Alias.objects.create(domain=d, local_part="b", targets=["a@example.org"])
    gen = publish()
    assert not gen.ok and "loop" in gen.error.lower()
    assert not (control_dir / "generation").exists()


def test_reset_setting_removes_its_file(control_dir: Path) -> None:
    _populate()
    publish()
    assert (control_dir / "databytes").exists()
    ControlSetting.objects.filter(name="databytes").delete()
    publish()
    assert not (control_dir / "databytes").exists()


def test_smarthost_is_the_default_route(control_dir: Path) -> None:
    _populate()
    Smarthost.objects.update_or_create(pk=1, defaults=dict(
        enabled=True, host="relay.example", port=2525, username="u", password="p w"))
    publish()
    assert (control_dir / "smtproutes").read_text() == ":relay.example:2525\n"
    assert (control_dir / "relayauth").read_text() == "relay.example:2525 u p w\n"


def test_tasks_publish_and_converge_when_stale(control_dir: Path) -> None:
    _populate()
    ConfigVersion.bump()
    assert publish_control_files.apply().get() == 1
    assert publish_if_stale.apply().get() is None  # up to date: nothing to do
    (control_dir / "generation").unlink()         # control/ lost its stamp
    assert publish_if_stale.apply().get() == 2
    ConfigVersion.bump()
    assert publish_if_stale.apply().get() == 2      # same content, version recorded
    assert Generation.objects.filter(ok=True).count() == 2


def test_unwritable_control_dir_is_reported(control_dir: Path) -> None:
    if os.geteuid() == 0:
        target = control_dir / "rcpthosts"
        target.mkdir()  # a directory where a file must go: rename fails even for root
    else:
        control_dir.chmod(0o500)
    _populate()
    gen = publish()
    assert not gen.ok and "cannot write" in gen.error
    assert not (control_dir / "generation").exists()
