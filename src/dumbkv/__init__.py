"""DumbKV: a Redis-compatible key-value server for SRE training."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
