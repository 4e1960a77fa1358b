"""Stage 2: merge the partials of every source partition, export them, publish snapshots.

The worker that owns a dimension's cx-partials partition keeps the latest partial of every
source partition in the changelogged `series` table (as JSON); it alone exports those series,
on /metrics and as cx-metrics snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .exporter import (
    LABELS,
    MergedSeries,
    Samples,
    SeriesRow,
    render_series,
    series_keys,
    series_rows,
    series_samples,
    snapshot,
)
from .partials import Carried
from .revenue import Revenue, account_snapshots
from .windows import SegmentKey


@dataclass(slots=True)
class _Merged:
    stamps: tuple[tuple[str, int], ...]
    rows: list[SeriesRow]
    samples: Samples | None = None
    """Its sample lines, written by the first scrape that needs them (not by snapshots or
    /health, which read the rows only)."""


class Series:
    def __init__(
        self,
        table: MutableMapping[str, bytes],
        cap: int,
        window_names: Sequence[str],
        owned_partitions: Callable[[], set[int]],
        business_hours: bool = False,
    ) -> None:
        self.table = table
        self.business_hours = business_hours
        self.cap = cap
        self.window_names = list(window_names)
        self.owned_partitions = owned_partitions
        self.version = 0
        """Bumped whenever the table changes: scrapes between changes reuse the rows."""
        self._rows: tuple[int, frozenset[int], list[SeriesRow]] | None = None
        self._exposition: tuple[list[SeriesRow], str] | None = None
        self._entries: dict[str, dict[str, Any]] | None = None
        """The table's entries, decoded: read from the table once after each restore, then
        kept in step by `apply`. Decoding every entry from the store for each changed scrape
        took a third of a worker's time at 500 events/s, polled every 0.1 s."""
        self._stamps: dict[str, int] = {}
        """The version at which each entry last changed."""
        self._via: dict[SegmentKey, int] = {}
        """The cx-partials partition each exported series arrives on (one per dimension)."""
        self._merged: dict[SegmentKey, _Merged] = {}
        """Each exported series' rows and samples, with the entries (and their stamps) they were
        merged from: a series is merged and rendered again only when one of its entries changed.
        (Rendering all 260 series of the scrape benchmark took 15 ms of the 17 ms of a page on
        which one new ticket's four series had changed.)"""

    def apply_message(self, carried: Carried, via: int) -> None:
        """Apply what a cx-partials message carries, received on cx-partials partition `via`:
        in a full republish, first drop the series of its dimension and source partition that
        it lacks."""
        complete = carried.complete
        if complete is not None:
            for key, entry in list(self._decoded().items()):
                if (
                    entry["dimension"] == complete.dimension
                    and entry["source_partition"] == complete.source_partition
                    and entry["value"] not in complete.values
                ):
                    self._remove(key)
        for partial in carried.partials:
            self.apply(partial, via)

    def apply(self, partial: dict[str, Any], via: int) -> None:
        """Keep the latest partial of a (series, source partition), received on cx-partials
        partition `via`."""
        key = orjson.dumps(
            [partial["dimension"], partial["value"], partial["source_partition"]]
        ).decode()
        if partial["removed"]:
            self._remove(key)
            return
        entry = self._decoded()[key] = {**partial, "via": via}
        self.table[key] = orjson.dumps(entry)
        self._changed(key)

    def _remove(self, key: str) -> None:
        if key in self.table:
            del self.table[key]
        self._decoded().pop(key, None)
        self._changed(key)

    def _changed(self, key: str) -> None:
        self.version += 1
        self._stamps[key] = self.version

    def restored(self) -> None:
        """Note that the table was restored (recovery): its entries are read again."""
        self._entries = None
        self._merged = {}
        self.version += 1

    def _decoded(self) -> dict[str, dict[str, Any]]:
        if self._entries is None:
            self._entries = {key: orjson.loads(value) for key, value in self.table.items()}
        return self._entries

    def rows(self) -> list[SeriesRow]:
        """The series this worker exports: those whose cx-partials partition it owns."""
        owned = frozenset(self.owned_partitions())
        if self._rows is None or self._rows[:2] != (self.version, owned):
            self._rows = (self.version, owned, self._merged_rows(owned))
        return self._rows[2]

    def _merged_rows(self, owned: frozenset[int]) -> list[SeriesRow]:
        entries = {key: entry for key, entry in self._decoded().items() if entry["via"] in owned}
        sources: dict[SegmentKey, list[str]] = {}
        self._via = {}
        for series, key in zip(series_keys(entries.values(), self.cap), entries, strict=True):
            sources.setdefault(series, []).append(key)
            self._via[series] = entries[key]["via"]
        merged: dict[SegmentKey, _Merged] = {}
        for series, keys in sources.items():
            stamps = tuple(sorted((key, self._stamps.get(key, 0)) for key in keys))
            cached = self._merged.get(series)
            if cached is None or cached.stamps != stamps:
                total = MergedSeries()
                for key in keys:
                    total.add(entries[key])
                rows = series_rows({series: total}, self.window_names, self.business_hours)
                cached = _Merged(stamps, rows)
            merged[series] = cached
        self._merged = dict(sorted(merged.items()))
        return [row for cached in self._merged.values() for row in cached.rows]

    def via(self, row: SeriesRow) -> int:
        """The cx-partials partition an exported row's series arrives on."""
        labels = row.labels
        dimension = next((name for name in LABELS[1:] if labels[name] != "all"), "all")
        return self._via[(dimension, labels.get(dimension, "all"))]

    def exposition(self) -> str:
        """The rows on /metrics, rendered again only when they changed."""
        rows = self.rows()
        if self._exposition is None or self._exposition[0] is not rows:
            parts = []
            for cached in self._merged.values():
                if cached.samples is None:
                    cached.samples = series_samples(cached.rows)
                parts.append(cached.samples)
            self._exposition = (rows, render_series(parts))
        return self._exposition[1]


class Snapshots:
    """cx-metrics: each exported series' values, sent when they changed since last sent, and a
    tombstone when a series this worker exported is gone (folded into `other`, or its last
    state forgotten): a compacted topic would otherwise keep its last snapshot for good. A
    series that moved to another worker is left to that worker."""

    def __init__(self, series: Series, revenue: Revenue, topic: Any) -> None:
        self.series = series
        self.revenue = revenue
        self.topic = topic
        self.accounts_as_of: float | None = None
        """The instant of the account snapshots last sent (sent anew at each instant)."""
        self.published: dict[str, tuple[int, dict[str, Any]]] = {}
        """Each key sent: the cx-partials partition its series came on, and what was sent."""

    async def publish(self, now: float) -> None:
        rows = self.series.rows()
        current = {row.key for row in rows}
        owned = self.series.owned_partitions()
        for key in list(self.published):
            if key not in current:
                via, _ = self.published.pop(key)
                if via in owned:  # gone, not moved to another worker
                    await self.topic.send(key=key.encode(), value=None)
        for row in rows:
            value = snapshot(row, now)
            comparable = {name: field for name, field in value.items() if name != "as_of"}
            sent = self.published.get(row.key)
            if sent is None or sent[1] != comparable:
                await self.topic.send(key=row.key.encode(), value=orjson.dumps(value))
                self.published[row.key] = (self.series.via(row), comparable)
        accounts = self.revenue.latest()
        if accounts is not None and accounts.as_of != self.accounts_as_of:
            for key, value in account_snapshots(accounts):
                await self.topic.send(key=key.encode(), value=orjson.dumps(value))
            self.accounts_as_of = accounts.as_of
