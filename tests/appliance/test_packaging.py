"""``pip install .`` (not editable) gives a working ``postern``: templates and static files
included, ``postern init`` and ``postern run`` working from anywhere.

To stay fast and offline the wheel is built with this venv's setuptools (--no-build-isolation)
from a copy of the source tree, installed into a fresh venv with --no-deps, and that venv
sees the dependencies (not Postern itself) through a .pth line naming this venv's
site-packages: every Postern module it runs comes from the installed wheel.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
from pathlib import Path

import pytest

from tests.harness import reachable_base
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


BUILD_INPUTS = ("pyproject.toml", "README.md", "manage.py", "mta", "webui", "appliance",
                "templates")


def copy_source(dest: Path) -> None:
    """What the build reads, and nothing else (no sockets or state left by running tests)."""
    dest.mkdir()
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.sock"))
        elif src.exists():
            shutil.copy2(src, dest / name)


def test_pip_install_gives_a_working_postern(tmp_path: Path) -> None:
    source, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv"
    copy_source(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("postern-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "zz_postern_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The new venv's own interpreter runs pip (found through the .pth), so the scripts'
    # #! line names it; --ignore-installed leaves this checkout's editable install alone.
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed",
                    "--no-build-isolation", str(wheel)], check=True, capture_output=True,
                   timeout=300)

    # This checkout's own (editable) install is untouched: pip must never uninstall it.
    assert list(Path(sysconfig.get_paths()["purelib"]).glob("__editable__*postern*"))

    # Postern's code and data come from the wheel, not from this checkout.
    where = subprocess.run([python, "-c", "import appliance, mta, webui; "
                            "print(appliance.__file__, mta.__file__, webui.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert all(path.startswith(str(site)) for path in where.stdout.split())
    installed = site / "webui"
    assert (installed / "templates" / "base.html").is_file()
    assert list((installed / "templates").rglob("*.html"))
    assert (installed / "static" / "postern" / "style.css").is_file()
    assert (site / "appliance" / "units" / "postern.target").is_file()
    for script in ("postern", "sendmail"):
        assert (venv / "bin" / script).is_file()

    postern = str(venv / "bin" / "postern")
    env = {k: v for k, v in os.environ.items() if k not in ("POSTERN_STATE", "PYTHONPATH")}
    env["POSTERN_ADMIN_PASSWORD"] = "pw"
    base, cleanup = reachable_base(tmp_path)  # as root, daemons must reach the state dir
    state = base / "state"
    done = subprocess.run([postern, "init", "--state", str(state), "--me", "pkg.example"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    port = free_port()
    process = subprocess.Popen([postern, "run", "--state", str(state), "--smtp", "off",
                                "--submission", "off", "--web", f"127.0.0.1:{port}"],
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "run.log", "w"),
                               text=True, env=env, cwd=tmp_path)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"postern: ready web=127.0.0.1:{port}", \
            (tmp_path / "run.log").read_text()
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=30)
        assert page.status == 200
        assert b"<form" in page.read()  # rendered from the installed templates
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)
        if cleanup:
            shutil.rmtree(base, ignore_errors=True)
