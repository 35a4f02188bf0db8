"""passwd: hashing, verification (and Dovecot agreeing with it), the strict parser."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mta.common.control import ControlError
from mta.common.passwd import NOBODY, hash_password, parse, render_line, verify
from tests import support


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("{ARGON2ID}$argon2id$")
    assert verify(stored, "correct horse")
    assert verify(stored, b"correct horse")
    assert not verify(stored, "correct horse ")
    assert not verify(stored, "")
    assert not verify("{PLAIN}correct horse", "correct horse")
    assert not verify("garbage", "x")
    assert not verify("{ARGON2ID}$argon2id$broken", "x")


def test_sha512_crypt_is_read() -> None:
    # doveadm pw -s SHA512-CRYPT -p secret (a fixed salt so the test needs no doveadm)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    stored = "{SHA512-CRYPT}" + crypt.crypt("secret", "$6$saltsaltsalt$")
    assert verify(stored, "secret") and not verify(stored, "Secret")


def test_dovecot_verifies_our_hash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doveadm = support.require("doveadm")
    stored = hash_password("s3cret pass")
    ok = subprocess.run([doveadm, "pw", "-t", stored, "-p", "s3cret pass"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0 and "(verified)" in ok.stdout + ok.stderr
    bad = subprocess.run([doveadm, "pw", "-t", stored, "-p", "wrong"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0


def test_parse_and_check() -> None:
    line = render_line("Alice@Example.com", hash_password("pw1"))
    accounts = parse(f"# comment\n{line}\n".encode())
    assert accounts.check("alice@example.com", b"pw1")
    assert accounts.check("ALICE@EXAMPLE.COM", b"pw1")
    assert not accounts.check("alice@example.com", b"pw2")
    assert not accounts.check("bob@example.com", b"pw1")
    assert not NOBODY.check("alice@example.com", b"pw1")


@pytest.mark.parametrize("bad", [
    b"alice@example.com:{PLAIN}secret::::::\n",
    b"alice@example.com:secret\n",
    b"not an address:{ARGON2ID}$argon2id$x::::::\n",
    b"a@b.example:{ARGON2ID}x::::::\na@b.example:{ARGON2ID}y::::::\n",
    b"a@b.example:{ARGON2ID}x:::::::::\n",
    b"a@b.example:{ARGON2ID}x\r::::::\n",
])
def test_bad_files_refused(bad: bytes) -> None:
    with pytest.raises(ControlError):
        parse(bad)


def test_bad_passwords_refused() -> None:
    for bad in ["", "a\nb", "x" * 2000]:
        with pytest.raises(ValueError):
            hash_password(bad)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_parser_never_crashes(data: bytes) -> None:
    try:
        parse(data)
    except ControlError:
        pass


@settings(max_examples=5, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)),
               min_size=1, max_size=30).filter(lambda s: "\x7f" not in s))
def test_hash_round_trip(plain: str) -> None:
    assert verify(hash_password(plain), plain)
