"""smtpd's control files: defaults, strict parsers, badmailfrom, fail-closed first load."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mta.common.address import Address
from mta.common.control import ControlError
from mta.smtpd.controls import (DEFAULT_MAXRCPT, DEFAULT_TIMEOUT, Controls, parse_badmailfrom,
                                parse_flag)


def test_defaults_with_no_files(tmp_path: Path) -> None:
    s = Controls(tmp_path, check_interval=0).settings()
    assert (s.me, s.greeting, s.databytes, s.timeout, s.maxrcpt) == (
        "localhost", "localhost", 0, DEFAULT_TIMEOUT, DEFAULT_MAXRCPT)
    assert not s.rcpthosts.allows("localhost")        # fail closed
    assert "RELAYCLIENT" not in s.rules.lookup("127.0.0.1").env
    assert len(s.accounts) == 0 and s.dnsbl_zones == ()


def test_values_and_broken_files(tmp_path: Path) -> None:
    (tmp_path / "me").write_text("mx.example\n")
    (tmp_path / "smtpgreeting").write_text("mx.example welcomes you\n")
    (tmp_path / "databytes").write_text("1000\n")
    (tmp_path / "maxrcpt").write_text("0\n")          # below the minimum: refused
    (tmp_path / "timeoutsmtpd").write_text("٣٠\n")   # not ASCII digits: refused
    s = Controls(tmp_path, check_interval=0).settings()
    assert (s.greeting, s.databytes, s.maxrcpt, s.timeout) == (
        "mx.example welcomes you", 1000, DEFAULT_MAXRCPT, DEFAULT_TIMEOUT)


def test_badmailfrom() -> None:
    bad = parse_badmailfrom(b"Spammer@Bad.Example\n@worse.example\n# comment\n")
    assert bad.matches(Address("spammer", "bad.example"))
    assert bad.matches(Address("anyone", "worse.example"))
    assert not bad.matches(Address("anyone", "sub.worse.example"))
    assert not bad.matches(None)
    with pytest.raises(ControlError):
        parse_badmailfrom(b"not an address\n")


@given(st.binary(max_size=200))
def test_badmailfrom_never_crashes(data: bytes) -> None:
    try:
        parse_badmailfrom(data)
    except ControlError:
        pass


def test_flag() -> None:
    assert parse_flag(b"1\n") and not parse_flag(b"0\n") and not parse_flag(b"")
    with pytest.raises(ControlError):
        parse_flag(b"yes\n")
