"""``dumbkv cli`` as a user runs it: a real program on a real pseudo-terminal (pexpect) or with
pipes, against a real server; what the server stored is read back over a separate raw socket.
Where redis-cli applies, ``dumbkv cli`` must print the same bytes as redis-cli for the same
commands against the same server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
from conftest import RawClient, ServerProcess, call, require_tool

pytestmark = pytest.mark.backends("sqlite")

TIMEOUT = 30
UP = "\x1b[A"
REDIS_CLI_HINT = "apt-get install redis-tools"


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of every shell started here: HOME and the history file in tmp_path,
    a plain terminal (no bracketed-paste escapes from readline)."""
    inputrc = tmp_path / "inputrc"
    inputrc.write_text("set enable-bracketed-paste off\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DUMBKV_", "REDISCLI_"))}
    env.update(HOME=str(tmp_path), DUMBKV_CLI_HISTFILE=str(tmp_path / "history"),
               TERM="xterm", INPUTRC=str(inputrc))
    env.update(extra)
    return env


def dumbkv_cli(server: ServerProcess, tmp_path: Path, *args: str, stdin: bytes = b"",
               port: int | None = None) -> subprocess.CompletedProcess[bytes]:
    """``dumbkv cli -p PORT args...`` with pipes for stdin and stdout (so not a terminal)."""
    cmd = [sys.executable, "-m", "dumbkv", "cli", "-p", str(port or server.port), *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=TIMEOUT,
                          env=shell_env(tmp_path))


