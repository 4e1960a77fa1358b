"""Each account's support experience (docs/contract.md 7.4): the section-3 observations of its
tickets and survey responses, as the account keeps them. Its drivers, health factors, score and
band at an instant are the core's (core/src/account_health.rs), evaluated with the account.
No Kafka.

Tickets and responses are partitioned by ticket, accounts by account. The partition of a ticket
sends, whenever the ticket's account observations change (the core works them out:
`core/src/experience.rs`), all of them to the account's partition (a topic keyed by account, as
Kafka Streams repartitions), tagged with the ticket state's version (how many distinct events it
holds: it only grows). The account keeps, per ticket or response, the set with the greatest
version: a duplicate, any order of arrival and a replay after a crash leave the same
experience, a late event that retracts an observation replaces the set, and a ticket whose
account changed (an earlier opening came) sends an empty set to the account it left.
Forgetting a ticket sends nothing: the account keeps what it had; an event re-sent after that
recreates a ticket of a lower version, which the account ignores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from ._core import FACTORS
from .events import InvalidEvent

EXPERIENCE_TOPIC = "cx-account-experience"
"""The internal topic (before any CX_TOPIC_PREFIX) that carries ticket and survey observations to
their accounts' partitions, keyed by account_id."""

AccountObservation = tuple[Any, ...]
"""One observation as the account keeps it, a JSON-friendly tuple, `at` second:
("frt", at, breached), ("ttr", at, breached), ("reopen", at), ("resolved", at, reopened_at or
None: the ticket's first reopen after it), ("csat", at, score), ("nps", at, score, event_id),
("ces", at, score)."""


class ExperienceUpdate(NamedTuple):
    """What a ticket or survey slot sends its account: all its observations, as of `version`."""

    account_id: str
    source: str
    """ticket:<ticket_id> or survey:<slot key>."""
    version: int
    observations: tuple[AccountObservation, ...]


def encode_experience(update: ExperienceUpdate) -> tuple[bytes, bytes]:
    """The record (key, value) of an update on the experience topic."""
    value = {
        "account_id": update.account_id,
        "source": update.source,
        "version": update.version,
        "observations": update.observations,
    }
    return update.account_id.encode(), orjson.dumps(value)


def decode_experience(value: bytes | None) -> ExperienceUpdate:
    """An update read from the experience topic (its account is in the value too, so that a
    record does not depend on its key)."""
    try:
        data = orjson.loads(value or b"")
        return ExperienceUpdate(
            data["account_id"],
            data["source"],
            int(data["version"]),
            tuple(tuple(obs) for obs in data["observations"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InvalidEvent(f"not an account experience record: {type(error).__name__}") from None


Sources = Mapping[str, tuple[int, Sequence[AccountObservation]]]
"""An account's experience as kept: per source, its version and observations."""


def merge_update(
    sources: Sources, update: ExperienceUpdate, horizon: float = float("-inf")
) -> dict[str, Any] | None:
    """The account's sources with `update` applied, or None when it changes nothing (an older
    or the same version of what the account holds). Sources whose observations are all at or
    before `horizon` go: no evaluation reaches back that far (the largest account window plus
    the lookback), so the account's state stays bounded however long it lives. (A source
    without observations stays: it is a ticket that left the account, and its version keeps
    a replayed older one out.)"""
    held = sources.get(update.source)
    if held is not None and held[0] >= update.version:
        return None
    merged = {**sources, update.source: (update.version, update.observations)}
    return {
        source: (version, observations)
        for source, (version, observations) in merged.items()
        if not observations or max(obs[1] for obs in observations) > horizon
    }


def parse_weights(text: str) -> dict[str, float]:
    """CX_HEALTH_WEIGHTS, 'csat=2,nps=1': the factors not named keep weight 1."""
    weights = dict.fromkeys(FACTORS, 1.0)
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        name, equals, value = part.partition("=")
        name = name.strip()
        if name not in FACTORS or not equals:
            raise ValueError(f"{part!r} is not factor=weight with a factor of {', '.join(FACTORS)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value.strip()!r} is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"{part!r}: a weight is a finite number of at least 0")
        weights[name] = weight
    return weights
