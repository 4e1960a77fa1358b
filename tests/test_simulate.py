"""The traffic simulator: its sending loop (no broker: a producer that keeps what it is sent),
and its accounts, whose churn depends on how support treated them."""

from __future__ import annotations

import asyncio
import math
import random
from datetime import datetime
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from stream import simulate
from stream.experience import EXPERIENCE_TOPIC, encode_experience, parse_weights
from stream.revenue import revenue_values
from stream.windows import parse_windows
from tests.helpers import PARTITIONS, evaluate_accounts, new_pipeline, process

NOW = datetime.fromisoformat("2026-11-22T14:00:00+00:00").timestamp()
"""The simulator's clock in this test: a Sunday afternoon (about 11,000 events due)."""


class KeptProducer:
    sent: ClassVar[list[tuple[str, bytes]]] = []

    def __init__(self, **options: Any) -> None:
        pass

    async def start(self) -> None:
        pass

    async def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append((topic, key))

    async def flush(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def scheduled(events_per_second: float, backfill: float, seed: int) -> list[tuple[str, bytes]]:
    """What a backfill to NOW must send, from the simulator's own schedule: every event it
    scheduled up to NOW, in time order, each followed by its copy when the draw after it says
    so (1% are sent twice). Worked out here from the schedule, not by its sending code."""
    traffic = simulate.Traffic(events_per_second, seed)
    traffic.backfill(NOW - backfill, NOW)
    due = sorted(item for item in traffic._queue if item.at <= NOW)
    draws = random.Random()
    draws.setstate(traffic.rng.getstate())  # the draws that follow the schedule's
    expected = []
    for item in due:
        record = (item.topic, item.fields["ticket_id"].encode())
        expected += [record, record] if draws.random() < traffic.duplicates else [record]
    return expected


def test_a_backfill_goes_out_whole_even_when_scheduling_it_outlasts_the_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(simulate, "AIOKafkaProducer", KeptProducer)
    monkeypatch.setattr(KeptProducer, "sent", [])
    monkeypatch.setattr(simulate, "time", SimpleNamespace(time=lambda: NOW))
    # a duration of 0 is over before anything is scheduled, as a 1 s one was once on a busy
    # machine (two hours at 20 events/s took 1.5 s to schedule): it sent nothing
    sent = asyncio.run(simulate.run_simulation({}, 20.0, 7200.0, duration=0.0, seed=3))
    want = scheduled(20.0, 7200.0, seed=3)
    assert sent == len(KeptProducer.sent) == len(want)
    assert KeptProducer.sent == want

    # and the schedule is the traffic the simulator promises: tickets arrive at 20 / 5.2 per
    # second times the share of teams at work (a Poisson count, within 5 standard deviations)
    arrivals = (
        20.0
        / simulate.EVENTS_PER_TICKET
        * sum(
            simulate.business_hours_factor(NOW - 7200 + minute * 60 + 30) * 60
            for minute in range(120)
        )
    )
    opened = len({key for topic, key in want if topic == "ticket-opened"})
    assert abs(opened - arrivals) < 5 * math.sqrt(arrivals), (opened, arrivals)
    topics = {topic for topic, _ in want}
    assert {"ticket-opened", "ticket-replied", "ticket-resolved", "survey-answered"} <= topics


def test_accounts_failed_by_support_churn_more_and_the_bands_order_their_churn() -> None:
    """The demo's promise (issue 22): in the demo's history (1,500 accounts, its default seed),
    an account that support failed in the 90 days before s churns measurably more in the 30
    days after it than the others (the interval of the difference excludes 0), and churn falls
    from the red band to the green one. Through the pure core, every record valid. (Another
    seed draws another history: 8 of the first 10 show the difference for sla_breached.)"""
    import zlib

    traffic = simulate.Traffic(1.0, seed=1, accounts=1500)
    traffic.backfill(NOW - 86400, NOW, 0.01)
    pipeline = new_pipeline()

    def settle() -> None:
        assert pipeline.settle(NOW) == []
        updates, pipeline.experience_updates = pipeline.experience_updates, []
        experience = [encode_experience(update) for _, update in updates]
        outcomes = process(
            pipeline,
            [
                (EXPERIENCE_TOPIC, zlib.crc32(key) % PARTITIONS, value, NOW)
                for key, value in experience
            ],
        )
        assert set(outcomes) <= {"accepted", "duplicate"}
        assert pipeline.settle(NOW) == []

    records = list(traffic.due(NOW))
    assert {topic for topic, _, _ in records} >= {"subscription-updated", "ticket-opened"}
    for start in range(0, len(records), 300):
        batch = records[start : start + 300]
        process(
            pipeline,
            [(topic, zlib.crc32(key) % PARTITIONS, value, NOW) for topic, key, value in batch],
        )
        settle()
    windows = parse_windows("30d,90d,365d")
    totals, _ = evaluate_accounts(pipeline.accounts, NOW, windows, 90 * 86400, parse_weights(""))
    month = revenue_values(totals, windows, 1.0)["30d"]
    assert month["cohort_accounts"] > 600
    for driver in ("sla_breached", "csat_unsatisfied"):
        assert month["account_churn_ratio_difference_lower"][driver] > 0, driver
    by_band = month["account_churn_ratio_by_health"]
    assert by_band["red"] > by_band["yellow"] > by_band["green"]
