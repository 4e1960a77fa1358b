"""Stage 2: merge the partials of every source partition, export them, publish snapshots.

The worker that owns a dimension's cx-partials partition keeps the latest partial of every
source partition in the changelogged `series` table (as JSON); it alone exports those series,
on /metrics and as cx-metrics snapshots. The merging, the page and the snapshots are the
core's (`core/src/merge.rs`, `core/src/export.rs`): here is what Faust needs of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from ._core import Merge
from .exporter import rfc3339
from .revenue import Revenue, account_snapshots

log = logging.getLogger("cx_stream")

Writes = dict[int, dict[bytes, bytes | None]]
"""The series table's writes of a run of messages, per cx-partials partition (None: delete)."""


class Series:
    def __init__(
        self,
        cap: int,
        window_names: Sequence[str],
        owned_partitions: Callable[[], set[int]],
        business_hours: bool = False,
    ) -> None:
        self.merge = Merge(cap, list(window_names), business_hours)
        self.owned_partitions = owned_partitions

    def apply(self, messages: Sequence[tuple[bytes, int]]) -> Writes:
        """Apply a run of cx-partials messages, each with the cx-partials partition it came on;
        returns the series table's writes. Only the newest partial of each series among them
        counts: a merging stage that fell behind catches up by applying a fraction of what it
        was sent. A message that cannot be read is logged and skipped (only workers write
        cx-partials, so it is a bug or an upgrade, and stopping would not mend it)."""
        writes, unreadable = self.merge.apply(list(messages))
        for index, reason in unreadable:
            log.error(
                "unreadable cx-partials message skipped",
                extra={"partition": messages[index][1], "reason": reason},
            )
        return writes

    def restored(self, stored: Iterable[bytes]) -> None:
        """Take the table's entries after a recovery."""
        unreadable = self.merge.load(list(stored))
        if unreadable:
            log.error("unreadable series table entries left out", extra={"count": unreadable})

    def owned(self) -> list[int]:
        return sorted(self.owned_partitions())

    def row_count(self) -> int:
        """How many (window, segment) series this worker exports."""
        return self.merge.row_count(self.owned())

    def exposition(self) -> bytes:
        """The series on /metrics (the page is rendered again only where it changed)."""
        return self.merge.exposition(self.owned())


class Snapshots:
    """cx-metrics: each exported series' values, sent when they changed since last sent, and a
    tombstone when a series this worker exported is gone (`Merge.snapshots`); the accounts'
    figures at each new instant."""

    def __init__(self, series: Series, revenue: Revenue, topic: Any) -> None:
        self.series = series
        self.revenue = revenue
        self.topic = topic
        self.accounts_as_of: float | None = None
        """The instant of the account snapshots last sent (sent anew at each instant)."""

    @property
    def published(self) -> int:
        """How many series' snapshots are on cx-metrics from this worker."""
        return int(self.series.merge.published)

    async def publish(self, now: float) -> None:
        changed = self.series.merge.snapshots(self.series.owned(), rfc3339(now))
        for key, value in changed:
            await self.topic.send(key=key, value=value)
        accounts = self.revenue.latest()
        if accounts is not None and accounts.as_of != self.accounts_as_of:
            for account_key, account_value in account_snapshots(accounts):
                await self.topic.send(key=account_key.encode(), value=orjson.dumps(account_value))
            self.accounts_as_of = accounts.as_of
