"""Which of DumbKV's modules run compiled, and a guard for a source checkout.

``setup.py`` compiles the request path with mypyc when a C compiler is at hand; each compiled
module is a C extension beside its ``.py`` file, and Python imports it in place of the source.
In a source checkout (``make`` builds the extensions into ``src/``) an extension older than its
``.py`` would quietly run the old code after an edit: importing DumbKV then fails and says how
to rebuild. Installed packages are not checked (their file times mean nothing).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

__all__ = ["check_fresh", "compiled_modules"]

_PACKAGE = Path(__file__).resolve().parent
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled_modules(names: list[str]) -> list[str]:
    """Those of the modules ``names`` (``dumbkv.server``, ...) that import as C extensions."""
    compiled = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(_SUFFIXES):
            compiled.append(name)
    return compiled


def check_fresh(package: Path = _PACKAGE) -> None:
    """In a source checkout, refuse to run an extension older than its source."""
    if not (package.parent.parent / "setup.py").is_file():
        return  # an installed package
    for suffix in _SUFFIXES:
        for extension in package.rglob("*" + suffix):
            source = extension.with_name(extension.name[: -len(suffix)] + ".py")
            if source.is_file() and source.stat().st_mtime > extension.stat().st_mtime:
                raise ImportError(
                    f"{extension} is older than {source.name}: rebuild the compiled modules "
                    "with `make` (or delete the .so files under src/ to run from source)"
                )


check_fresh()
