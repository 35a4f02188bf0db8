"""mta/util/privs.py: a root process really becomes the user, and cannot become root again.

Each drop runs in a forked child (dropping is irreversible); the child reports what it sees.
The user is a throwaway system user created for the test and removed afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mta.util import privs
from tests import support

pytestmark = pytest.mark.root


@pytest.fixture
def throwaway_user() -> Iterator[str]:
    support.require_root("setuid/setgid need root")
    useradd = support.require("useradd", path="/usr/sbin/useradd")
    name = "ptest" + secrets.token_hex(4)
    subprocess.run([useradd, "--system", "--no-create-home", "--user-group",
                    "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["/usr/sbin/userdel", name], check=False)
        subprocess.run(["/usr/sbin/groupdel", name], check=False, capture_output=True)


CHILD = r"""
import json, os, sys
from mta.util import privs
ident = privs.drop_privileges(sys.argv[1])
result = {"resuid": os.getresuid(), "resgid": os.getresgid(), "groups": sorted(os.getgroups()),
          "uid": ident.uid}
for name, attempt in [("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                      ("seteuid", lambda: os.seteuid(0))]:
    try:
        attempt()
        result[name] = "succeeded"
    except PermissionError:
        result[name] = "refused"
try:
    open("/etc/shadow", "rb").close()
    result["shadow"] = "readable"
except PermissionError:
    result["shadow"] = "refused"
print(json.dumps(result))
"""


def run_child(user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, user], capture_output=True, text=True,
                          cwd=support_root())


def test_drop_changes_every_id_and_root_cannot_come_back(throwaway_user: str) -> None:
    entry = pwd.getpwnam(throwaway_user)
    done = run_child(throwaway_user)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["resuid"] == [entry.pw_uid] * 3
    assert seen["resgid"] == [entry.pw_gid] * 3
    assert 0 not in seen["groups"]
    assert seen["setuid"] == seen["setgid"] == seen["seteuid"] == "refused"
    assert seen["shadow"] == "refused"


def test_unknown_user_is_refused() -> None:
    with pytest.raises(privs.PrivilegeError, match="no such user"):
        privs.drop_privileges("no-such-user-" + secrets.token_hex(4))


def test_dropping_to_root_is_refused() -> None:
    with pytest.raises(privs.PrivilegeError, match="uid or gid 0"):
        privs.drop_privileges("root")


def test_not_root_cannot_drop(throwaway_user: str) -> None:
    # A process that already is the throwaway user cannot "drop" to it again (or to anyone).
    code = ("import os, sys\nfrom mta.util import privs\n"
            "privs.drop_privileges(sys.argv[1])\n"
            "try:\n    privs.drop_privileges(sys.argv[1])\n"
            "except privs.PrivilegeError as e:\n    print('refused:', e)\n")
    done = subprocess.run([sys.executable, "-c", code, throwaway_user], capture_output=True,
                          text=True, cwd=str(support_root()))
    assert done.returncode == 0, done.stderr
    assert "refused: cannot become" in done.stdout


def support_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
