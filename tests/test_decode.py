"""Decoding and validation in the compiled core, held to the published JSON Schemas.

The oracle here is schemas/ read by jsonschema-rs (what the processor used to validate with)
plus the contract's time rules, never stream._core: on the hostile-input corpus of
tests/test_hostile.py and on the valid events it draws, the core's verdict must be the
oracle's, and a valid record's event must hold its fields as the contract reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache
from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.events import (
    TOPICS,
    Event,
    InvalidEvent,
    Segment,
    SubscriptionUpdated,
    SurveyAnswered,
    TicketOpened,
    TicketReopened,
    TicketReplied,
    decode,
)
from tests.kafka import SCHEMAS
from tests.test_hostile import (
    HOSTILE,
    escaped,
    exploding_segment,
    long_ago,
    valid_event,
    with_nested,
)

NOW = time.time()
OK_TIME = "2026-01-01T10:00:00+01:00"


@cache
def schema_validator(topic: str) -> Any:
    schema = orjson.loads((SCHEMAS / f"{topic}.schema.json").read_bytes())
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def oracle_valid(topic: str, value: bytes | None, record_time: float) -> bool:
    """Valid by the schema, and no more than five minutes after the record's timestamp."""
    if value is None:
        return False
    try:
        fields = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(fields, dict) or not schema_validator(topic).is_valid(fields):
        return False
    # the schema's date-time is RFC 3339, which fromisoformat reads once a leap second and
    # lower-case letters are normalised (year 0 aside, which the processor refuses)
    text = fields["occurred_at"].upper().replace(":60", ":59")
    try:
        moment = datetime.fromisoformat(text).timestamp() + (":60" in fields["occurred_at"])
    except ValueError:
        return False
    return moment <= record_time + 5 * 60


def one(topic: str, value: bytes | None, record_time: float = NOW) -> Event | InvalidEvent:
    [decoded] = decode([(topic, value, record_time)])
    assert isinstance(decoded, Event | InvalidEvent), decoded  # not an error of the core
    return decoded


def assert_agrees(topic: str, value: bytes | None) -> None:
    decoded = one(topic, value)
    valid = not isinstance(decoded, InvalidEvent)
    assert valid == oracle_valid(topic, value, NOW), (
        topic,
        value[:300] if value else value,
        decoded,
    )


CI_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("category", sorted(HOSTILE))
def test_every_hostile_record_is_invalid_as_the_schemas_say(category: str) -> None:
    @CI_SETTINGS
    @given(HOSTILE[category](NOW))
    def check(record: tuple[str, bytes | None]) -> None:
        topic, value = record
        assert isinstance(one(topic, value), InvalidEvent)
        assert_agrees(topic, value)

    check()


Render = Callable[[dict[str, Any]], bytes]
RENDERINGS: tuple[Render, ...] = (
    orjson.dumps,
    escaped,
    lambda fields: with_nested(fields, "x-unknown", 1000),
)


@CI_SETTINGS
@given(
    st.one_of(valid_event(NOW), exploding_segment(NOW), long_ago(NOW)),
    st.sampled_from(RENDERINGS),
)
def test_every_valid_record_gives_its_fields(
    event: tuple[str, dict[str, Any]], render: Render
) -> None:
    topic, fields = event
    value = render(fields)
    assert_agrees(topic, value)
    decoded = one(topic, value)
    assert not isinstance(decoded, InvalidEvent)
    assert decoded.event_id == fields["event_id"]
    stated = datetime.fromisoformat(fields["occurred_at"]).timestamp()
    assert decoded.occurred_at == stated
    if isinstance(decoded, TicketOpened | SurveyAnswered):
        assert decoded.segment == Segment(
            fields.get("team", "unassigned"),
            fields.get("channel", "unknown"),
            fields.get("priority", "normal"),
        )
        assert type(decoded.segment) is Segment
    if isinstance(decoded, SurveyAnswered):
        assert (decoded.survey, decoded.score) == (fields["survey"], fields["score"])
        assert decoded.ticket_id == fields.get("ticket_id")
    elif isinstance(decoded, TicketReplied):
        assert decoded.author == fields["author"] and decoded.public is fields.get("public", True)
    else:
        assert not isinstance(decoded, SubscriptionUpdated)  # (not drawn here)
        assert decoded.ticket_id == fields["ticket_id"]


