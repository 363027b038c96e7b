"""Build DumbKV, with its request path compiled to C by mypyc when a C compiler is at hand.

Everything else about the package is in pyproject.toml. The modules in ``COMPILED`` are plain,
fully typed Python; mypyc turns each into a C extension that is imported in place of the
``.py`` file (about 1.25x the GETs per second on 2 cores: see bench/README.md). Without a C
compiler, or with ``DUMBKV_COMPILE=0``, the same modules run as Python: the build warns and goes
on, and nothing else changes.

    python setup.py build_ext --inplace    # what `make` runs: the .so files land in src/
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

#: Every command's path through the server: parse, dispatch, store queue, row cache, reply.
COMPILED = [
    "src/dumbkv/resp.py",
    "src/dumbkv/server.py",
    "src/dumbkv/session.py",
    "src/dumbkv/commands/__init__.py",
    "src/dumbkv/commands/table.py",
    "src/dumbkv/commands/strings.py",
    "src/dumbkv/commands/connection.py",
    "src/dumbkv/commands/server.py",
    "src/dumbkv/store/base.py",
    "src/dumbkv/store/rowcache.py",
    "src/dumbkv/store/sqlite.py",
]


class OptionalBuildExt(build_ext):
    """Compiled modules are a speed-up, not a requirement: a failed C build leaves the pure
    Python modules in use and says so."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, ...
            _skipped(exc)

    def build_extension(self, ext: object) -> None:
        try:
            super().build_extension(ext)  # type: ignore[arg-type]
        except Exception as exc:
            _skipped(exc)


def _skipped(exc: Exception) -> None:
    print(f"WARNING: dumbkv: compiled modules not built ({type(exc).__name__}: {exc}); "
          "the pure Python modules are used instead", file=sys.stderr)


def _ext_modules() -> list[object]:
    if os.environ.get("DUMBKV_COMPILE", "1") == "0":
        return []
    os.chdir(Path(__file__).resolve().parent)
    try:
        from mypyc.build import mypycify

        # An isolated build has only the typed dependencies (pyproject's build requires): a
        # "type: ignore" that an untyped one makes unneeded is no error here.
        return list(mypycify(["--config-file", "pyproject.toml", "--no-warn-unused-ignores",
                              *COMPILED]))
    except (ImportError, SystemExit) as exc:  # mypyc missing, or it found a type error
        _skipped(exc)
        return []


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
