"""Between the stages: each input partition's window totals per series, sent to cx-partials.

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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .pipeline import Pipeline
from .windows import DIMENSIONS, CombinedWindows, SegmentKey

FULL_REPUBLISH_EVERY = 60
"""Every this many cycles (15 s, unless cycles are skipped) a partition re-sends all its series,
not just changed ones."""

PUBLISH_SHARE = 0.1
"""The most of the worker's time that building partials may take. At a steady rate a cycle
takes milliseconds; under a backlog every series changes every cycle, and cycles are then
skipped rather than slowing the ingest. Merging them costs more again: in a profile of a
backlog at a fifth, the merging side's parsing of partials alone took 5% of the worker."""


def partial(windows: CombinedWindows, key: SegmentKey, partition: int) -> dict[str, Any]:
    """The partial of one series of one input partition (removed: no state left)."""
    dimension, value = key
    totals = windows.partial(key)
    return {
        "dimension": dimension,
        "value": value,
        "source_partition": partition,
        "removed": totals is None,
        **(totals or {}),
    }


@dataclass(frozen=True, slots=True)
class Complete:
    """A full republish's word: `values` are all the series of `dimension` that
    `source_partition` has."""

    dimension: str
    source_partition: int
    values: frozenset[str]


@dataclass(slots=True)
class Carried:
    """What one cx-partials message carries."""

    partials: list[dict[str, Any]]
    complete: Complete | None = None


def carried_by(message: bytes) -> Carried:
    """A cx-partials message read: {"partials": [...], "complete": {...}} (complete only in a
    full republish), or (as written before they were grouped, and still in the topic after an
    upgrade) a single partial."""
    payload = orjson.loads(message)
    partials = payload.get("partials", [payload])
    complete = payload.get("complete")
    if complete is None:
        return Carried(partials)
    values = frozenset(item["value"] for item in partials if not item["removed"])
    return Carried(partials, Complete(complete["dimension"], complete["source_partition"], values))


def newest_partials(messages: Sequence[bytes]) -> list[Carried]:
    """What each of a run of cx-partials messages carries, less the partials a later message of
    the run carries again: a partial is a series' whole totals, so only the newest counts. A
    merging stage that fell behind catches up by applying a fraction of what it was sent. (A
    message's `complete` still names every series it carried.)"""
    carried = [carried_by(message) for message in messages]
    seen: set[tuple[str, str, int]] = set()
    for message in reversed(carried):
        newest = []
        for item in message.partials:
            series = (item["dimension"], item["value"], item["source_partition"])
            if series not in seen:
                seen.add(series)
                newest.append(item)
        message.partials = newest
    return carried


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
            keys = windows.take_changed()
            complete = self.cycle % FULL_REPUBLISH_EVERY == 0
            if complete:
                keys |= windows.series_keys()
            messages: Messages = []
            for dimension, group in _by_dimension(keys, every_dimension=complete):
                payload: dict[str, Any] = {
                    "partials": [partial(windows, key, partition) for key in group]
                }
                if complete:
                    payload["complete"] = {"dimension": dimension, "source_partition": partition}
                messages.append((dimension.encode(), orjson.dumps(payload)))
            busy += self.clock() - started
            if messages and self.pipeline.partitions.get(partition) is windows:
                await self.send(partition, messages)  # (unless revoked meanwhile)
        self.resume_at = self.clock() + busy * (1 / PUBLISH_SHARE - 1)


def _by_dimension(
    keys: set[SegmentKey], every_dimension: bool
) -> Iterator[tuple[str, list[SegmentKey]]]:
    """The keys of each dimension, in order; with `every_dimension`, dimensions without any."""
    for dimension in DIMENSIONS:
        group = sorted(key for key in keys if key[0] == dimension)
        if group or every_dimension:
            yield dimension, group