# a mixed batch: each record's verdict is its own
def test_a_batch_gives_one_verdict_per_record_in_order() -> None:
    good = orjson.dumps({"event_id": "e", "ticket_id": "t", "occurred_at": OK_TIME})
    batch = [
        ("ticket-opened", good, NOW),
        ("ticket-opened", None, NOW),
        ("ticket-resolved", b"{not json", NOW),
        ("ticket-reopened", good, NOW),
    ]
    first, tombstone, broken, reopened = decode(batch)
    assert isinstance(first, TicketOpened) and first.ticket_id == "t"
    assert isinstance(tombstone, InvalidEvent) and str(tombstone) == "record has no value"
    assert isinstance(broken, InvalidEvent) and str(broken).startswith("value is not JSON")
    assert isinstance(reopened, TicketReopened) and reopened.occurred_at == 1767258000.0
    assert decode([]) == []
    with pytest.raises(ValueError, match="not an input topic"):
        decode([("cx-metrics", good, NOW)])


REASONS = [
    ("ticket-opened", b"[1, 2]", "value is JSON list, not an object"),
    ("ticket-opened", b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z"}', "ticket_id"),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "2026-01-01T10:00:00Z", "priority": "p0"}',
        "/priority",
    ),
    (
        "survey-answered",
        b'{"event_id": "e", "occurred_at": "2026-01-01T10:00:00Z", "survey": "ces", "score": 4.5}',
        "/score",
    ),
    (
        "ticket-opened",
        b'{"event_id": "e", "ticket_id": "t", "occurred_at": "yesterday"}',
        "/occurred_at",
    ),
    ("ticket-opened", b"[" * 2000 + b"]" * 2000, "nested more than 1024 levels deep"),
    (
        "ticket-opened",
        orjson.dumps({"event_id": "e" * 50_000, "ticket_id": "t", "occurred_at": OK_TIME}),
        "/event_id",
    ),
]


@pytest.mark.parametrize(("topic", "value", "mentions"), REASONS)
def test_reasons_say_where_and_stay_short(topic: str, value: bytes, mentions: str) -> None:
    reason = one(topic, value)
    assert isinstance(reason, InvalidEvent)
    assert mentions in str(reason) and len(str(reason)) < 200


def test_more_than_five_minutes_ahead_is_invalid_but_less_is_fine() -> None:
    def at(offset: float) -> bytes:
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW + offset))
        return orjson.dumps({"event_id": "e", "ticket_id": "t", "occurred_at": moment})

    ahead = one("ticket-resolved", at(6 * 60))
    assert isinstance(ahead, InvalidEvent) and "after the record's timestamp" in str(ahead)
    assert not isinstance(one("ticket-resolved", at(4 * 60)), InvalidEvent)


def test_every_rfc_3339_spelling_is_read() -> None:
    def read(stated: str) -> float:
        value = orjson.dumps({"event_id": "e", "ticket_id": "t", "occurred_at": stated})
        decoded = one("ticket-resolved", value)
        assert not isinstance(decoded, InvalidEvent), decoded
        return decoded.occurred_at

    assert read("2026-11-22t08:00:00z") == read("2026-11-22T08:00:00Z")
    # a leap second is one second after the 59th
    assert read("2016-12-31T23:59:60Z") == read("2017-01-01T00:00:00Z")
    assert read("2016-12-31T23:59:60.5+00:00") == 1483228800.5
    assert read("2026-01-01T10:00:00.1234567Z") == 1767261600.123456  # whole microseconds


