"""The project skeleton: a non-editable wheel ships the templates (top-level templates/,
mapped into webui/ by a symlink) and static files; the bootstrap migrates and creates the
first superadmin once; the settings layers load."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "POSTERN_STATE")}
    env.update(extra)
    return env


@pytest.mark.slow
def test_wheel_ships_templates_and_static(tmp_path: Path) -> None:
    build = tmp_path / "src"
    # Build from a copy so the work tree's build/ and egg-info are left alone.
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], check=True, capture_output=True).stdout
    for name in files.decode().split("\0"):
        if not name or not (ROOT / name).exists() and not (ROOT / name).is_symlink():
            continue
        src, dst = ROOT / name, build / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            dst.write_bytes(src.read_bytes())
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                             "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
                             str(build)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    wheel = next((tmp_path / "dist").glob("postern-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "templates").rglob("*.html"):
        rel = template.relative_to(ROOT / "templates")
        assert f"webui/templates/{rel}" in names, rel
    assert "webui/static/postern/style.css" in names
    assert any(n.startswith("webui/domains/migrations/0001") for n in names)
    # and the installed package finds them where the settings look
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    code = ("import django, os; from django.conf import settings; django.setup(); "
            "from django.template.loader import get_template; import webui; "
            "assert webui.__file__.startswith(os.environ['TARGET']), webui.__file__; "
            "get_template('base.html'); get_template('queue/summary.html'); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120,
                         env=_env(PYTHONPATH=str(target), TARGET=str(target),
                                  DJANGO_SETTINGS_MODULE="webui.settings.embedded",
                                  POSTERN_STATE=str(tmp_path / "state")))
    assert out.stdout.strip() == "ok", out.stderr


def test_bootstrap_migrates_and_creates_the_admin_once(tmp_path: Path) -> None:
    code = ("from webui import bootstrap; bootstrap.prepare_database(); "
            "print(bootstrap.ensure_admin('admin', 'first password'), "
            "bootstrap.ensure_admin('admin', 'second password')); "
            "from django.contrib.auth import authenticate; "
            "print(authenticate(username='admin', password='first password') is not None)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=_env(POSTERN_STATE=str(tmp_path / "var")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "True"]
    assert (tmp_path / "var" / "db.sqlite3").exists()
    key = tmp_path / "var" / "secret_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_production_settings_need_their_environment(tmp_path: Path) -> None:
    code = "import webui.settings.production"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=_env(POSTERN_STATE=str(tmp_path)))
    assert out.returncode != 0 and "POSTERN_SECRET_KEY" in out.stderr
    code = ("import webui.settings.production as s; "
            "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['HOST'], "
            "s.CELERY_BROKER_URL, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SECURE_HSTS_SECONDS)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env=_env(
                             POSTERN_STATE=str(tmp_path), POSTERN_SECRET_KEY="k" * 50,
                             POSTERN_DATABASE_URL="postgresql://u:p%40ss@db.example:5433/mail",
                             POSTERN_BROKER_URL="redis://127.0.0.1:6379/0"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["django.db.backends.postgresql", "db.example",
                                  "redis://127.0.0.1:6379/0", "True", "True", "31536000"]


def test_database_url_parsing() -> None:
    from webui.settings.dburl import database_from_url

    db = database_from_url("postgresql://u:p%40ss@h:5433/n?sslmode=require")
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == \
        ("u", "p@ss", "h", "5433", "n")
    assert db["OPTIONS"] == {"sslmode": "require"}
    with pytest.raises(ValueError):
        database_from_url("mysql://x/y")
