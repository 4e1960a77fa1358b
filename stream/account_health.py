"""The `cx-account-health` topic (docs/contract.md 7.5): each account's health at the latest
evaluation instant, published when anything but its `as_of` changed, a tombstone once the
account is forgotten. Compacted and keyed by account_id: the only output that names an account.

Each input partition's worker publishes its own accounts and remembers a digest of what it
published per account, in memory. After a restart or a rebalance the new owner publishes every
account once more (the same values, a later `as_of`): a reader of a compacted topic keeps the
latest record per key, so a repeat changes nothing for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from .events import MILLIONTHS
from .exporter import rfc3339

if TYPE_CHECKING:
    from ._core import AccountRecord  # (a type of the stub only)

HEALTH_TOPIC = "cx-account-health"
"""The topic's name before any CX_TOPIC_PREFIX."""

Record = tuple[bytes, bytes | None]
"""A record of the topic: key (the account_id) and value (None: a tombstone)."""


def health_values(account: AccountRecord) -> dict[str, Any]:
    """What the topic says of an account evaluated at an instant, but `as_of` itself."""
    account_id, score, band, factors, drivers, mrr = account
    values: dict[str, Any] = {"account_id": account_id}
    if score is not None:
        values["score"] = score
    values.update(
        band=band,
        factors=factors,
        mrr=mrr / MILLIONTHS,
        paying=mrr > 0,
        drivers=drivers,
    )
    return values


class HealthPublisher:
    """Per input partition, what was last published of each account (a digest)."""

    def __init__(self) -> None:
        self.published: dict[int, dict[str, bytes]] = {}

    def changes(
        self, partition: int, accounts: Iterable[dict[str, Any]], as_of: float
    ) -> tuple[list[Record], dict[str, bytes]]:
        """The records to publish for a partition's `accounts` (health_values) at `as_of`: those
        that changed, and a tombstone for each account published before and now absent
        (forgotten); and the digests to pass to `sent` once they are in Kafka."""
        before = self.published.get(partition, {})
        digests: dict[str, bytes] = {}
        records: list[Record] = []
        for values in accounts:
            account_id = values["account_id"]
            digest = hashlib.blake2b(orjson.dumps(values), digest_size=16).digest()
            digests[account_id] = digest
            if before.get(account_id) != digest:
                record = {**values, "as_of": rfc3339(as_of)}
                records.append((account_id.encode(), orjson.dumps(record)))
        gone = before.keys() - digests.keys()
        records.extend((account_id.encode(), None) for account_id in sorted(gone))
        return records, digests

    def sent(self, partition: int, digests: dict[str, bytes]) -> None:
        self.published[partition] = digests

    def drop(self, partition: int) -> None:
        """A partition revoked: its new owner publishes its accounts again."""
        self.published.pop(partition, None)