def redis_cli(server: ServerProcess, tmp_path: Path, *args: str,
              stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The real redis-cli, the same way."""
    tool = require_tool("redis-cli", REDIS_CLI_HINT)
    return subprocess.run([tool, "-p", str(server.port), *args], input=stdin,
                          capture_output=True, timeout=TIMEOUT, env=shell_env(tmp_path))


@pytest.fixture
def spawn(server: ServerProcess, tmp_path: Path) -> Iterator[type[pexpect.spawn]]:
    """Start ``dumbkv cli`` on a pseudo-terminal; every one started is ended after the test."""
    started: list[pexpect.spawn] = []

    class Shell(pexpect.spawn):  # type: ignore[misc]
        def __init__(self, *args: str, **env: str) -> None:
            argv = ["-m", "dumbkv", "cli", *(args or ("-p", str(server.port)))]
            super().__init__(sys.executable, argv, env=shell_env(tmp_path, **env),
                             timeout=TIMEOUT, dimensions=(24, 200))
            started.append(self)

    yield Shell
    for shell in started:
        if shell.isalive():
            shell.terminate(force=True)
        shell.close()


def prompt(server: ServerProcess, db: int = 0) -> str:
    return f"127.0.0.1:{server.port}" + (f"[{db}]" if db else "") + "> "


def expect_exact_line(shell: pexpect.spawn, text: str) -> None:
    """The next output line (after the echoed command) is exactly ``text``."""
    shell.expect_exact("\r\n")  # end of the echoed command line
    shell.expect_exact(text + "\r\n")
    assert shell.before == b"", f"unexpected output before {text!r}: {shell.before!r}"


def typed(shell: pexpect.spawn, server: ServerProcess, line: str, *reply: str,
          db: int = 0) -> None:
    """Type ``line`` at the prompt; the reply is exactly the ``reply`` lines, then a prompt."""
    shell.sendline(line)
    shell.expect_exact("\r\n")
    for text in reply:
        shell.expect_exact(text + "\r\n")
        assert shell.before == b"", f"unexpected output before {text!r}: {shell.before!r}"
    shell.expect_exact(prompt(server, db))
    assert shell.before == b""


def free_port() -> int:
    """A loopback port with nobody listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# =========================================================================== interactive
def test_prompt_replies_and_select(server: ServerProcess, spawn: type[pexpect.spawn]) -> None:
    shell = spawn()
    shell.expect_exact(prompt(server))
    typed(shell, server, "SET k v", "OK")
    typed(shell, server, "GET k", '"v"')
    typed(shell, server, "GET missing", "(nil)")
    typed(shell, server, "INCR n", "(integer) 1")
    typed(shell, server, "MGET k missing n", '1) "v"', "2) (nil)", '3) "1"')
    typed(shell, server, "FOO bar",
          "(error) ERR unknown command 'FOO', with args beginning with: 'bar' ")
    typed(shell, server, "SELECT 3", "OK", db=3)
    typed(shell, server, "GET k", "(nil)", db=3)
    typed(shell, server, "SELECT 99", "(error) ERR DB index is out of range", db=3)
    typed(shell, server, "SELECT 0", "OK")
    typed(shell, server, "   ")
    shell.sendline("quit")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0


def test_exit_and_end_of_input_leave_the_shell(server: ServerProcess,
                                               spawn: type[pexpect.spawn]) -> None:
    shell = spawn()
    shell.expect_exact(prompt(server))
    shell.sendline("EXIT")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0
    shell = spawn()
    shell.expect_exact(prompt(server))
    shell.sendeof()
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0


def test_quoting_is_the_servers_inline_quoting(server: ServerProcess,
                                               spawn: type[pexpect.spawn]) -> None:
    shell = spawn()
    shell.expect_exact(prompt(server))
    typed(shell, server, r'SET "key with spaces" "v a\x00l\x41\n\"q\" \\ \t"', "OK")
    typed(shell, server, r"SET 'it\'s' 'raw \x41 \n'", "OK")
    typed(shell, server, 'SET "" "empty key"', "OK")
    typed(shell, server, 'GET "unbalanced', "Invalid argument(s)")
    typed(shell, server, 'GET "a"b', "Invalid argument(s)")
    typed(shell, server, r'GET "key with spaces"', r'"v a\x00lA\n\"q\" \\ \t"')
    raw = RawClient(server.address)
    try:
        assert call(raw, "GET", b"key with spaces") == b'v a\x00lA\n"q" \\ \t'
        assert call(raw, "GET", b"it's") == b"raw \\x41 \\n"
        assert call(raw, "GET", b"") == b"empty key"
        assert call(raw, "EXISTS", b'"unbalanced', b"unbalanced", b"a") == 0
    finally:
        raw.close()


def test_history_recalls_and_persists_without_passwords(
    server: ServerProcess, spawn: type[pexpect.spawn], tmp_path: Path
) -> None:
    history = tmp_path / "history"
    shell = spawn()
    shell.expect_exact(prompt(server))
    typed(shell, server, "INCR counter", "(integer) 1")
    shell.send(UP + "\r")  # up-arrow recalls INCR counter; Enter runs it again
    shell.expect_exact("(integer) 2\r\n")
    shell.expect_exact(prompt(server))
    typed(shell, server, "AUTH s3cret-pass",
          "(error) ERR AUTH <password> called without any password configured for the "
          "default user. Are you sure your configuration is correct?")
    shell.sendline("quit")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0
    assert history.read_text().splitlines() == ["INCR counter", "INCR counter", "quit"]
    assert history.stat().st_mode & 0o077 == 0

    shell = spawn()  # a new shell reads the file: up-arrow twice (past quit) recalls INCR
    shell.expect_exact(prompt(server))
    shell.send(UP + UP + "\r")
    shell.expect_exact("(integer) 3\r\n")
    shell.expect_exact(prompt(server))
    shell.sendline("quit")
    shell.expect(pexpect.EOF)


def test_history_file_defaults_to_home(server: ServerProcess, spawn: type[pexpect.spawn],
                                       tmp_path: Path) -> None:
    shell = spawn("-p", str(server.port), DUMBKV_CLI_HISTFILE="")
    shell.expect_exact(prompt(server))
    typed(shell, server, "PING", "PONG")
    shell.sendline("quit")
    shell.expect(pexpect.EOF)
    assert not (tmp_path / ".dumbkv_history").exists()  # empty value: no history
    env = {k: v for k, v in shell_env(tmp_path).items() if k != "DUMBKV_CLI_HISTFILE"}
    child = pexpect.spawn(sys.executable, ["-m", "dumbkv", "cli", "-p", str(server.port)],
                          env=env, timeout=TIMEOUT)
    try:
        child.expect_exact(prompt(server))
        child.sendline("PING")
        child.expect_exact("PONG\r\n")
        child.sendline("quit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert (tmp_path / ".dumbkv_history").read_text().splitlines() == ["PING", "quit"]


def test_not_connected_prompt_then_reconnects(
    server: ServerProcess, spawn: type[pexpect.spawn]
) -> None:
    port = free_port()
    shell = spawn("-p", str(port))
    shell.expect_exact(f"Could not connect to DumbKV at 127.0.0.1:{port}: Connection refused")
    shell.expect_exact("not connected> ")
    shell.sendline("PING")
    shell.expect_exact(f"Could not connect to DumbKV at 127.0.0.1:{port}: Connection refused")
    shell.expect_exact("not connected> ")
    shell.sendline("quit")
    shell.expect(pexpect.EOF)
    shell.close()
    assert shell.exitstatus == 0


# =========================================================================== one-shot
ONE_SHOT = [
    ["SET", "plain", "value"],
    ["GET", "plain"],
    ["GET", "binary"],
    ["GET", "missing"],
    ["INCRBY", "counter", "0"],
    ["MGET", *[f"k{i}" for i in range(12)]],
    ["MGET", "nested"],
    ["EXISTS", "plain", "missing"],
    ["TTL", "plain"],
    ["ECHO", ""],
    ["PING"],
    ["FOO", "bar"],
    ["INCR", "plain"],
    ["SET"],
    ["SELECT", "1"],
    ["DBSIZE"],
]


def seed(server: ServerProcess) -> None:
    raw = RawClient(server.address)
    try:
        assert call(raw, "SET", "binary", b'a\x00b\xff\xc3\xa9 "q" \\ \r\n\t\x07\x08') == "OK"
        assert call(raw, "SET", "counter", "-41") == "OK"
        for i in range(0, 12, 2):
            assert call(raw, "SET", f"k{i}", f"value {i}") == "OK"
    finally:
        raw.close()


@pytest.mark.parametrize("mode", [[], ["--raw"], ["--no-raw"]], ids=["default", "raw", "no-raw"])
def test_one_shot_prints_the_same_bytes_as_redis_cli(server: ServerProcess, tmp_path: Path,
                                                     mode: list[str]) -> None:
    seed(server)
    for argv in ONE_SHOT:
        expected = redis_cli(server, tmp_path, *mode, *argv)
        ours = dumbkv_cli(server, tmp_path, *mode, *argv)
        assert (ours.stdout, ours.returncode) == (expected.stdout, expected.returncode), argv
        assert ours.stderr == b"", argv
    raw = RawClient(server.address)
    try:
        assert call(raw, "GET", "plain") == b"value"
    finally:
        raw.close()


def test_one_shot_output_mode_follows_stdout(server: ServerProcess, tmp_path: Path) -> None:
    seed(server)
    piped = dumbkv_cli(server, tmp_path, "MGET", "k0", "missing")
    assert piped.stdout == b"value 0\n\n"
    pretty = dumbkv_cli(server, tmp_path, "--no-raw", "MGET", "k0", "missing")
    assert pretty.stdout == b'1) "value 0"\n2) (nil)\n'
    last_wins = dumbkv_cli(server, tmp_path, "--no-raw", "--raw", "GET", "k0")
    assert last_wins.stdout == b"value 0\n"


def test_one_shot_on_a_terminal_is_pretty(server: ServerProcess, tmp_path: Path) -> None:
    seed(server)
    out, status = pexpect.run(
        f"{sys.executable} -m dumbkv cli -p {server.port} GET binary", env=shell_env(tmp_path),
        timeout=TIMEOUT, withexitstatus=True)
    assert out == b'"a\\x00b\\xff\\xc3\\xa9 \\"q\\" \\\\ \\r\\n\\t\\a\\b"\r\n'
    assert status == 0


def test_error_reply_exit_code_with_e(server: ServerProcess, tmp_path: Path) -> None:
    plain = dumbkv_cli(server, tmp_path, "FOO")
    assert plain.returncode == 0
    assert plain.stdout == b"ERR unknown command 'FOO', with args beginning with: \n\n"
    for mode in ("--raw", "--no-raw"):
        strict = dumbkv_cli(server, tmp_path, mode, "-e", "FOO")
        assert strict.returncode == 1
        assert strict.stdout == b""
        assert strict.stderr == b"ERR unknown command 'FOO', with args beginning with: \n"
        expected = redis_cli(server, tmp_path, mode, "-e", "FOO")
        assert (strict.stdout, strict.stderr, strict.returncode) == (
            expected.stdout, expected.stderr, expected.returncode)
    ok = dumbkv_cli(server, tmp_path, "-e", "PING")
    assert (ok.returncode, ok.stdout) == (0, b"PONG\n")


def test_connection_failure_exit_code_and_message(server: ServerProcess, tmp_path: Path) -> None:
    port = free_port()
    message = f"Could not connect to DumbKV at 127.0.0.1:{port}: Connection refused\n".encode()
    for stdin in (b"", b"PING\n"):
        args = ("PING",) if not stdin else ()
        result = dumbkv_cli(server, tmp_path, *args, stdin=stdin, port=port)
        assert result.returncode == 1
        assert result.stderr == message
        assert result.stdout == b""


def test_bad_port_or_host_is_a_clear_message(server: ServerProcess, tmp_path: Path) -> None:
    result = dumbkv_cli(server, tmp_path, "PING", port=102525)
    assert result.returncode == 2
    assert b"102525 is not a port (0-65535)" in result.stderr
    cmd = [sys.executable, "-m", "dumbkv", "cli", "-h", "a..b", "-p", str(server.port), "PING"]
    result = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT, env=shell_env(tmp_path))
    assert result.returncode == 1
    assert result.stderr == f"Could not connect to DumbKV at a..b:{server.port}: invalid " \
                            "address\n".encode()


def test_auth_refused_by_a_server_without_password_is_labelled_auth(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The refusal is an -ERR (no password is configured), not -WRONGPASS: still AUTH's."""
    result = dumbkv_cli(server, tmp_path, "--no-auth-warning", "-a", "secret", "PING")
    assert result.stderr.startswith(b"AUTH failed: ERR AUTH <password> called without any "
                                    b"password configured")


def test_db_password_and_url(server_factory: type[ServerProcess], tmp_path: Path) -> None:
    server = server_factory(tmp_path, "--requirepass", "pw secret").start()
    refused = dumbkv_cli(server, tmp_path, "PING")
    assert refused.stdout == b"NOAUTH Authentication required.\n\n"
    wrong = dumbkv_cli(server, tmp_path, "-a", "nope", "PING")
    assert wrong.returncode == 1
    assert b"AUTH failed: WRONGPASS" in wrong.stderr
    assert b"nope" not in wrong.stderr
    done = dumbkv_cli(server, tmp_path, "-a", "pw secret", "-n", "2", "SET", "a", "in two")
    assert (done.returncode, done.stdout) == (0, b"OK\n")
    assert done.stderr.startswith(b"Warning: Using a password with '-a'")
    quiet = dumbkv_cli(server, tmp_path, "--no-auth-warning", "-a", "pw secret", "-n", "2",
                       "GET", "a")
    assert (quiet.stdout, quiet.stderr) == (b"in two\n", b"")
    url = dumbkv_cli(server, tmp_path, "--no-auth-warning", "-u",
                     f"dumbkv://:pw%20secret@127.0.0.1:{server.port}/2", "GET", "a")
    assert url.stdout == b"in two\n"
    env_auth = subprocess.run(
        [sys.executable, "-m", "dumbkv", "cli", "-p", str(server.port), "-n", "3", "SET", "b",
         "x"], capture_output=True, timeout=TIMEOUT,
        env=shell_env(tmp_path, DUMBKV_CLI_AUTH="pw secret"))
    assert (env_auth.returncode, env_auth.stdout, env_auth.stderr) == (0, b"OK\n", b"")
    # As redis-cli: a password given with -a or in the URL beats the environment's.
    for given in (["-a", "pw secret"], ["-u", f"dumbkv://:pw%20secret@127.0.0.1:{server.port}"]):
        env_wrong = subprocess.run(
            [sys.executable, "-m", "dumbkv", "cli", "-p", str(server.port), "--no-auth-warning",
             *given, "-n", "3", "GET", "b"], capture_output=True, timeout=TIMEOUT,
            env=shell_env(tmp_path, DUMBKV_CLI_AUTH="not it"))
        assert (env_wrong.returncode, env_wrong.stdout, env_wrong.stderr) == (0, b"x\n", b"")
    bad_db = dumbkv_cli(server, tmp_path, "--no-auth-warning", "-a", "pw secret", "-n", "99",
                        "PING")
    assert (bad_db.returncode, bad_db.stdout) == (1, b"")
    assert bad_db.stderr == b"SELECT 99 failed: ERR DB index is out of range\n"
    bad_url = dumbkv_cli(server, tmp_path, "-u", "redis://nowhere", "PING")
    assert bad_url.returncode == 1
    assert bad_url.stderr.startswith(b"Invalid URL: ")
    raw = RawClient(server.address)
    try:
        assert call(raw, "AUTH", "pw secret") == "OK"
        assert call(raw, "SELECT", 2) == "OK"
        assert call(raw, "GET", "a") == b"in two"
        assert call(raw, "SELECT", 3) == "OK"
        assert call(raw, "GET", "b") == b"x"
    finally:
        raw.close()


def test_help_is_double_dash_and_dash_h_is_the_host(server: ServerProcess,
                                                    tmp_path: Path) -> None:
    helped = subprocess.run([sys.executable, "-m", "dumbkv", "cli", "--help"],
                            capture_output=True, timeout=TIMEOUT, env=shell_env(tmp_path))
    assert helped.returncode == 0
    assert re.search(rb"-h HOST", helped.stdout)
    via_host = dumbkv_cli(server, tmp_path, "-h", "127.0.0.1", "ECHO", "-h")
    assert via_host.stdout == b"-h\n"


# =========================================================================== pipe
SCRIPT = b"""FLUSHALL
SET a "x y\\x00z"
GET a
GET missing

\x20\t
INCR n
MGET a missing n
GET "unbalanced
FOO
SELECT 2
GET a
quit
SET after quit
"""


@pytest.mark.parametrize("mode", [[], ["--no-raw"]], ids=["default", "no-raw"])
def test_pipe_mode_matches_redis_cli(server: ServerProcess, tmp_path: Path,
                                     mode: list[str]) -> None:
    expected = redis_cli(server, tmp_path, *mode, stdin=SCRIPT)
    ours = dumbkv_cli(server, tmp_path, *mode, stdin=SCRIPT)
    assert ours.stdout == expected.stdout
    assert (ours.returncode, expected.returncode) == (0, 0)
    assert b"Invalid argument(s)\n" in ours.stdout
    raw = RawClient(server.address)
    try:
        assert call(raw, "GET", "a") == b"x y\x00z"
        assert call(raw, "EXISTS", "after") == 0
    finally:
        raw.close()
