"""Between the stages: each input partition's window totals per series, sent to cx-partials.

The partials are keyed by dimension ("all", "team", "channel", "priority"), so one cx-partials
partition, and so one worker, merges all the partials of a series.
"""

from __future__ import annotations

from typing import Any

import orjson

from .pipeline import Pipeline
from .windows import PartitionWindows, SegmentKey

FULL_REPUBLISH_EVERY = 30
"""Every this many cycles a partition re-sends all its series, not just changed ones."""


def partial_message(windows: PartitionWindows, key: SegmentKey, partition: int) -> bytes:
    """The cx-partials value of one series of one input partition (removed: no state left)."""
    dimension, value = key
    partial = windows.partial(key)
    payload = {
        "dimension": dimension,
        "value": value,
        "source_partition": partition,
        "removed": partial is None,
        **(partial or {}),
    }
    return orjson.dumps(payload)


class PartialsPublisher:
    def __init__(self, pipeline: Pipeline, topic: Any) -> None:
        self.pipeline = pipeline
        self.topic = topic
        self.cycle = 0

    async def publish(self, now: float) -> None:
        """Move every partition's windows to `now` and send the series that changed."""
        self.cycle += 1
        for partition, windows in list(self.pipeline.partitions.items()):
            windows.advance(now)
            keys = windows.changed
            if self.cycle % FULL_REPUBLISH_EVERY == 0:
                keys = keys | windows.segments.keys()
            windows.changed = set()
            for key in sorted(keys):
                if self.pipeline.partitions.get(partition) is not windows:
                    break  # revoked while we were sending
                value = partial_message(windows, key, partition)
                await self.topic.send(key=key[0].encode(), value=value)
