"""Decode and validate one input record into a typed event, or say why it is invalid."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

import jsonschema_rs
import orjson

TOPICS = (
    "ticket-opened",
    "ticket-replied",
    "ticket-resolved",
    "ticket-reopened",
    "survey-answered",
    "subscription-updated",
)
"""The six input topics of docs/contract.md sections 2 and 7.1 (before any CX_TOPIC_PREFIX)."""

FUTURE_TOLERANCE_SECONDS = 5 * 60

MILLIONTHS = 10**6
"""Amounts are kept in integer millionths of the currency unit (docs/contract.md 7.1)."""

SurveyKind = Literal["nps", "csat", "ces"]


class Segment(NamedTuple):
    """The dimensions a ticket or survey response is reported under.

    A tuple: it is a dict key on the hot path, where hashing and comparing run in C."""

    team: str = "unassigned"
    channel: str = "unknown"
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class TicketOpened:
    event_id: str
    ticket_id: str
    occurred_at: float
    segment: Segment
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class TicketReplied:
    event_id: str
    ticket_id: str
    occurred_at: float
    author: str
    public: bool


@dataclass(frozen=True, slots=True)
class TicketResolved:
    event_id: str
    ticket_id: str
    occurred_at: float


@dataclass(frozen=True, slots=True)
class TicketReopened:
    event_id: str
    ticket_id: str
    occurred_at: float


@dataclass(frozen=True, slots=True)
class SurveyAnswered:
    event_id: str
    ticket_id: str | None
    occurred_at: float
    survey: SurveyKind
    score: int
    segment: Segment
    account_id: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionUpdated:
    event_id: str
    account_id: str
    subscription_id: str
    occurred_at: float
    contribution: int
    """What the subscription adds to its account's MRR from occurred_at on, in millionths: its
    mrr while active, else 0."""


Event = (
    TicketOpened
    | TicketReplied
    | TicketResolved
    | TicketReopened
    | SurveyAnswered
    | SubscriptionUpdated
)


class InvalidEvent(ValueError):
    """A record that cannot be processed; its message is the human-readable reason."""


def schema_dir() -> Path:
    """Where the JSON Schemas live: inside an installed wheel, or at the repository root."""
    packaged = Path(str(resources.files("stream"))) / "schemas"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "schemas"


@cache
def _validator(topic: str) -> Any:
    schema = orjson.loads((schema_dir() / f"{topic}.schema.json").read_bytes())
    return jsonschema_rs.validator_for(schema, validate_formats=True)


_LEAP_SECOND = re.compile(r"(T\d\d:\d\d:)60")


def parse_timestamp(text: str) -> float:
    """RFC 3339 with an offset -> POSIX seconds. The offset is required: event time is absolute.

    RFC 3339 allows a lowercase t and z and a leap second (:60), which Python's parser does
    not: the leap second is read as the last moment of its minute plus one second, as POSIX
    time counts it."""
    try:
        moment = datetime.fromisoformat(text)  # the common spelling, parsed in C
        leap = None
    except ValueError:
        normal = text.upper()
        leap = _LEAP_SECOND.search(normal)
        if leap:
            normal = _LEAP_SECOND.sub(r"\g<1>59", normal, count=1)
        try:
            moment = datetime.fromisoformat(normal)
        except ValueError:
            raise InvalidEvent(f"occurred_at {text!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise InvalidEvent(f"occurred_at {text!r} has no UTC offset")
    return moment.timestamp() + (1 if leap else 0)


def to_millionths(amount: int | float) -> int:
    """A JSON number of currency units in integer millionths, rounded half to even. A float
    is taken as the shortest decimal that reads back as it (its JSON text, for any number
    written with up to 15 significant digits), not as its binary value."""
    if isinstance(amount, int):
        return amount * MILLIONTHS
    scaled = Decimal(repr(amount)) * MILLIONTHS
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _segment(fields: dict[str, Any]) -> Segment:
    return Segment(
        team=fields.get("team", "unassigned"),
        channel=fields.get("channel", "unknown"),
        priority=fields.get("priority", "normal"),
    )


def decode(topic: str, value: bytes | None, record_time: float, currency: str = "USD") -> Event:
    """Decode a record value of an input topic (named without prefix).

    `record_time` is the record's Kafka timestamp: an event more than five minutes after it is
    invalid, a verdict that a replay of the same record reaches again. A subscription event in
    another currency than `currency` (CX_CURRENCY) is invalid: amounts are never converted.
    Raises InvalidEvent with a reason a person can act on.
    """
    if value is None:
        raise InvalidEvent("record has no value")
    try:
        fields = orjson.loads(value)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(f"value is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise InvalidEvent(f"value is JSON {type(fields).__name__}, not an object")
    try:
        _validator(topic).validate(fields)
    except jsonschema_rs.ValidationError as error:
        where = "/" + "/".join(str(part) for part in error.instance_path)
        raise InvalidEvent(f"schema violation at {where}: {error.message}") from None
    except ValueError:  # jsonschema-rs cannot describe a violation in a value nested 256+ deep
        raise InvalidEvent("schema violation in a value nested too deeply to describe") from None
    occurred_at = parse_timestamp(fields["occurred_at"])
    if occurred_at > record_time + FUTURE_TOLERANCE_SECONDS:
        ahead = occurred_at - record_time
        raise InvalidEvent(
            f"occurred_at {fields['occurred_at']} is {ahead:.0f}s after the record's timestamp"
        )
    event_id = fields["event_id"]
    match topic:
        case "ticket-opened":
            return TicketOpened(
                event_id,
                fields["ticket_id"],
                occurred_at,
                _segment(fields),
                fields.get("account_id"),
            )
        case "ticket-replied":
            return TicketReplied(
                event_id,
                fields["ticket_id"],
                occurred_at,
                fields["author"],
                fields.get("public", True),
            )
        case "ticket-resolved":
            return TicketResolved(event_id, fields["ticket_id"], occurred_at)
        case "ticket-reopened":
            return TicketReopened(event_id, fields["ticket_id"], occurred_at)
        case "survey-answered":
            return SurveyAnswered(
                event_id,
                fields.get("ticket_id"),
                occurred_at,
                fields["survey"],
                int(fields["score"]),
                _segment(fields),
                fields.get("account_id"),
            )
        case "subscription-updated":
            stated = fields.get("currency", currency)
            if stated != currency:
                raise InvalidEvent(f"currency {stated} is not CX_CURRENCY ({currency})")
            mrr = to_millionths(fields["mrr"])
            return SubscriptionUpdated(
                event_id,
                fields["account_id"],
                fields["subscription_id"],
                occurred_at,
                mrr if fields["status"] == "active" else 0,
            )
    raise ValueError(f"not an input topic: {topic}")
