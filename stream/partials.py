"""Between the stages: each input partition's window totals per series, sent to cx-partials
(the messages are the core's, `core/src/partials.rs`).

The partials are keyed by dimension ("all", "team", "channel", "priority"), so one cx-partials
partition, and so one worker, merges all the partials of a series. A message carries every
changed series of one dimension and one input partition: the merging side pays Faust's
per-record cost once for them, not once per series.

Every FULL_REPUBLISH_EVERY cycles a partition sends all its series, one message per dimension
(empty ones too), each marked complete: the merging side then drops the series of that
dimension and partition the message lacks. A series' removal is otherwise sent once, and a
worker stopped between removing a series and sending that would leave it exported for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable

from ._core import partials_messages
from .pipeline import Pipeline

FULL_REPUBLISH_EVERY = 60
"""Every this many cycles (15 s, unless cycles are skipped) a partition re-sends all its series,
not just changed ones."""

PUBLISH_SHARE = 0.1
"""The most of the worker's time that building partials may take. At a steady rate a cycle
takes milliseconds; under a backlog every series changes every cycle, and cycles are then
skipped rather than slowing the ingest. Merging them costs more again: in a profile of a
backlog at a fifth, the merging side's parsing of partials alone took 5% of the worker."""


Messages = list[tuple[bytes, bytes]]
"""cx-partials messages: (key, value)."""

PartialsSink = Callable[[int, Messages], Awaitable[None]]
"""Sends the cx-partials messages of one input partition (at-least-once: one at a time;
exactly-once: in a transaction of that partition's producer)."""


class PartialsPublisher:
    def __init__(
        self, pipeline: Pipeline, send: PartialsSink, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.pipeline = pipeline
        self.send = send
        self.cycle = 0
        self.clock = clock
        """Measures the time spent, and when to resume (not wall-clock: it may step back)."""
        self.resume_at = -math.inf
        """`clock` time before which a cycle is skipped (see PUBLISH_SHARE)."""

    async def publish(self, now: float) -> None:
        """Move every partition's windows to wall-clock `now` and send the series that
        changed."""
        if self.clock() < self.resume_at:
            return
        self.cycle += 1
        busy = 0.0  # seconds spent computing, not waiting for the producer
        for partition, windows in list(self.pipeline.partitions.items()):
            started = self.clock()
            windows.advance(now)
            complete = self.cycle % FULL_REPUBLISH_EVERY == 0
            messages = partials_messages(list(windows.parts.values()), partition, complete)
            busy += self.clock() - started
            if messages and self.pipeline.partitions.get(partition) is windows:
                await self.send(partition, messages)  # (unless revoked meanwhile)
        self.resume_at = self.clock() + busy * (1 / PUBLISH_SHARE - 1)
