"""Import control files into the database: an existing qmail installation
(``postern import-qmail DIR``) or the files ``postern init`` wrote before the database had
anything (``adopt_control_files``, run once by ``bootstrap.prepare_database``, so the first
publish keeps init's defaults instead of wiping them).

Reads qmail's ``control/`` (me, locals, rcpthosts, virtualdomains, smtproutes, the one-value
settings), a tcprules source file (``tcp.smtp``) and ``~alias/.qmail-*`` forwards. Every
value is untrusted and goes through the same validators as a form; whatever cannot be mapped
is reported, line by line, never silently dropped. Writes the database only; the caller
publishes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from mta.common.address import AddressError, parse_domain
from mta.common.control import ControlError, parse_lines

MAX_FILE = 16 * 1024 * 1024


@dataclass
class Report:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file: line: reason"

    def add(self, what: str) -> None:
        self.imported.append(what)

    def skip(self, where: str, reason: str) -> None:
        self.skipped.append(f"{where}: {reason}")


def _read(path: Path, report: Report) -> list[str] | None:
    try:
        if not path.is_file():
            return None
        if path.stat().st_size > MAX_FILE:
            report.skip(path.name, f"larger than {MAX_FILE} bytes")
            return None
        return parse_lines(path.read_bytes(), name=path.name)
    except (OSError, ControlError) as exc:
        report.skip(path.name, str(exc))
        return None


def _domain(text: str) -> str:
    """A qmail control-file domain (single labels allowed, as in qmail's locals)."""
    from webui.core.validators import refuse_control_characters

    refuse_control_characters(text)
    try:
        return parse_domain(text.strip().lower().encode("utf-8"), smtputf8=True)
    except AddressError as exc:
        raise ValidationError(str(exc)) from exc


def _ensure_domain(name: str, report: Report, where: str) -> Any:
    from webui.domains.models import Domain, DomainAlias
    from webui.relay.models import RelayDomain

    existing = Domain.objects.filter(name=name).first()
    if existing:
        return existing
    if DomainAlias.objects.filter(name=name).exists() or RelayDomain.objects.filter(name=name).exists():
        report.skip(where, f"{name} is already a domain alias or relay domain")
        return None
    report.add(f"domain {name}")
    return Domain.objects.create(name=name, description="imported")


def _import_domains(control: Path, report: Report) -> list[str]:
    from webui.relay.models import RelayDomain

    hosted: list[str] = []
    for line in _read(control / "locals", report) or []:
        try:
            name = _domain(line)
        except ValidationError as exc:
            report.skip(f"locals: {line}", "; ".join(exc.messages))
            continue
        if _ensure_domain(name, report, f"locals: {line}"):
            hosted.append(name)
    for line in _read(control / "virtualdomains", report) or []:
        key, sep, prefix = line.partition(":")
        if not sep or not key or key.startswith("."):
            report.skip(f"virtualdomains: {line}", "only exact 'domain:prefix' lines can be mapped")
            continue
        try:
            name = _domain(key)
        except ValidationError as exc:
            report.skip(f"virtualdomains: {line}", "; ".join(exc.messages))
            continue
        if _ensure_domain(name, report, f"virtualdomains: {line}"):
            hosted.append(name)
            if prefix:
                report.skip(f"virtualdomains: {line}",
                            f"imported as hosted domain; the user prefix {prefix!r} is not kept "
                            "(add its mailboxes and aliases)")
    for line in _read(control / "rcpthosts", report) or []:
        if line.startswith("."):
            report.skip(f"rcpthosts: {line}", "wildcard entries cannot be mapped")
            continue
        try:
            name = _domain(line)
        except ValidationError as exc:
            report.skip(f"rcpthosts: {line}", "; ".join(exc.messages))
            continue
        if name in hosted or RelayDomain.objects.filter(name=name).exists():
            continue
        report.add(f"relay domain {name}")
        RelayDomain.objects.create(name=name)
    return hosted


def _import_routes(control: Path, report: Report) -> None:
    from webui.core.mta_parsers import routes
    from webui.relay.models import RelayDomain, Smarthost

    for line in _read(control / "smtproutes", report) or []:
        key, _, relay = line.partition(":")
        where = f"smtproutes: {line}"
        mod = routes()
        host, port = relay, None
        if mod is not None and relay:
            try:
                r = mod.parse_relay(relay, "smtproutes")
                host, port = r.host, r.port
            except (ControlError, ValueError) as exc:
                report.skip(where, str(exc))
                continue
        if not key:
            sh = Smarthost.load()
            sh.enabled, sh.host, sh.port = True, host, port or 25
            sh.save()
            report.add(f"smarthost {host}:{sh.port}")
            continue
        rd = RelayDomain.objects.filter(name=key.lower()).first()
        if rd is None:
            report.skip(where, "routes for domains we do not accept mail for cannot be mapped "
                               "(only relay domains and the smarthost)")
            continue
        rd.route_host, rd.route_port = host, port
        rd.save()
        report.add(f"route {key} -> {host}")


def _import_settings(control: Path, report: Report) -> None:
    from webui.control.models import ControlSetting
    from webui.control.registry import SETTINGS

    for spec in SETTINGS:
        lines = _read(control / spec.name, report)
        if not lines:
            continue
        value = "\n".join(lines) if spec.multiline else lines[0].strip()
        try:
            if spec.name in ("me", "defaultdomain", "helohost", "bouncehost", "doublebouncehost"):
                value = _domain(value)  # qmail allows single-label host names here
            else:
                value = spec.check(value)
        except ValidationError as exc:
            report.skip(f"{spec.name}: {value[:60]}", "; ".join(exc.messages))
            continue
        ControlSetting.objects.update_or_create(name=spec.name, defaults={"value": value})
        report.add(f"setting {spec.name}")


def import_tcprules(path: Path, report: Report) -> None:
    from webui.access.forms import AccessRuleForm
    from webui.access.models import AccessRule
    from webui.access.rules import parse_rule
    from webui.core.scoping import is_superadmin  # noqa: F401  (forms need no user here)

    lines = _read(path, report)
    if lines is None:
        return
    last = AccessRule.objects.order_by("-position").first()
    position = (last.position if last else 0) + 10
    for line in lines:
        where = f"{path.name}: {line}"
        try:
            typed = parse_rule(line)
        except ValidationError as exc:
            report.skip(where, "; ".join(exc.messages))
            continue
        form = AccessRuleForm(data={"position": position, "pattern": typed.pattern,
                                    "action": typed.action, "comment": "imported",
                                    "variables": "\n".join(f'{k}="{v}"' for k, v in
                                                           typed.variables.items())})
        if not form.is_valid():
            report.skip(where, "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items()))
            continue
        form.save()
        report.add(f"access rule {form.instance.rule}")
        position += 10


_QMAIL_FILE = re.compile(r"\.qmail-(.+)")


def import_alias_dir(alias_dir: Path, domains: list[str], report: Report) -> None:
    """``~alias/.qmail-NAME`` forwards -> aliases NAME@each hosted domain (``default`` ->
    catch-all). Program (``|``) and file (``/``, ``./``) deliveries cannot be mapped."""
    from webui.aliases.forms import AliasForm, parse_targets
    from webui.domains.models import Domain

    if not alias_dir.is_dir():
        report.skip(str(alias_dir), "not a directory")
        return
    for path in sorted(alias_dir.iterdir()):
        m = _QMAIL_FILE.fullmatch(path.name)
        if not m or path.is_symlink() or not path.is_file():
            continue
        local = m.group(1).replace(":", ".").lower()
        lines = _read(path, report)
        if lines is None:
            continue
        targets: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("&"):
                text = text[1:]
            if text.startswith(("|", "/", "./")):
                report.skip(f"{path.name}: {line}", "program and file deliveries cannot be mapped")
                continue
            targets.append(text)
        if not targets:
            if not lines:
                report.skip(path.name, "empty file (delivery to ~alias) cannot be mapped")
            continue
        try:
            parse_targets("\n".join(targets))
        except ValidationError as exc:
            report.skip(path.name, "; ".join(exc.messages))
            continue
        if local.endswith("-default") or local == "default":
            if local != "default":
                report.skip(path.name, "extension catch-alls cannot be mapped")
                continue
            local = ""
        for name in domains:
            domain = Domain.objects.filter(name=name).first()
            form = AliasForm(data={"local_part": local, "domain": domain.pk if domain else "",
                                   "targets": "\n".join(targets), "enabled": True})
            form.fields["domain"].queryset = Domain.objects.all()
            if form.is_valid():
                form.save()
                report.add(f"alias {form.instance.source}")
            else:
                report.skip(f"{path.name} for {name}",
                            "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items()))


def import_qmail(qmail_dir: Path, *, tcprules_file: Path | None = None,
                 alias_dir: Path | None = None) -> Report:
    """Import ``qmail_dir/control`` (or ``qmail_dir`` itself if it is the control dir), a
    tcprules file (default ``qmail_dir/tcp.smtp`` or ``/etc/tcp.smtp`` style path given) and
    ``qmail_dir/alias`` (``~alias``). One transaction: all of it or, on a crash, nothing."""
    report = Report()
    control = qmail_dir / "control" if (qmail_dir / "control").is_dir() else qmail_dir
    with transaction.atomic():
        _import_settings(control, report)
        domains = _import_domains(control, report)
        _import_routes(control, report)
        rules = tcprules_file or next((p for p in (control / "tcp.smtp", qmail_dir / "tcp.smtp")
                                       if p.is_file()), None)
        if rules is not None:
            import_tcprules(rules, report)
        aliases = alias_dir or qmail_dir / "alias"
        if aliases.is_dir():
            import_alias_dir(aliases, domains, report)
    return report


def adopt_control_files(control: Path) -> Report | None:
    """Once, on a database that has never been published or changed: import what
    ``postern init`` (or an admin) already put in control/. Returns None if not needed."""
    from webui.publish.models import ConfigVersion, Generation

    with transaction.atomic():
        if Generation.objects.exists() or ConfigVersion.objects.exists():
            return None
        report = import_qmail(control) if control.is_dir() else Report()
        ConfigVersion.bump()  # marks the adoption as done, even when there was nothing
    return report
