"""Real Redis tools against the real server subprocess, over real loopback sockets.

redis-py (sync and asyncio, RESP3 as redis-py 8 speaks by default and RESP2), redis-cli and
redis-benchmark from Debian's ``redis-tools``. Every call is bounded by a timeout, so a server
that never answers fails a test instead of hanging it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.retry
from conftest import ServerProcess, require_tool

TOOL_TIMEOUT = 120
SOCKET_TIMEOUT = 10
PROTOCOLS = [pytest.param(None, id="default-resp3"), pytest.param(2, id="resp2")]


def _kwargs(protocol: int | None) -> dict[str, object]:
    return {} if protocol is None else {"protocol": protocol}


def no_retry() -> redis.retry.Retry:
    """For clients expected to fail authentication: redis-py would retry with backoff."""
    return redis.retry.Retry(redis.backoff.NoBackoff(), 0)


def async_no_retry() -> redis.asyncio.retry.Retry:
    return redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0)


def sync_client(server: ServerProcess, protocol: int | None = None, **kw: object) -> redis.Redis:
    return redis.Redis(
        host=server.host, port=server.port, socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT, **_kwargs(protocol), **kw,  # type: ignore[arg-type]
    )


def async_client(
    server: ServerProcess, protocol: int | None = None, **kw: object
) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        host=server.host, port=server.port, socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT, **_kwargs(protocol), **kw,  # type: ignore[arg-type]
    )


# =========================================================================== redis-py, sync
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_string_commands(server: ServerProcess, protocol: int | None) -> None:
    with sync_client(server, protocol) as r:
        assert r.ping() is True
        assert r.set("k", "v1") is True
        assert r.get("k") == b"v1"
        assert r.get("missing") is None
        assert r.incr("n") == 1
        assert r.incr("n") == 2
        assert r.incrby("n", 40) == 42
        assert r.decr("n") == 41
        assert r.mset({"a": "1", "b": b"\x00\xff\r\n"}) is True
        assert r.mget("a", "missing", "b", "n") == [b"1", None, b"\x00\xff\r\n", b"41"]
        assert r.exists("a", "b", "missing", "a") == 3
        assert r.ttl("a") == -1
        assert r.ttl("missing") == -2
        assert r.expire("a", 100) is True
        assert r.expire("missing", 100) is False
        assert 0 < r.ttl("a") <= 100
        assert r.append("s", "hello") == 5
        assert r.append("s", " world") == 11
        assert r.strlen("s") == 11
        assert r.strlen("missing") == 0
        assert r.get("s") == b"hello world"
        assert r.getdel("s") == b"hello world"
        assert r.getdel("s") is None
        assert r.delete("a", "b", "missing") == 2
        assert r.exists("a", "b") == 0
        assert r.set("nx", "1", nx=True) is True
        assert r.set("nx", "2", nx=True) is None
        assert r.get("nx") == b"1"
        with pytest.raises(redis.ResponseError, match="not an integer"):
            r.incr("k")
        assert r.get("k") == b"v1"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_pipeline_keeps_order(server: ServerProcess, protocol: int | None) -> None:
    with sync_client(server, protocol) as r:
        pipe = r.pipeline(transaction=False)
        pipe.set("p", "0")
        for _ in range(50):
            pipe.incr("p")
        pipe.get("p")
        pipe.get("nothing")
        pipe.mget("p", "nothing")
        pipe.delete("p")
        pipe.exists("p")
        results = pipe.execute()
        assert results[0] is True
        assert results[1:51] == list(range(1, 51))
        assert results[51:] == [b"50", None, [b"50", None], 1, 0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_decode_responses(server: ServerProcess, protocol: int | None) -> None:
    with sync_client(server, protocol, decode_responses=True) as r:
        assert r.set("ключ", "значение") is True
        assert r.get("ключ") == "значение"
        assert r.get("missing") is None
        assert r.mget("ключ", "missing") == ["значение", None]
        assert r.client_setname("tester") is True
        assert r.client_getname() == "tester"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_select_db(server: ServerProcess, protocol: int | None) -> None:
    with sync_client(server, protocol, db=3) as r3, sync_client(server, protocol) as r0:
        assert r3.set("where", "three") is True
        assert r0.get("where") is None
        assert r0.set("where", "zero") is True
        assert r3.get("where") == b"three"
        assert r3.dbsize() == 1
        assert r0.dbsize() == 1
        assert r3.set("other", "x") is True
        assert r3.dbsize() == 2
    with sync_client(server, protocol, db=3) as again:
        assert again.get("where") == b"three"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_info_and_client_name(server: ServerProcess, protocol: int | None) -> None:
    with sync_client(server, protocol) as r:
        r.set("one", "1")
        info = r.info()
        assert isinstance(info, dict)
        assert "redis_version" in info
        assert info["db0"]["keys"] == 1
        assert isinstance(r.info("server"), dict)
        assert r.client_getname() is None
        assert r.client_setname("my-conn") is True
        assert r.client_getname() in ("my-conn", b"my-conn")
        assert r.dbsize() == 1


@pytest.fixture
def pw_server(server_factory: type[ServerProcess], tmp_path: Path) -> ServerProcess:
    return server_factory(tmp_path, "--requirepass", "s3cret pw").start()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_redis_py_sync_password(pw_server: ServerProcess, protocol: int | None) -> None:
    with sync_client(pw_server, protocol, password="s3cret pw", db=5) as r:
        assert r.set("guarded", "yes") is True
        assert r.get("guarded") == b"yes"
    for password in ("wrong", None):
        bad = sync_client(pw_server, protocol, password=password, retry=no_retry())
        with bad, pytest.raises(redis.AuthenticationError):
            bad.get("guarded")


# =========================================================================== redis-py, asyncio
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_redis_py_async_commands(server: ServerProcess, protocol: int | None) -> None:
    async with async_client(server, protocol) as r:
        assert await r.ping() is True
        assert await r.set("k", "v") is True
        assert await r.get("k") == b"v"
        assert await r.get("missing") is None
        assert await r.incr("n") == 1
        assert await r.mset({"a": "1", "b": "2"}) is True
        assert await r.mget("a", "missing", "b") == [b"1", None, b"2"]
        assert await r.exists("a", "b", "missing") == 2
        assert await r.expire("a", 50) is True
        assert 0 < await r.ttl("a") <= 50
        assert await r.ttl("b") == -1
        assert await r.append("b", "22") == 3
        assert await r.strlen("b") == 3
        assert await r.getdel("b") == b"222"
        assert await r.delete("a", "b", "k") == 2
        assert await r.dbsize() == 1
        info = await r.info()
        assert isinstance(info, dict) and "redis_version" in info
        assert await r.client_setname("async-conn") is True
        assert await r.client_getname() in ("async-conn", b"async-conn")
        pipe = r.pipeline(transaction=False)
        pipe.set("p", "1").incr("p").incr("p").get("p").get("missing")
        assert await pipe.execute() == [True, 2, 3, b"3", None]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_redis_py_async_db_decode_password(
    pw_server: ServerProcess, protocol: int | None
) -> None:
    async with async_client(
        pw_server, protocol, password="s3cret pw", db=3, decode_responses=True
    ) as r3, async_client(pw_server, protocol, password="s3cret pw") as r0:
        assert await r3.set("x", "три") is True
        assert await r3.get("x") == "три"
        assert await r0.get("x") is None
        assert await r3.get("missing") is None
    async with async_client(pw_server, protocol, password="nope", retry=async_no_retry()) as bad:
        with pytest.raises(redis.AuthenticationError):
            await bad.get("x")


# =========================================================================== redis-cli
@pytest.fixture
def redis_cli() -> str:
    return require_tool("redis-cli", "apt-get install redis-tools")


def run_tool(
    args: list[str], stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        args, input=stdin, stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, timeout=TOOL_TIMEOUT, cwd=cwd, check=False,
    )


def cli(
    path: str, server: ServerProcess, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return run_tool([path, "-h", server.host, "-p", str(server.port), *args], stdin=stdin)


def test_redis_cli_one_shot(redis_cli: str, server: ServerProcess) -> None:
    out = cli(redis_cli, server, "SET", "a", "b")
    assert (out.returncode, out.stdout) == (0, b"OK\n"), out
    assert cli(redis_cli, server, "GET", "a").stdout == b"b\n"
    assert cli(redis_cli, server, "INCR", "c").stdout == b"1\n"
    assert cli(redis_cli, server, "INCR", "c").stdout == b"2\n"
    assert cli(redis_cli, server, "SET", "sp", "with space").stdout == b"OK\n"
    assert cli(redis_cli, server, "GET", "sp").stdout == b"with space\n"
    # stdout is not a tty, so redis-cli prints raw: nil is an empty line.
    assert cli(redis_cli, server, "GET", "missing").stdout == b"\n"
    assert cli(redis_cli, server, "--no-raw", "GET", "missing").stdout == b"(nil)\n"
    assert cli(redis_cli, server, "--no-raw", "GET", "a").stdout == b'"b"\n'
    assert cli(redis_cli, server, "--no-raw", "INCR", "c").stdout == b"(integer) 3\n"
    assert cli(redis_cli, server, "MGET", "a", "missing", "c").stdout == b"b\n\n3\n"
    assert cli(redis_cli, server, "PING").stdout == b"PONG\n"


def test_redis_cli_piped_stdin(redis_cli: str, server: ServerProcess) -> None:
    out = cli(redis_cli, server, stdin=b"SET x 1\nINCR x\nGET x\nGET nothing\nDEL x\nEXISTS x\n")
    assert out.returncode == 0, out
    assert out.stdout == b"OK\n2\n2\n\n1\n0\n"


def test_redis_cli_error_exit_code(redis_cli: str, server: ServerProcess) -> None:
    assert cli(redis_cli, server, "SET", "word", "abc").stdout == b"OK\n"
    plain = cli(redis_cli, server, "INCR", "word")
    assert plain.returncode == 0
    assert b"ERR value is not an integer or out of range" in plain.stdout
    strict = cli(redis_cli, server, "-e", "INCR", "word")
    assert strict.returncode == 1, strict
    assert b"ERR value is not an integer or out of range" in strict.stdout + strict.stderr
    ok = cli(redis_cli, server, "-e", "GET", "word")
    assert (ok.returncode, ok.stdout) == (0, b"abc\n")


def test_redis_cli_password(redis_cli: str, pw_server: ServerProcess) -> None:
    auth = ("-a", "s3cret pw", "--no-auth-warning")
    assert cli(redis_cli, pw_server, *auth, "SET", "a", "1").stdout == b"OK\n"
    assert cli(redis_cli, pw_server, *auth, "GET", "a").stdout == b"1\n"
    anon = cli(redis_cli, pw_server, "GET", "a")
    assert b"NOAUTH" in anon.stdout + anon.stderr
    assert anon.stdout != b"1\n"
    wrong = cli(redis_cli, pw_server, "-a", "wrong", "--no-auth-warning", "-e", "GET", "a")
    assert wrong.returncode == 1
    assert b"NOAUTH" in wrong.stdout + wrong.stderr or b"WRONGPASS" in wrong.stderr


def test_redis_cli_select_db(redis_cli: str, server: ServerProcess) -> None:
    assert cli(redis_cli, server, "-n", "2", "SET", "k", "in-two").stdout == b"OK\n"
    assert cli(redis_cli, server, "GET", "k").stdout == b"\n"
    assert cli(redis_cli, server, "-n", "2", "GET", "k").stdout == b"in-two\n"
    assert cli(redis_cli, server, "-n", "2", "DBSIZE").stdout == b"1\n"
    assert cli(redis_cli, server, "DBSIZE").stdout == b"0\n"
    with sync_client(server, db=2) as r:
        assert r.get("k") == b"in-two"


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def test_redis_cli_pipe_mode(redis_cli: str, server: ServerProcess) -> None:
    n = 1000
    data = b"".join(_resp(b"SET", b"pipe:%d" % i, b"value-%d\r\n\x00" % i) for i in range(n))
    data += b"".join(_resp(b"INCR", b"pipe:counter") for _ in range(100))
    out = cli(redis_cli, server, "--pipe", stdin=data)
    assert out.returncode == 0, out
    assert b"errors: 0, replies: 1100" in out.stdout, out
    with sync_client(server) as r:
        values = r.mget([f"pipe:{i}" for i in range(n)])
        assert values == [b"value-%d\r\n\x00" % i for i in range(n)]
        assert r.get("pipe:counter") == b"100"
    failing = cli(redis_cli, server, "--pipe", stdin=_resp(b"INCR", b"pipe:0") + _resp(b"PING"))
    assert b"errors: 1, replies: 2" in failing.stdout, failing


# =========================================================================== redis-benchmark
_RPS = re.compile(rb"^\s*([A-Z_]+(?: \(10 keys\))?): ([\d.]+) requests per second", re.M)
_EXPECTED_TESTS = {b"PING_INLINE", b"PING_MBULK", b"SET", b"GET", b"INCR", b"MSET (10 keys)"}


@pytest.fixture
def redis_benchmark() -> str:
    return require_tool("redis-benchmark", "apt-get install redis-tools")


def _benchmark(path: str, server: ServerProcess, *extra: str) -> dict[bytes, float]:
    out = run_tool([path, "-h", server.host, "-p", str(server.port),
                    "-t", "ping,set,get,incr,mset", "-n", "2000", "-q", *extra])
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert b"Error from server" not in text
    # -q prints progress lines separated by \r, then the final line of each test.
    rates = {m.group(1): float(m.group(2)) for m in _RPS.finditer(text.replace(b"\r", b"\n"))}
    assert set(rates) == _EXPECTED_TESTS, text
    assert all(rate > 0 for rate in rates.values()), rates
    return rates


def test_redis_benchmark(redis_benchmark: str, server: ServerProcess) -> None:
    _benchmark(redis_benchmark, server)
    with sync_client(server) as r:
        # Without -r every INCR hits the literal key: the count must be exact.
        assert r.get("counter:__rand_int__") == b"2000"
        value = r.get("key:__rand_int__")
        assert value is not None and len(value) == 3


def test_redis_benchmark_random_keys_pipelined(
    redis_benchmark: str, server: ServerProcess
) -> None:
    _benchmark(redis_benchmark, server, "-r", "1000", "-P", "8")
    with sync_client(server) as r:
        counters = r.mget([f"counter:{i:012d}" for i in range(1000)])
        # 2000 INCRs spread over random keys: none lost, none doubled.
        assert sum(int(c) for c in counters if c is not None) == 2000
        assert r.dbsize() > 1
