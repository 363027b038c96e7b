"""The one table from an error reply's prefix to the exception class the client raises."""

from __future__ import annotations

from ..errors import AuthError, ClientError, CommandError, DumbKVError, ServerError
from ..resp import ErrorReply

__all__ = ["ERROR_CLASSES", "error_from_reply"]

#: Error reply prefix -> class. Any prefix not listed is a ``ClientError``: every error reply
#: but ``-SERVERERR`` is the client's (protocol.md, "How replies are classified").
ERROR_CLASSES: dict[str, type[DumbKVError]] = {
    "ERR": CommandError,
    "NOPROTO": CommandError,
    "NOAUTH": AuthError,
    "WRONGPASS": AuthError,
    "SERVERERR": ServerError,
}


def error_from_reply(reply: ErrorReply) -> DumbKVError:
    """The exception for an error reply: its class from ``ERROR_CLASSES``, ``prefix`` the
    reply's prefix and ``message`` the rest (``str(error)`` is the message)."""
    prefix = reply.prefix
    message = reply[len(prefix) + 1 :]
    cls = ERROR_CLASSES.get(prefix, ClientError)
    return cls(message, prefix=prefix)
