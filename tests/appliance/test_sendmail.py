"""The sendmail front end against a real queue daemon: what programs hand it is queued as
they expect, and every failure has the right sysexits status and a one-line reason."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import sendmail
from tests import support
from tests.appliance.queue_fixture import RunningQueue, init_state, queue_daemon

SENDMAIL = shutil.which("sendmail", path=os.path.dirname(sys.executable)) or ""
POSTERN = [sys.executable, "-m", "appliance.cli"]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[RunningQueue]:
    with queue_daemon(tmp_path) as running:
        yield running


def run_sendmail(queue: RunningQueue, args: list[str], stdin: bytes,
                 via: str = "entry") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "POSTERN_STATE": str(queue.state.root)}
    argv = [SENDMAIL, *args] if via == "entry" else [*POSTERN, "sendmail", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, env=env, timeout=60)


def body_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[1]


def header_of(message: bytes) -> bytes:
    return message.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def test_the_entry_point_is_installed() -> None:
    assert SENDMAIL, "the 'sendmail' console script is missing from the venv"


@pytest.mark.parametrize("via", ["entry", "postern"])
def test_cron_style_plain_pipe(queue: RunningQueue, via: str) -> None:
    # What cron runs: sendmail -FCronDaemon -i -B8BITMIME -oem root
    stdin = b"Subject: Cron <root@host> run-parts\nTo: root\n\nline one\n.\nline three\n"
    done = run_sendmail(queue, ["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], stdin,
                        via=via)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    queued = queue.only()
    assert queued.envelope.recipients == (b"root@host.example.org",)
    assert queued.envelope.origin == "local" and queued.envelope.uid == os.getuid()
    assert queued.envelope.params == (b"BODY=8BITMIME",)
    assert body_of(queued.message) == b"line one\r\n.\r\nline three\r\n"  # -i keeps the dot
    header = header_of(queued.message)
    assert header.startswith(b"Received: (postern ")  # the queue's line for local mail
    assert b"\r\nFrom: CronDaemon <" in header
    assert b"\r\nDate: " in header and b"\r\nMessage-ID: <" in header


def test_t_reads_to_cc_bcc_and_removes_bcc(queue: RunningQueue) -> None:
    stdin = (b"From: Web <web@example.org>\nTo: a@example.org, \"B\" <b@example.org>\n"
             b"Cc: c@example.org\nBcc: secret@example.org\nSubject: t\n\nbody\n")
    done = run_sendmail(queue, ["-t", "-i", "-f", "bounces@example.org"], stdin)
    assert done.returncode == 0, done.stderr
    queued = queue.only()
    assert queued.envelope.sender == b"bounces@example.org"
    assert queued.envelope.recipients == (b"a@example.org", b"b@example.org",
                                          b"c@example.org", b"secret@example.org")
    assert b"secret" not in queued.message and b"Bcc" not in queued.message
    assert b"\r\nFrom: Web <web@example.org>\r\n" in queued.message


def test_t_adds_argument_recipients_and_removes_duplicates(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["-t", "a@example.org", "x@example.org"],
                        b"To: a@example.org\n\nhi\n")
    assert done.returncode == 0, done.stderr
    assert queue.only().envelope.recipients == (b"a@example.org", b"x@example.org")


def test_a_lone_dot_ends_the_message_without_i(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["u@example.org"], b"Subject: s\n\nkept\n.\nnot kept\n")
    assert done.returncode == 0, done.stderr
    assert body_of(queue.only().message) == b"kept\r\n"


def test_null_sender_and_default_sender(queue: RunningQueue, tmp_path: Path) -> None:
    assert run_sendmail(queue, ["-f", "<>", "u@example.org"], b"\nx\n").returncode == 0
    assert run_sendmail(queue, ["u@example.org"], b"\nx\n").returncode == 0
    senders = sorted(q.envelope.sender for q in queue.messages())
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name.encode()
    assert senders == [b"", me + b"@host.example.org"]


def test_message_without_header_gets_one_and_keeps_its_text(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["u@example.org"], b"just text, no header\nsecond\n")
    assert done.returncode == 0, done.stderr
    queued = queue.only().message
    assert body_of(queued) == b"just text, no header\r\nsecond\r\n"
    assert b"\r\nFrom: " in header_of(queued)


def test_leading_mbox_from_line_is_dropped(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["-i", "u@example.org"],
                        b"From someone Mon Jan  1 00:00:00 2024\nSubject: s\n\nb\n")
    assert done.returncode == 0, done.stderr
    assert b"From someone" not in queue.only().message


def test_large_message_is_streamed_byte_for_byte(queue: RunningQueue) -> None:
    body = b"".join(b"%07d the quick brown fox jumps over the lazy dog\r\n" % i
                    for i in range(100_000))  # about 5.5 MB
    done = run_sendmail(queue, ["-i", "u@example.org"], b"Subject: big\r\n\r\n" + body)
    assert done.returncode == 0, done.stderr
    assert body_of(queue.only().message) == body


def test_verbose_prints_the_queue_id(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["-v", "u@example.org"], b"\nx\n")
    assert done.returncode == 0
    assert done.stderr.decode().strip() == f"sendmail: queued as {queue.only().queue_id}"


@pytest.mark.parametrize("args, stdin, status, reason", [
    (["-q"], b"", 64, "unknown option -q"),
    (["-bp"], b"", 64, "postern queue"),
    (["-f"], b"", 64, "needs a value"),
    ([], b"Subject: s\n\nx\n", 64, "no recipients"),
    (["-t"], b"Subject: no recipients\n\nx\n", 65, "no recipient addresses"),
    (["-t"], b"To: a@example.org\nSubject: a\rBcc: b@evil.example\n\nx\n", 65, "bare CR"),
    (["bad address@"], b"\nx\n", 64, "recipient"),
    (["-f", "a b@", "u@example.org"], b"\nx\n", 65, "-f"),
    (["-F", "Evil\nBcc: x", "u@example.org"], b"\nx\n", 64, "control characters"),
])
def test_bad_usage_and_bad_input(queue: RunningQueue, args: list[str], stdin: bytes,
                                 status: int, reason: str) -> None:
    done = run_sendmail(queue, args, stdin)
    assert done.returncode == status
    err = done.stderr.decode()
    assert err.startswith("sendmail: ") and err.count("\n") == 1 and reason in err
    assert queue.messages() == []


def test_queue_refusing_for_good_is_65(tmp_path: Path) -> None:
    with queue_daemon(tmp_path, {"databytes": "1000\n"}) as queue:
        refused_for_good(queue)


def refused_for_good(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["-i", "u@example.org"], b"\n" + b"x" * 5000 + b"\n")
    assert done.returncode == 65, done.stderr
    assert done.stderr.startswith(b"sendmail: the queue refused the message")
    assert queue.messages() == []


def test_no_queue_running_is_75(tmp_path: Path) -> None:
    state = init_state(tmp_path / "var")
    env = {**os.environ, "POSTERN_STATE": str(state.root)}
    done = subprocess.run([SENDMAIL, "u@example.org"], input=b"\nx\n", capture_output=True,
                          env=env)
    assert done.returncode == 75
    assert done.stderr.startswith(b"sendmail: the queue cannot take the message now")


def test_bs_speaks_smtp_on_stdin_and_stdout(queue: RunningQueue) -> None:
    session = (b"EHLO client.example\r\nMAIL FROM:<s@example.org>\r\n"
               b"RCPT TO:<r@example.org>\r\nDATA\r\nSubject: smtp\r\n\r\n..dot\r\nbody\r\n.\r\n"
               b"QUIT\r\n")
    done = run_sendmail(queue, ["-bs"], session)
    assert done.returncode == 0, done.stderr
    replies = done.stdout.decode().splitlines()
    assert replies[0].startswith("220 host.example.org")
    queued = queue.only()
    assert f"250 2.0.0 ok queued as {queued.queue_id}" in replies
    assert replies[-1].startswith("221")
    assert queued.envelope.sender == b"s@example.org"
    assert queued.envelope.recipients == (b"r@example.org",)
    assert body_of(queued.message) == b".dot\r\nbody\r\n"


def test_bs_answers_bad_commands_and_survives_end_of_input(queue: RunningQueue) -> None:
    done = run_sendmail(queue, ["-bs"], b"HELO x\r\nRCPT TO:<a@b.example>\r\nBOGUS\r\n")
    assert done.returncode == 0
    codes = [line[:3] for line in done.stdout.decode().splitlines()]
    assert codes == ["220", "250", "503", "500"]
    assert queue.messages() == []


def test_php_mail_function(queue: RunningQueue, tmp_path: Path) -> None:
    php = support.require("php")
    script = ('$ok = mail("rcpt@example.org", "From PHP", "Hello from PHP\\n.\\nafter dot",'
              ' "From: app@example.org\\r\\nBcc: hidden@example.org");'
              ' exit($ok ? 0 : 1);')
    env = {**os.environ, "POSTERN_STATE": str(queue.state.root)}
    done = subprocess.run([php, "-n", "-d", f"sendmail_path={SENDMAIL} -t -i", "-r", script],
                          capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    queued = queue.only()
    assert queued.envelope.recipients == (b"rcpt@example.org", b"hidden@example.org")
    assert b"Subject: From PHP\r\n" in queued.message
    assert body_of(queued.message) == b"Hello from PHP\r\n.\r\nafter dot\r\n"
    assert b"hidden" not in queued.message


def test_git_send_email(queue: RunningQueue, tmp_path: Path) -> None:
    git = support.require("git")
    support.require("git-send-email", path="/usr/lib/git-core/git-send-email")
    repo = tmp_path / "repo"
    env = {**os.environ, "POSTERN_STATE": str(queue.state.root), "HOME": str(tmp_path),
           "GIT_AUTHOR_NAME": "Dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
           "GIT_COMMITTER_NAME": "Dev", "GIT_COMMITTER_EMAIL": "dev@example.org"}
    run = lambda *a: subprocess.run([git, *a], cwd=repo, env=env, check=True,  # noqa: E731
                                    capture_output=True, timeout=60)
    repo.mkdir()
    run("init", "-q")
    (repo / "file.txt").write_text("hello\n")
    run("add", "file.txt")
    run("commit", "-q", "-m", "Add a file")
    run("format-patch", "-1", "-o", str(tmp_path / "patches"))
    patch = next((tmp_path / "patches").iterdir())
    run("send-email", f"--sendmail-cmd={SENDMAIL}", "--to=list@example.org",
        "--cc=reviewer@example.org", "--from=Dev <dev@example.org>", "--confirm=never",
        "--suppress-cc=all", "--no-chain-reply-to", "--envelope-sender=auto", str(patch))
    queued = queue.only()
    assert set(queued.envelope.recipients) == {b"list@example.org", b"reviewer@example.org"}
    assert queued.envelope.sender == b"dev@example.org"
    assert b"Subject: [PATCH] Add a file\r\n" in queued.message
    assert b"+hello\r\n" in queued.message


def test_parse_args_accepts_sendmail_noise() -> None:
    opts = sendmail.parse_args(["-oi", "-oem", "-odb", "-U", "-v", "-oXfoo", "-Bx", "-N",
                                "never", "-R", "hdrs", "-X", "/dev/null", "-ti", "-f", "s@x",
                                "-FName", "--", "-dash@example.org", "r@example.org"])
    assert opts.extract and not opts.dot_ends and opts.verbose
    assert opts.sender == "s@x" and opts.full_name == "Name"
    assert opts.recipients == ["-dash@example.org", "r@example.org"]


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.lists(st.text(alphabet="-tifFoBbvU=x@. ab", max_size=8), max_size=6))
def test_parse_args_never_crashes(argv: list[str]) -> None:
    try:
        opts = sendmail.parse_args(argv)
    except sendmail.UsageError:
        return
    assert opts.mode in ("m", "s")
    assert all(isinstance(r, str) for r in opts.recipients)


@given(st.binary(max_size=400), st.booleans())
def test_reading_any_input_never_crashes(data: bytes, dot_ends: bool) -> None:
    import io
    stream = io.BytesIO(data)
    try:
        header, start, ended = sendmail.read_header(stream, dot_ends)
    except sendmail.DataError:
        return
    body = b"".join(sendmail.read_body(stream, dot_ends)) if not ended else b""
    if not dot_ends:
        # with -i nothing is lost: what is not header is body (a blank separator line aside)
        assert len(header) + len(start) + len(body) <= len(data)
        assert data.endswith(body)
