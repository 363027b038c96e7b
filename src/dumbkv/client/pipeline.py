"""Pipeline queueing, shared by the sync and asyncio pipelines: the command methods queue
instead of executing, and the replies come back as one list in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

from ..resp import ClientReply
from .commands import Commands, Value
from .convert import Converter
from .core import Request, finish_in_place, first_error

__all__ = ["PipelineBase"]


class PipelineBase(Commands):
    """Queued commands. Every command method queues and returns the pipeline; ``execute()``
    sends the whole queue in one write, reads every reply in order and empties the queue."""

    def __init__(self, decode_responses: bool) -> None:
        self._decode = decode_responses
        self._requests: list[Request] = []

    def _execute(self, converter: Converter, *args: Value) -> Self:
        self._requests.append(Request(args, converter))
        return self

    def __len__(self) -> int:
        """How many commands are queued."""
        return len(self._requests)

    def reset(self) -> None:
        """Drop every queued command."""
        self._requests = []

    def _take(self) -> list[Request]:
        requests, self._requests = self._requests, []
        return requests

    def _results(self, requests: Sequence[Request], replies: Sequence[ClientReply],
                 raise_on_error: bool) -> list[Any]:
        results = finish_in_place(replies, requests, self._decode)
        error = first_error(results)
        if raise_on_error and error is not None:
            raise error
        return results
