"""Stage 2: merge the partials of every source partition, export them, publish snapshots.

The worker that owns a dimension's cx-partials partition keeps the latest partial of every
source partition in the changelogged `series` table; it alone exports those series, on
/metrics and as cx-metrics snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import orjson

from .exporter import SeriesRow, merge_partials, render_series, series_rows, snapshot


class Series:
    def __init__(
        self,
        table: MutableMapping[str, Any],
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

    def apply(self, partial: dict[str, Any], via: int) -> None:
        """Keep the latest partial of a (series, source partition), received on cx-partials
        partition `via`."""
        key = orjson.dumps(
            [partial["dimension"], partial["value"], partial["source_partition"]]
        ).decode()
        if partial["removed"]:
            if key in self.table:
                del self.table[key]
        else:
            self.table[key] = {**partial, "via": via}
        self.changed()

    def changed(self) -> None:
        """Note a change of the table (a partial applied, or the table restored)."""
        self.version += 1

    def rows(self) -> list[SeriesRow]:
        """The series this worker exports: those whose cx-partials partition it owns."""
        owned = frozenset(self.owned_partitions())
        if self._rows is None or self._rows[:2] != (self.version, owned):
            entries = [entry for entry in self.table.values() if entry["via"] in owned]
            merged = series_rows(
                merge_partials(entries, self.cap), self.window_names, self.business_hours
            )
            self._rows = (self.version, owned, merged)
        return self._rows[2]

    def exposition(self) -> str:
        """The rows on /metrics, rendered again only when they changed."""
        rows = self.rows()
        if self._exposition is None or self._exposition[0] is not rows:
            self._exposition = (rows, render_series(rows))
        return self._exposition[1]


class Snapshots:
    """cx-metrics: each exported series' values, sent when they changed since last sent."""

    def __init__(self, series: Series, topic: Any) -> None:
        self.series = series
        self.topic = topic
        self.published: dict[str, dict[str, Any]] = {}

    async def publish(self, now: float) -> None:
        rows = self.series.rows()
        current = {row.key for row in rows}
        for key in list(self.published):
            if key not in current:
                del self.published[key]  # no longer ours: the new owner publishes it
        for row in rows:
            value = snapshot(row, now)
            comparable = {name: field for name, field in value.items() if name != "as_of"}
            if self.published.get(row.key) != comparable:
                await self.topic.send(key=row.key.encode(), value=orjson.dumps(value))
                self.published[row.key] = comparable
