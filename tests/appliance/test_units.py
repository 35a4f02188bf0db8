"""The systemd units: each daemon's user and sandbox, consistent with the permission table,
accepted by ``systemd-analyze verify``, and scored as docs/security.md says."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from appliance import install, permissions, users
from appliance.permissions import Kind
from mta.common import ipc
from mta.common.paths import StateDir
from tests import support

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
MAX_EXPOSURE = 2.0  # issue 7: aim for every score <= 2.0

# unit -> (user, the parts it writes: DESIGN.md "Processes")
UNITS: dict[str, tuple[str, set[str]]] = {
    "postern-smtpd.service": (ipc.DAEMON_USERS[ipc.Daemon.SMTPD], set()),
    "postern-queue.service": (ipc.DAEMON_USERS[ipc.Daemon.QUEUE], {"queue", "run"}),
    "postern-send.service": (ipc.DAEMON_USERS[ipc.Daemon.SEND], {"queue", "log", "run"}),
    "postern-local.service": (ipc.DAEMON_USERS[ipc.Daemon.LOCAL], {"mail", "run"}),
    "postern-remote.service": (ipc.DAEMON_USERS[ipc.Daemon.REMOTE], {"run"}),
    "postern-clean.service": (ipc.DAEMON_USERS[ipc.Daemon.CLEAN], {"queue", "run"}),
    "postern-web.service": (ipc.DAEMON_USERS[ipc.Daemon.WEB], {"root"}),
    "postern-worker.service": (ipc.DAEMON_USERS[ipc.Daemon.WORKER], {"control", "tls", "root"}),
    "postern-beat.service": (ipc.DAEMON_USERS[ipc.Daemon.WORKER], {"run", "root"}),
}
INIT = "postern-init.service"  # the one unit that is no daemon: a root oneshot before them
DOVECOT = "postern-dovecot.service"  # not ours: tests/interop/test_dovecot.py checks it
FHS_PARTS = {str(path): part for part, path in permissions.part_paths(StateDir.fhs("/")).items()}


def settings(name: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a rendered unit, values in order of appearance."""
    out: dict[str, list[str]] = {}
    for line in install.render_unit(name, python=PYTHON).splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def one(unit: dict[str, list[str]], key: str) -> str:
    values = unit.get(key, [])
    assert len(values) == 1, (key, values)
    return values[0]


def test_one_unit_per_daemon_and_the_target_wants_them_all() -> None:
    services = [n for n in install.unit_names() if n.endswith(".service")]
    assert sorted(services) == sorted([*UNITS, INIT, DOVECOT])
    for daemon in ipc.Daemon:
        assert f"postern-{daemon.value}.service" in services
    wants = one(settings(install.TARGET), "Wants").split()
    assert sorted(wants) == sorted(services)


@pytest.mark.parametrize("name", sorted(UNITS))
def test_each_unit_runs_as_its_own_user_in_a_sandbox(name: str) -> None:
    unit = settings(name)
    user, _writes = UNITS[name]
    assert one(unit, "User") == user
    assert one(unit, "Group") == user
    assert one(unit, "SupplementaryGroups").split() == list(users.account(user).groups)
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("PrivateDevices", "yes"), ("RestrictSUIDSGID", "yes"),
                       ("LockPersonality", "yes"), ("MemoryDenyWriteExecute", "yes"),
                       ("RestrictNamespaces", "yes"), ("SystemCallArchitectures", "native"),
                       ("StandardError", "journal")]:
        assert one(unit, key) == value, (name, key)
    families = set(one(unit, "RestrictAddressFamilies").split())
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    if name in ("postern-queue.service", "postern-send.service", "postern-local.service",
                "postern-clean.service"):
        assert families == {"AF_UNIX"}          # no network at all
        assert one(unit, "PrivateNetwork") == "yes"
    assert one(unit, "ExecStart").startswith(f"{PYTHON} -m ")


@pytest.mark.parametrize("name", sorted(UNITS))
def test_only_smtpd_may_bind_privileged_ports(name: str) -> None:
    unit = settings(name)
    expected = "CAP_NET_BIND_SERVICE" if name == "postern-smtpd.service" else ""
    assert one(unit, "CapabilityBoundingSet") == expected
    assert one(unit, "AmbientCapabilities") == expected


