"""Decoding and validation: every kind of invalid input is refused with a reason."""

from __future__ import annotations

import time

import orjson
import pytest

from stream.events import (
    InvalidEvent,
    Segment,
    SurveyAnswered,
    TicketOpened,
    TicketReplied,
    decode,
    parse_timestamp,
)

NOW = time.time()
OK_TIME = "2026-01-01T10:00:00+01:00"

INVALID = [
    ("ticket-opened", b"{not json", "not JSON"),
    ("ticket-opened", b"[1, 2]", "not an object"),
    ("ticket-opened", b'"text"', "not an object"),
    ("ticket-opened", b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z"}', "ticket_id"),
    (
        "ticket-opened",
        b'{"event_id": "", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z"}',
        "event_id",
    ),
    (
        "ticket-opened",
        orjson.dumps({"event_id": "e" * 129, "ticket_id": "t", "occurred_at": OK_TIME}),
        "event_id",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": 7, "occurred_at": "2026-01-01T10:00:00Z"}',
        "ticket_id",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "priority": "p0"}',
        "priority",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00"}',
        "occurred_at",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "yesterday"}',
        "occurred_at",
    ),
    (
        "ticket-replied",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "author": "robot"}',
        "author",
    ),
    (
        "ticket-replied",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "author": "agent", "public": "yes"}',
        "public",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "nps", "score": 11}',
        "score",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "csat", "score": 0}',
        "score",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "ces", "score": 8}',
        "score",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "ces", "score": 4.5}',
        "score",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "smile", "score": 4}',
        "survey",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "team": '
        + b"[" * 300
        + b"]" * 300
        + b"}",
        "nested too deeply",
    ),
    (  # the violation is at the top, and the object holds a deep unknown field
        "ticket-opened",
        b'{"ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "x": '
        + b"[" * 300
        + b"]" * 300
        + b"}",
        "nested too deeply",
    ),
]


@pytest.mark.parametrize(("topic", "value", "mentions"), INVALID)
def test_invalid_records_are_refused_with_a_reason(topic: str, value: bytes, mentions: str) -> None:
    with pytest.raises(InvalidEvent, match=mentions):
        decode(topic, value, NOW)


def test_more_than_five_minutes_ahead_is_invalid_but_less_is_fine() -> None:
    def at(offset: float) -> bytes:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + offset))
        return orjson.dumps({"event_id": "e", "ticket_id": "t", "occurred_at": moment})

    with pytest.raises(InvalidEvent, match="after the record's timestamp"):
        decode("ticket-resolved", at(6 * 60), NOW)
    decode("ticket-resolved", at(4 * 60), NOW)


def test_defaults_and_unknown_fields() -> None:
    opened = decode(
        "ticket-opened",
        orjson.dumps({"event_id": "e", "ticket_id": "t", "occurred_at": OK_TIME, "x": 1}),
        NOW,
    )
    assert opened == TicketOpened(
        "e", "t", 1767258000.0, Segment("unassigned", "unknown", "normal")
    )
    reply = decode(
        "ticket-replied",
        orjson.dumps(
            {"event_id": "r", "ticket_id": "t", "occurred_at": OK_TIME, "author": "agent"}
        ),
        NOW,
    )
    assert isinstance(reply, TicketReplied) and reply.public is True
    survey = decode(
        "survey-answered",
        orjson.dumps(
            {
                "event_id": "s",
                "occurred_at": "2026-01-01T09:00:00.250Z",
                "survey": "nps",
                "score": 9,
                "team": "billing",
            }
        ),
        NOW,
    )
    assert survey == SurveyAnswered(
        "s", None, 1767258000.25, "nps", 9, Segment("billing", "unknown", "normal")
    )


def test_every_rfc_3339_spelling_is_read() -> None:
    assert parse_timestamp("2026-11-22t08:00:00z") == parse_timestamp("2026-11-22T08:00:00Z")
    # a leap second is one second after the 59th
    assert parse_timestamp("2016-12-31T23:59:60Z") == parse_timestamp("2017-01-01T00:00:00Z")
    assert parse_timestamp("2016-12-31T23:59:60.5+00:00") == 1483228800.5
