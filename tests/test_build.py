"""The compiled request path (setup.py): in use where it was built, optional where it cannot
be, and never stale in a source checkout."""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RawClient, call, environ_without_settings, unavailable

from dumbkv._compiled import check_fresh, compiled_modules, request_path_compiled

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
    for name in names:  # and they load (with the shared library that holds their code)
        assert str(importlib.import_module(name).__file__).endswith(SUFFIX), name


def _copy_project(tmp_path: Path) -> Path:
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns(
        "*.so", "__pycache__", "*.egg-info", "_compiled_sources.json"))
    return tmp_path


def _build(project: Path, cc: str) -> subprocess.CompletedProcess[str]:
    env = environ_without_settings()
    env["CC"] = cc
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=project, env=env,
        capture_output=True, text=True, timeout=300,
    )


def _run_server_module(project: Path) -> tuple[str, str]:
    env = environ_without_settings()
    env["PYTHONPATH"] = str(project / "src")
    ran = subprocess.run(
        [sys.executable, "-c", "import dumbkv.server, dumbkv.resp as r; "
         "print(dumbkv.server.__file__); print(r.encode([b'a', 1]))"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    origin, reply = ran.stdout.splitlines()
    return origin, reply


def test_a_build_without_a_c_compiler_falls_back_to_python(tmp_path: Path) -> None:
    """No working C compiler: the build warns, exits 0, removes what an earlier build left in
    src/ (it would be imported in place of the sources), and the pure Python modules run."""
    project = _copy_project(tmp_path)
    package = project / "src" / "dumbkv"
    leftovers = [package / ("server" + SUFFIX), project / "src" / ("abc__mypyc" + SUFFIX),
                 package / "_compiled_sources.json"]
    for path in leftovers:
        path.write_bytes(b"")
    built = _build(project, "/bin/false")
    assert built.returncode == 0, built.stderr[-2000:]
    assert "compiled modules not built" in built.stderr
    assert not list((project / "src").rglob("*.so"))
    assert not any(path.exists() for path in leftovers)
    origin, reply = _run_server_module(project)
    assert origin == str(package / "server.py")
    assert reply == repr(b"*2\r\n$1\r\na\r\n:1\r\n")


def test_a_build_that_fails_halfway_leaves_no_extension(tmp_path: Path) -> None:
    """The shared library (all the compiled code) fails to build while each module's small
    extension builds: none may be left, in src/ or in the wheel's build dir, since those would
    not import without the library."""
    project = _copy_project(tmp_path)
    cc = tmp_path / "cc.sh"
    cc.write_text('#!/bin/sh\ncase "$*" in *__native_*) exit 1;; esac\nexec gcc "$@"\n')
    cc.chmod(0o755)
    built = _build(project, str(cc))
    assert built.returncode == 0, built.stderr[-2000:]
    assert "compiled modules not built" in built.stderr
    assert not list((project / "src").rglob("*.so"))
    assert not list((project / "build").rglob("*.so"))
    assert not (project / "src" / "dumbkv" / "_compiled_sources.json").exists()
    origin, _ = _run_server_module(project)
    assert origin.endswith("server.py")


def _checkout(tmp_path: Path, digest_of: str = "") -> Path:
    """A package with one compiled module ``sub.mod`` and its manifest entry."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "sub" / "mod.py").write_text("x = 1\n")
    (package / "sub" / ("mod" + SUFFIX)).write_bytes(b"")
    text = digest_of or (package / "sub" / "mod.py").read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    (package / "_compiled_sources.json").write_text(json.dumps({"pkg.sub.mod": digest}))
    return package


def test_an_extension_whose_source_changed_fails_the_import(tmp_path: Path) -> None:
    package = _checkout(tmp_path, digest_of="x = 0\n")
    with pytest.raises(ImportError, match=r"mod\.py changed after it was compiled .* `make`"):
        check_fresh(package)


def test_an_extension_missing_from_the_manifest_fails_the_import(tmp_path: Path) -> None:
    package = _checkout(tmp_path)
    (package / ("other" + SUFFIX)).write_bytes(b"")
    (package / "other.py").write_text("")
    with pytest.raises(ImportError, match=r"other\.py changed after it was compiled"):
        check_fresh(package)


def test_fresh_extensions_and_installed_packages_pass(tmp_path: Path) -> None:
    package = _checkout(tmp_path)
    check_fresh(package)  # compiled from the source as it is
    (package / "sub" / ("mod" + SUFFIX)).unlink()
    (package / "sub" / "mod.py").write_text("x = 2\n")
    check_fresh(package)  # changed, but its extension is gone: the source runs
    (package / "sub" / ("mod" + SUFFIX)).write_bytes(b"")
    (package / "_compiled_sources.json").unlink()
    check_fresh(package)  # no manifest: an installed package


def test_info_says_whether_the_request_path_is_compiled(raw: RawClient) -> None:
    """The server (a child process importing the same src/) reports what this process sees;
    bench/compare.py prints it beside its figures."""
    reply = call(raw, "INFO", "server")
    assert isinstance(reply, bytes)
    expected = "1" if request_path_compiled() else "0"
    assert f"\r\ndumbkv_compiled:{expected}\r\n" in reply.decode()
