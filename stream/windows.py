"""Event-time rolling windows: their settings, and the windows of an input partition.

The windows themselves (buckets of tallies with exact retraction, duration sketches, running
totals, checkpoints) are the core's (`core/src/windows.rs`, `core/src/tally.rs`): a batch's
state changes reach them in one call per (table, partition). Here: parsing the window
settings, and the three state tables' windows of one partition read as one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._core import META_KEY, PartitionWindows

__all__ = [
    "META_KEY",
    "CombinedWindows",
    "PartitionWindows",
    "SegmentKey",
    "WindowSpec",
    "parse_duration",
    "parse_windows",
]

SegmentKey = tuple[str, str]
"""(dimension, value): ("all", "all"), ("team", "billing"), ("channel", "chat"), ..."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90s', '15m', '1h', '7d', '2w' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h, 7d or 2w")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    seconds: float


def parse_windows(text: str) -> tuple[WindowSpec, ...]:
    """'1h,24h,7d,28d' -> window specs, ordered as given; names are the labels exported."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no windows given; expected a list like 1h,24h,7d,28d")
    if len(set(names)) != len(names):
        raise ValueError(f"windows {text!r} name a window twice")
    return tuple(WindowSpec(name, parse_duration(name)) for name in names)


class CombinedWindows:
    """The windows of one input partition, kept per state table (each is checkpointed with
    its table's states) and read as one."""

    def __init__(self, specs: Sequence[WindowSpec], parts: Mapping[str, PartitionWindows]) -> None:
        self.specs = tuple(specs)
        self.parts = dict(parts)

    def advance(self, now: float) -> None:
        for windows in self.parts.values():
            windows.advance(now)
