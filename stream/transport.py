"""Faust's Kafka transport, with one race fixed that otherwise loses records after a rebalance.

A fetch can return records of a partition that Faust paused while it was in flight (Faust
pauses newly assigned partitions until their tables are restored). Faust's Consumer.getmany
skips such records, but the consumer position has already moved past them, so they would
never be processed: seen here as a worker that took over a dead worker's partitions and
silently dropped everything produced in between. This consumer seeks back to the first
skipped record instead. Processing is idempotent, so reading a record twice is harmless;
reading it never is not.
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger("cx_stream")


class Consumer(faust_aiokafka.Consumer):
    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        records, active = await super()._wait_next_records(timeout)
        if records and active is not None:
            for tp, batch in records.items():
                if batch and tp not in active and tp not in self._buffered_partitions:
                    await self._hand_back(tp, batch[0].offset)
        return records, active

    async def _hand_back(self, tp: TP, first_skipped: int) -> None:
        try:
            position = await self.position(tp)
            # never forward: a seek made meanwhile (to the committed offset) may be earlier
            offset = first_skipped if position is None else min(position, first_skipped)
            await self.seek(tp, offset)
        except IllegalStateError:
            return  # revoked meanwhile: its new owner reads it from the committed offset
        log.info("re-reading records fetched while paused", extra={"tp": str(tp), "offset": offset})


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)
