"""``dumbkv cli``: an interactive shell like redis-cli (one-shot, pipe and interactive modes).

``format`` prints replies as redis-cli does, ``session`` runs one line against a connection,
``repl`` is the interactive loop with its history, ``options`` the flags, ``main`` the modes
(``dumbkv.shell.main.main(args)``, imported on use: it loads the client).
"""

from __future__ import annotations

from .options import add_arguments

__all__ = ["add_arguments"]
