"""Input records as typed events: decoded and validated in the compiled core, a batch a call.

stream._core (core/src/decode.rs) reads each record against its topic's JSON Schema in
schemas/ (the published truth) and gives back its event, or the reason it is invalid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

from ._core import (
    MILLIONTHS,
    TOPICS,
    SubscriptionUpdated,
    SurveyAnswered,
    TicketOpened,
    TicketReopened,
    TicketReplied,
    TicketResolved,
    decode_batch,
)

__all__ = [
    "MILLIONTHS",
    "TOPICS",
    "Event",
    "InvalidEvent",
    "Segment",
    "SubscriptionUpdated",
    "SurveyAnswered",
    "TicketOpened",
    "TicketReopened",
    "TicketReplied",
    "TicketResolved",
    "decode",
]


class Segment(NamedTuple):
    """The dimensions a ticket or survey response is reported under.

    A tuple: it is a dict key on the hot path, where hashing and comparing run in C."""

    team: str = "unassigned"
    channel: str = "unknown"
    priority: str = "normal"


Event: TypeAlias = (
    TicketOpened
    | TicketReplied
    | TicketResolved
    | TicketReopened
    | SurveyAnswered
    | SubscriptionUpdated
)


class InvalidEvent(ValueError):
    """A record that cannot be processed; its message is the human-readable reason."""


Record = tuple[str, bytes | None, float]
"""An input record: its topic (named without prefix), value and Kafka timestamp."""


def decode(records: Sequence[Record], currency: str = "USD") -> list[Event | Exception]:
    """Each record's event, or why it is invalid (InvalidEvent), in one call into the core; a
    record the core failed on (a bug) gets the error, which costs that record only.

    A record's timestamp judges its event time: an event more than five minutes after it is
    invalid, a verdict that a replay of the same record reaches again. A subscription event in
    another currency than `currency` (CX_CURRENCY) is invalid: amounts are never converted.
    """
    decoded: list[Event | Exception] = [
        InvalidEvent(verdict) if isinstance(verdict, str) else verdict
        for verdict in decode_batch(records, currency, Segment)
    ]
    return decoded
