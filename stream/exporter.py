"""What the exports share. The windowed series' /metrics samples and cx-metrics snapshots are
the core's (`core/src/export.rs`); the accounts' are revenue.py's and account_health.py's."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(moment: float) -> str:
    """A record's as_of: RFC 3339 in UTC, milliseconds."""
    stamp = datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
