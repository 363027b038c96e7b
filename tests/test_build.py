"""The compiled request path (setup.py): in use where it was built, optional where it cannot
be, and never stale in a source checkout."""

from __future__ import annotations

import ast
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RawClient, call, environ_without_settings, unavailable

from dumbkv._compiled import check_fresh, compiled_modules

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # ".cpython-311-x86_64-linux-gnu.so"


def setup_compiled() -> list[str]:
    """setup.py's COMPILED list, as module names (``dumbkv.server``)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            paths: list[str] = ast.literal_eval(node.value)
            return [p.removeprefix("src/").removesuffix(".py").removesuffix("/__init__")
                    .replace("/", ".") for p in paths]
    raise AssertionError("setup.py has no COMPILED list")


def test_the_request_path_runs_compiled() -> None:
    """`make` builds every module of setup.py's list; a silent fallback to Python would lose
    the speed bench/compare.py measures. Skipped (failed in CI) where nothing was compiled."""
    names = setup_compiled()
    assert "dumbkv.server" in names and "dumbkv.resp" in names
    compiled = compiled_modules(names)
    if not compiled:
        unavailable("the request path is not compiled (no C compiler at install time?); "
                    "run `make test` on a machine with gcc")
    assert compiled == names, f"compiled: {compiled}, expected all of {names}"


def test_a_build_without_a_c_compiler_falls_back_to_python(tmp_path: Path) -> None:
    """No working C compiler: the build warns, exits 0 and leaves the pure Python modules,
    which run."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"))
    env = environ_without_settings()
    env["CC"] = "/bin/false"
    built = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    assert "compiled modules not built" in built.stderr
    assert not list((tmp_path / "src").rglob("*.so"))
    env["PYTHONPATH"] = str(tmp_path / "src")
    ran = subprocess.run(
        [sys.executable, "-c", "import dumbkv.server, dumbkv.resp as r; "
         "print(dumbkv.server.__file__); print(r.encode([b'a', 1]))"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    origin, reply = ran.stdout.splitlines()
    assert origin == str(tmp_path / "src" / "dumbkv" / "server.py")
    assert reply == repr(b"*2\r\n$1\r\na\r\n:1\r\n")


def _checkout(tmp_path: Path) -> Path:
    """A fake source checkout: setup.py beside src/, a module and its extension."""
    (tmp_path / "setup.py").write_text("")
    package = tmp_path / "src" / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text("")
    (package / "sub" / ("mod" + SUFFIX)).write_bytes(b"")
    return package


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_an_extension_older_than_its_source_fails_the_import(tmp_path: Path) -> None:
    package = _checkout(tmp_path)
    _age(package / "sub" / ("mod" + SUFFIX), 10)
    with pytest.raises(ImportError, match=r"older than mod\.py: rebuild .* with `make`"):
        check_fresh(package)


def test_a_fresh_extension_or_an_installed_package_passes(tmp_path: Path) -> None:
    package = _checkout(tmp_path)
    _age(package / "sub" / "mod.py", 10)
    check_fresh(package)  # the extension is newer
    _age(package / "sub" / ("mod" + SUFFIX), 20)
    (tmp_path / "setup.py").unlink()
    check_fresh(package)  # no setup.py: an installed package, whose file times mean nothing


def test_info_says_whether_the_request_path_is_compiled(raw: RawClient) -> None:
    """The server (a child process importing the same src/) reports what this process sees;
    bench/compare.py prints it beside its figures."""
    reply = call(raw, "INFO", "server")
    assert isinstance(reply, bytes)
    expected = "1" if compiled_modules(["dumbkv.server"]) else "0"
    assert f"\r\ndumbkv_compiled:{expected}\r\n" in reply.decode()
