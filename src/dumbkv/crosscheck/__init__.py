"""``dumbkv crosscheck``: one seeded workload against two targets, compared reply by reply.

A target is a store URL (``sqlite:///...``, ``postgresql://...``), for which an in-process DumbKV
server is started on 127.0.0.1 (port 0) in the same event loop, or ``HOST:PORT`` of a running
server on a loopback address. With one target given, the other is a fresh temporary SQLite store.

The workload (``workload(seed, n)``) is a pure function of the seed: ``FLUSHALL``, then random
operations over 50 key names in 4 databases (200 keys), covering every data command with its
options and its errors, binary keys and values, wrong arity and unknown commands. Each operation
goes to both targets over RESP2 and both replies are read before the next operation is sent.
Expiry times are chosen so that no key expires during a run and no ``GT``/``LT`` comparison
depends on timing; positive ``TTL``/``PTTL`` replies compare equal within
``TTL_TOLERANCE_MS``. Nothing else is fuzzed.

Figures, per target, over the N operations:

* failure rate: share of operations answered with an error reply (``-ERR``/``-NOAUTH``/...
  client errors and ``-SERVERERR`` server errors) or with no reply at all (connection dropped or
  timed out; the client reconnects, re-selects its database and goes on);
* server-error rate: ``-SERVERERR`` replies plus operations with no reply.

The check fails (exit code 1) when identical results < 99 % (``MIN_IDENTICAL``) or the
failure rates differ by more than 2 percentage points (``MAX_FAILURE_RATE_DIFF``); an operation
with no reply on either side never counts as identical. Exit code 2: the run could not start.
"""

from __future__ import annotations

from .compare import TTL_TOLERANCE_MS, NoReply, reply_status, same_result, show_reply
from .report import MAX_FAILURE_RATE_DIFF, MIN_IDENTICAL, Difference, Report, TargetStats
from .run import RefusedError, add_arguments, crosscheck, main
from .targets import Target, parse_target
from .workload import DATABASES, EXCLUDED_COMMANDS, KEY_NAMES, Op, show_bytes, workload

__all__ = [
    "DATABASES",
    "EXCLUDED_COMMANDS",
    "KEY_NAMES",
    "MAX_FAILURE_RATE_DIFF",
    "MIN_IDENTICAL",
    "TTL_TOLERANCE_MS",
    "Difference",
    "NoReply",
    "Op",
    "RefusedError",
    "Report",
    "Target",
    "TargetStats",
    "add_arguments",
    "crosscheck",
    "main",
    "parse_target",
    "reply_status",
    "same_result",
    "show_bytes",
    "show_reply",
    "workload",
]
