"""import-qmail and the adoption of init's control files: what maps is imported and
published; what does not is reported line by line; bad lines never reach control/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mta.common import addressbook, tcprules
from webui.access.models import AccessRule
from webui.aliases.models import Alias
from webui.control.models import ControlSetting
from webui.domains.models import Domain
from webui.publish.importer import adopt_control_files, import_qmail
from webui.publish.publisher import publish
from webui.relay.models import RelayDomain, Smarthost

ROOT = Path(__file__).resolve().parents[2]


def qmail_tree(base: Path) -> Path:
    q = base / "qmail"
    (q / "control").mkdir(parents=True)
    (q / "alias").mkdir()
    c = q / "control"
    (c / "me").write_text("mail.example.org\n")
    (c / "locals").write_text("example.org\nlocalhost\n")
    (c / "virtualdomains").write_text("virtual.example:joe-virtual\n.wild.example:x\n")
    (c / "rcpthosts").write_text("example.org\nvirtual.example\nbackup.example\n.any.example\n")
    (c / "smtproutes").write_text("backup.example:[192.0.2.25]:2525\nelse.example:relay.example\n"
                                  ":smart.example:587\n")
    (c / "databytes").write_text("20000000\n")
    (c / "concurrencyremote").write_text("lots\n")
    (q / "tcp.smtp").write_text("# comment\n127.:allow,RELAYCLIENT=\"\"\n"
                                "10.0.0.0/8:allow,RELAYCLIENT=\"\"\n192.0.2.66:deny\n"
                                "bogus line\n:allow\n")
    a = q / "alias"
    (a / ".qmail-postmaster").write_text("&admin@elsewhere.example\n")
    (a / ".qmail-root").write_text("admin@elsewhere.example\n|/usr/bin/logger\n")
    (a / ".qmail-mailer-daemon").write_text("")
    (a / ".qmail-list:dev").write_text("a@elsewhere.example\nb@elsewhere.example\n")
    (a / ".qmail-default").write_text("catch@elsewhere.example\n")
    return q


@pytest.mark.django_db
def test_import_qmail_maps_and_reports(tmp_path: Path, control_dir: Path) -> None:
    report = import_qmail(qmail_tree(tmp_path))
    assert set(Domain.objects.values_list("name", flat=True)) == \
        {"example.org", "localhost", "virtual.example"}
    rd = RelayDomain.objects.get()
    assert (rd.name, rd.route_host, rd.route_port) == ("backup.example", "192.0.2.25", 2525)
    sh = Smarthost.objects.get()
    assert (sh.enabled, sh.host, sh.port) == (True, "smart.example", 587)
    assert ControlSetting.objects.get(name="databytes").value == "20000000"
    assert ControlSetting.objects.get(name="me").value == "mail.example.org"
    assert [r.rule for r in AccessRule.objects.all()] == [
        '127.:allow,RELAYCLIENT=""', '10.0.0.0/8:allow,RELAYCLIENT=""', "192.0.2.66:deny",
        ":allow"]
    sources = set(a.source for a in Alias.objects.all())
    assert {"postmaster@example.org", "root@localhost", "list.dev@virtual.example",
            "@example.org"} <= sources
    skipped = "\n".join(report.skipped)
    for expected in (".wild.example", "joe-virtual", ".any.example", "else.example",
                     "concurrencyremote", "bogus line", "logger", ".qmail-mailer-daemon"):
        assert expected in skipped, expected
    gen = publish()
    assert gen.ok, gen.error
    rules = tcprules.parse((control_dir / "tcp.smtp").read_bytes())
    assert rules.lookup("192.0.2.66").allow is False
    aliases = addressbook.parse_aliases((control_dir / "aliases").read_bytes())
    assert len(aliases.catchalls) == 3


@pytest.mark.django_db
def test_adoption_happens_once(tmp_path: Path, control_dir: Path) -> None:
    (control_dir / "me").write_text("vm\n")
    (control_dir / "locals").write_text("vm\n")
    (control_dir / "rcpthosts").write_text("vm\n")
    (control_dir / "tcp.smtp").write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
    report = adopt_control_files(control_dir)
    assert report is not None and "domain vm" in report.imported
    assert adopt_control_files(control_dir) is None
    gen = publish()
    assert gen.ok
    assert (control_dir / "rcpthosts").read_text() == "vm\n"
    assert (control_dir / "tcp.smtp").read_text() == '127.:allow,RELAYCLIENT=""\n:allow\n'


def test_import_qmail_command(tmp_path: Path) -> None:
    q = qmail_tree(tmp_path)
    state = tmp_path / "var"
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "POSTERN_STATE")}
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "--state", str(state),
                          "import-qmail", str(q)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # some lines could not be mapped
    assert "imported: domain example.org" in out.stdout
    assert "not mapped: bogus line" in out.stdout.replace("tcp.smtp: ", "")
    assert (state / "control" / "generation").exists()
    assert "backup.example:192.0.2.25:2525" in (state / "control" / "smtproutes").read_text()
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "--state", str(state),
                          "import-qmail", str(tmp_path / "nope")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.strip().startswith("postern: ")
