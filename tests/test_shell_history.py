"""Which typed lines ``dumbkv cli`` keeps out of its history: every line that carries a
password, read with the server's own quoting (as redis-cli reads it)."""

from __future__ import annotations

import pytest

from dumbkv.shell.repl import is_sensitive


@pytest.mark.parametrize("line", [
    "AUTH s3cret",
    "  auth default s3cret",
    '"auth" s3cret',
    "'AUTH' s3cret",
    '"\\x61uth" s3cret',
    'AUTH "s3cret',           # unbalanced quotes: not sent, still not kept
    '"auth s3cret',
    "acl SETUSER bob >pw",
    '"acl" "setuser" bob >pw',
    "HELLO 3 AUTH default s3cret",
    'hello 3 "auth" default s3cret',
    "MIGRATE h 1 k 0 10 AUTH pw",
    "CONFIG SET requirepass s3cret",
    "config set maxmemory 1 'requirepass' s3cret",
])
def test_lines_with_a_password_are_sensitive(line: str) -> None:
    assert is_sensitive(line)


@pytest.mark.parametrize("line", [
    "", "   ", "GET auth", "SET k auth", "HELLO 3", "CONFIG SET maxmemory 1",
    "CONFIG GET requirepass", '"get" "auth"', "authx pw",
])
def test_other_lines_are_kept(line: str) -> None:
    assert not is_sensitive(line)
