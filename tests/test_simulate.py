"""The traffic simulator's sending loop (no broker: a producer that keeps what it is sent)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

from stream import simulate


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


def test_a_backfill_goes_out_even_when_scheduling_it_outlasts_the_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(simulate, "AIOKafkaProducer", KeptProducer)
    monkeypatch.setattr(KeptProducer, "sent", [])
    # a duration of 0 is over before anything is scheduled, as a 1 s one was once on a busy
    # machine (two hours at 20 events/s took 1.5 s to schedule): it sent nothing
    sent = asyncio.run(simulate.run_simulation({}, 20.0, 7200.0, duration=0.0, seed=3))
    assert sent == len(KeptProducer.sent) > 1000
    assert {topic for topic, _ in KeptProducer.sent} >= {"ticket-opened", "ticket-replied"}
