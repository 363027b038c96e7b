"""Which of DumbKV's modules run compiled, and a guard for a source checkout.

``setup.py`` compiles the request path with mypyc when a C compiler is at hand; each compiled
module is a C extension beside its ``.py`` file, and Python imports it in place of the source.
A build that leaves them in ``src/`` (``make``) also writes ``_compiled_sources.json``: the
SHA-256 of each source as it was compiled. If a source has changed since, its extension would
quietly run the old code, so importing DumbKV fails and says how to rebuild. Installed
packages carry no such file and are not checked.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
from pathlib import Path

__all__ = ["check_fresh", "compiled_modules", "describe", "request_path_compiled"]

_PACKAGE = Path(__file__).resolve().parent
MANIFEST = "_compiled_sources.json"
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled_modules(names: list[str]) -> list[str]:
    """Those of the modules ``names`` (``dumbkv.server``, ...) that import as C extensions."""
    compiled = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(_SUFFIXES):
            compiled.append(name)
    return compiled


def request_path_compiled() -> bool:
    """Whether the request path runs compiled (its entry, ``dumbkv.server``, stands for all:
    setup.py builds them all or none)."""
    return bool(compiled_modules(["dumbkv.server"]))


def describe() -> str:
    """``compiled`` or ``plain Python``: how the request path runs in this process."""
    return "compiled" if request_path_compiled() else "plain Python"


def check_fresh(package: Path = _PACKAGE) -> None:
    """Refuse to run an extension whose source changed after it was compiled."""
    try:
        digests: dict[str, str] = json.loads((package / MANIFEST).read_text())
    except FileNotFoundError:
        return  # nothing compiled in place, or an installed package
    except ValueError:
        digests = {}  # unreadable: every extension is suspect
    for extension in package.rglob("*.so"):
        name = extension.name
        stem = next(name[: -len(s)] for s in (*_SUFFIXES, ".so") if name.endswith(s))
        source = extension.with_name(stem + ".py")
        if not source.is_file():
            continue
        parts = [*extension.parent.relative_to(package).parts, stem]
        module = ".".join([package.name, *(p for p in parts if p != "__init__")])
        if digests.get(module) != hashlib.sha256(source.read_bytes()).hexdigest():
            raise ImportError(
                f"{source} changed after it was compiled ({extension.name} would run the old "
                "code): compile again with `make`, or delete the compiled modules "
                "(find src -name '*.so' -delete) to run from source"
            )


check_fresh()