@pytest.mark.parametrize("name", sorted(UNITS))
def test_read_write_paths_are_exactly_what_the_daemon_writes(name: str) -> None:
    unit = settings(name)
    user, writes = UNITS[name]
    paths = unit.get("ReadWritePaths", [""])
    assert len(paths) == 1
    parts = {FHS_PARTS[p] for p in paths[0].split()}
    assert parts == writes
    # and the permission table lets that user write somewhere in each of them
    account = users.account(user)
    member_of = {account.name, *account.groups}
    for part in parts:
        writable = [r for r in permissions.TABLE if r.part == part and r.kind is Kind.DIR and (
            (user in r.owners and r.mode & 0o200) or (r.group in member_of and r.mode & 0o020))]
        assert writable, (name, part)


def test_daemons_cannot_even_see_what_they_must_not_read() -> None:
    fhs = StateDir.fhs("/")
    hidden = {n: set(p.lstrip("-") for p in " ".join(settings(n).get("InaccessiblePaths", []))
                     .split()) for n in UNITS}
    assert {str(fhs.queue), str(fhs.mail)} <= hidden["postern-smtpd.service"]
    assert str(fhs.mail) in hidden["postern-remote.service"]
    assert {str(fhs.queue), str(fhs.mail)} <= hidden["postern-web.service"]
    # the delivery log: send writes it, worker and web read it (the delivery-log page)
    for name in ("postern-web.service", "postern-worker.service", "postern-send.service"):
        assert str(fhs.log) not in hidden[name], name
    assert str(fhs.log) in hidden["postern-queue.service"]


def test_units_ship_as_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    data = re.search(r'\[tool\.setuptools\.package-data\]\n"\*" = \[(.*?)\]', text)
    assert data is not None
    patterns = data.group(1)
    assert '"*.service"' in patterns and '"*.target"' in patterns
    assert (ROOT / "appliance" / "units" / "__init__.py").exists()  # found by packages.find


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("units")
    for name in install.unit_names():
        (directory / name).write_text(install.render_unit(name, python=PYTHON))
    return directory


def test_units_pass_systemd_analyze_verify(rendered: Path) -> None:
    tool = support.require("systemd-analyze")
    files = [str(rendered / n) for n in install.unit_names()]
    result = subprocess.run([tool, "verify", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_verify_would_catch_a_broken_unit(rendered: Path, tmp_path: Path) -> None:
    tool = support.require("systemd-analyze")
    broken = tmp_path / "postern-broken.service"
    broken.write_text(install.render_unit("postern-queue.service", python=PYTHON)
                      .replace("ProtectSystem=strict", "ProtectSystem=very"))
    result = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True)
    # verify may still exit 0 on a value it ignores: hence the empty-stderr rule above
    assert "Failed to parse protect system value" in result.stderr


def exposure(tool: str, path: Path) -> float:
    result = subprocess.run([tool, "security", "--offline=yes", str(path)],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def documented_scores() -> dict[str, float]:
    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r"^\| `(postern-[a-z]+\.service)` \|.*\| ([0-9.]+) \|$",
                                 text, re.MULTILINE)}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_every_daemon_waits_for_init_and_needs_it(name: str) -> None:
    unit = settings(name)
    assert INIT in " ".join(unit["After"]).split()
    assert one(unit, "Requires") == INIT


def test_init_runs_postern_init_as_root_with_only_file_capabilities() -> None:
    unit = settings(INIT)
    assert "User" not in unit
    assert one(unit, "Type") == "oneshot"
    assert one(unit, "ExecStart") == f"{PYTHON} -m appliance.cli init --state fhs"
    assert set(one(unit, "CapabilityBoundingSet").split()) == {
        "CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE", "CAP_FSETID"}
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "ProtectSystem") == "strict"


@pytest.mark.parametrize("name", sorted([*UNITS, INIT]))
def test_exposure_is_low_and_as_documented(rendered: Path, name: str) -> None:
    tool = support.require("systemd-analyze")
    score = exposure(tool, rendered / name)
    assert score <= MAX_EXPOSURE, f"{name}: exposure {score}"
    assert documented_scores().get(name) == score, (
        f"docs/security.md does not record {name}'s exposure {score}")