def test_a_subscription_is_read_in_millionths_and_only_active_ones_contribute() -> None:
    fields = {
        "event_id": "e",
        "account_id": "A",
        "subscription_id": "S",
        "occurred_at": OK_TIME,
        "mrr": 19.99,
    }
    active, paused = decode(
        [
            ("subscription-updated", orjson.dumps(fields | {"status": "active"}), NOW),
            ("subscription-updated", orjson.dumps(fields | {"status": "paused"}), NOW),
        ]
    )
    assert isinstance(active, SubscriptionUpdated) and active.contribution == 19_990_000
    assert (active.account_id, active.subscription_id) == ("A", "S")
    assert isinstance(paused, SubscriptionUpdated) and paused.contribution == 0


def test_the_topics_are_the_contracts() -> None:
    assert TOPICS == (
        "ticket-opened",
        "ticket-replied",
        "ticket-resolved",
        "ticket-reopened",
        "survey-answered",
        "subscription-updated",
    )
    assert sorted(path.name for path in SCHEMAS.glob("*.schema.json")) == sorted(
        [f"{topic}.schema.json" for topic in TOPICS] + ["metrics-snapshot.schema.json"]
    )


subscription_fields = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.text(max_size=130) | st.integers(-(2**63), 2**63 - 1),
        "account_id": st.text(max_size=130) | st.none(),
        "subscription_id": st.text(max_size=3),
        "occurred_at": st.sampled_from([OK_TIME, "2026-01-01", "2999-01-01T00:00:00Z"]),
        "status": st.sampled_from(["active", "trialing", "paused", "canceled", "Active", 1]),
        "mrr": st.integers(-(2**63), 2**63 - 1)
        | st.floats(-1.0, 2e9, allow_nan=False)
        | st.sampled_from([999_999_999.999, 1e9, "10"]),
        "plan": st.text(max_size=130) | st.booleans(),
        "currency": st.sampled_from(["USD", "EUR", "usd", "USDX", 840]),
    },
)


@settings(max_examples=300, deadline=None)
@given(subscription_fields)
def test_subscription_records_get_the_schemas_verdict(fields: dict[str, Any]) -> None:
    value = orjson.dumps(fields)
    decoded = one("subscription-updated", value)
    valid = (
        oracle_valid("subscription-updated", value, NOW) and fields.get("currency", "USD") == "USD"
    )
    assert (not isinstance(decoded, InvalidEvent)) == valid, (fields, decoded)
    if isinstance(decoded, SubscriptionUpdated):
        active = fields["status"] == "active"
        assert decoded.contribution == (millionths(fields["mrr"]) if active else 0), fields


def millionths(amount: int | float) -> int:
    """The contract's amount in millionths: the number's decimal text, rounded half to even."""
    scaled = Decimal(repr(amount)) * 10**6
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@pytest.mark.parametrize(
    ("mrr", "contribution"),
    [
        (b"-0.0", 0),  # what json.dumps(-0.0) writes
        (b"-0", 0),
        (b"999999999.9999999", 1_000_000_000_000_000),  # read as the nearest float
        (b"94953096.66433651", 94_953_096_664_336),
    ],
)
def test_amounts_at_the_edges(mrr: bytes, contribution: int) -> None:
    value = (
        b'{"event_id": "e", "account_id": "A", "subscription_id": "S", "status": "active",'
        b' "occurred_at": "2026-01-01T00:00:00Z", "mrr": ' + mrr + b"}"
    )
    decoded = one("subscription-updated", value)
    assert isinstance(decoded, SubscriptionUpdated) and decoded.contribution == contribution
    assert contribution == millionths(orjson.loads(value)["mrr"])


@pytest.mark.parametrize(
    "score", [b"0.9999999999999999", b"9.999999999999999", b"10.000000000000001"]
)
def test_a_score_a_unit_in_the_last_place_from_whole_is_no_integer(score: bytes) -> None:
    value = b'{"event_id": "e", "occurred_at": "2026-01-01T00:00:00Z", "survey": "nps", "score": '
    assert isinstance(one("survey-answered", value + score + b"}"), InvalidEvent)
