"""appliance/cli.py: subcommands are discovered, --state works before and after them."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import cli, commands

POSTERN = [sys.executable, "-m", "appliance.cli"]


def test_every_command_module_registers_and_documents_itself() -> None:
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_"):  # private helpers shared by commands, not commands
            continue
        module = importlib.import_module(f"appliance.commands.{info.name}")
        assert callable(getattr(module, "register", None)), info.name
        assert module.__doc__ and module.__doc__.strip(), info.name


def test_the_appliance_commands_are_listed() -> None:
    done = subprocess.run([*POSTERN, "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for name in ("init", "run", "sendmail"):
        assert f"    {name} " in done.stdout


def test_no_command_is_a_usage_error() -> None:
    done = subprocess.run(POSTERN, capture_output=True, text=True)
    assert done.returncode == 64
    assert "usage: postern" in done.stderr


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_state_before_after_or_from_the_environment(tmp_path: Path, where: str) -> None:
    state = tmp_path / "s"
    env = dict(os.environ)
    if where == "before":
        argv = ["--state", str(state), "init", "--no-web"]
    elif where == "after":
        argv = ["init", "--no-web", "--state", str(state)]
    else:
        argv = ["init", "--no-web"]
        env["POSTERN_STATE"] = str(state)
    done = subprocess.run([*POSTERN, *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (state / "control" / "me").is_file()
    assert not (tmp_path / "var").exists()


def test_parser_gives_state_to_the_subcommand() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["--state", "/x", "run"]).state == "/x"
    assert parser.parse_args(["run", "--state", "/y"]).state == "/y"
    assert parser.parse_args(["run"]).state is None


def test_a_broken_command_module_does_not_take_the_others_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A second directory on the package path holding a module that fails to import.
    extra = tmp_path / "cmds"
    extra.mkdir()
    (extra / "broken.py").write_text('"""Broken on purpose."""\nraise RuntimeError("boom")\n')
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(extra)])
    found = [m.__name__ for m in cli.discover()]  # type: ignore[attr-defined]
    assert "appliance.commands.run" in found
    assert "appliance.commands.broken" not in found
    assert "appliance.commands.broken does not load: boom" in capsys.readouterr().err
    sys.modules.pop("appliance.commands.broken", None)
