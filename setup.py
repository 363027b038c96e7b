"""Build DumbKV, with its request path compiled to C by mypyc when a C compiler is at hand.

Everything else about the package is in pyproject.toml. The modules in ``COMPILED`` are plain,
fully typed Python; mypyc turns them into C extensions (one small extension per module, and one
shared library with all their code) that are imported in place of the ``.py`` files: about
1.25x the GETs per second on 2 cores (bench/README.md).

All or nothing: if any step fails (no compiler, a type error, a compiler warning, which mypyc
turns into an error), or with ``DUMBKV_COMPILE=0``, no extension is built or kept, also none
left in ``src/`` by an earlier build, and the same modules run as plain Python. The build then
warns and goes on. A successful build writes ``src/dumbkv/_compiled_sources.json``: the SHA-256
of each source as it was compiled, so that a source checkout refuses to run an extension whose
source has changed since (``dumbkv/_compiled.py``).

``make`` builds through ``pip install -e .``, which puts the extensions beside their sources.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
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
#: Written after a successful build: {module name: SHA-256 of the source compiled}.
MANIFEST = ROOT / "src" / "dumbkv" / "_compiled_sources.json"


def module_name(path: str) -> str:
    """``src/dumbkv/commands/__init__.py`` -> ``dumbkv.commands``."""
    return path.removeprefix("src/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def _digests() -> dict[str, str]:
    return {module_name(p): hashlib.sha256((ROOT / p).read_bytes()).hexdigest() for p in COMPILED}


def _remove_extensions() -> None:
    """Delete every extension of ``COMPILED`` and the shared library in ``src/``, with the
    manifest: what an earlier build left must not be imported in place of the sources."""
    src = ROOT / "src"
    doomed = [*src.glob("*__mypyc*"), MANIFEST]
    for path in COMPILED:
        source = ROOT / path
        stem = "__init__" if source.name == "__init__.py" else source.stem
        doomed += [p for p in source.parent.glob(stem + ".*") if p.suffix in (".so", ".pyd")]
    for path in doomed:
        path.unlink(missing_ok=True)


def _skipped(exc: BaseException) -> None:
    _remove_extensions()
    print(f"WARNING: dumbkv: compiled modules not built ({type(exc).__name__}: {exc}); "
          "the pure Python modules are used instead", file=sys.stderr)


class AllOrNothingBuildExt(build_ext):
    """A failed C build leaves no extension at all (a module's small extension without the
    shared library would not import), neither in the wheel nor in ``src/``."""

    def run(self) -> None:
        if not self.extensions:
            return
        try:
            super().run()
        except Exception as exc:  # no compiler, no Python headers, a warning turned error...
            for ext in self.extensions:  # the wheel's copies; _skipped clears src/
                Path(self.build_lib, self.get_ext_filename(ext.name)).unlink(missing_ok=True)
            self.extensions = []
            _skipped(exc)
            return
        if _DIGESTS:
            MANIFEST.write_text(json.dumps(_DIGESTS, indent=1, sort_keys=True) + "\n")


def _ext_modules() -> list[object]:
    if os.environ.get("DUMBKV_COMPILE", "1") == "0":
        _remove_extensions()
        return []
    os.chdir(ROOT)
    try:
        from mypyc.build import mypycify

        digests = _digests()  # before mypyc reads them: a later edit shows as a change
        # An isolated build has only the typed dependencies (pyproject's build requires): a
        # "type: ignore" that an untyped one makes unneeded is no error here.
        modules = list(mypycify(["--config-file", "pyproject.toml", "--no-warn-unused-ignores",
                                 *COMPILED]))
    except (Exception, SystemExit) as exc:  # mypyc missing, a type error, a mypyc crash
        _skipped(exc)
        return []
    _DIGESTS.update(digests)
    return modules


_DIGESTS: dict[str, str] = {}
setup(ext_modules=_ext_modules(), cmdclass={"build_ext": AllOrNothingBuildExt})
